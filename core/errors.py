"""Which faults are transient (retry; if they persist, fail the unit and write nothing) and which are about content
(quarantine the sample or shard). The one rule every reader, writer and retry policy asks.

A transient fault says nothing about the data: the same read may succeed a moment later (connection reset,
timeout, HTTP 5xx, SlowDown/throttling). Quarantining it would cache a partial shard as if it were finished.
"""

from __future__ import annotations

import errno
import http.client
import os
import re

import aiohttp
import botocore.exceptions
import urllib3.exceptions

__all__ = ["TRANSIENT_S3_CODES", "ClusterLost", "is_transient", "lost_cluster_ends_process"]

# S3 error codes a retry may cure (AWS "ErrorResponses" and botocore's retry handlers).
TRANSIENT_S3_CODES = frozenset(
    {
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "TransactionInProgressException",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
    }
)

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,  # ConnectionResetError, BrokenPipeError, ConnectionAbortedError, http.client.RemoteDisconnected
    TimeoutError,  # also asyncio.TimeoutError and socket.timeout
    http.client.IncompleteRead,
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError
    botocore.exceptions.HTTPClientError,  # connection closed mid-request
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    aiohttp.ClientConnectionError,  # ServerDisconnectedError, ClientOSError, ServerTimeoutError
    aiohttp.ClientPayloadError,  # body cut short
)

# s3fs turns a 500 into OSError(EREMOTEIO) and a 503/SlowDown into OSError(EBUSY), keeping the ClientError as cause.
_TRANSIENT_ERRNOS = frozenset(
    {errno.EREMOTEIO, errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE}
)

# pyarrow's S3 filesystem raises a plain OSError whose message names the AWS error type.
_ARROW_TRANSIENT = re.compile(
    r"AWS Error[^:]*\b(NETWORK_CONNECTION|SLOW_DOWN|THROTTLING|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|REQUEST_TIMEOUT)\b"
)


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in TRANSIENT_S3_CODES or status >= 500 or status == 429
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status >= 500 or exc.status == 429
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    return isinstance(exc, OSError) and _ARROW_TRANSIENT.search(str(exc)) is not None


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or any exception it was raised from) is a fault a retry may cure rather than bad content.

    Follows ``__cause__``/``__context__`` because storage clients wrap the network error (s3fs: ``OSError`` from a
    ``ClientError``; a reader: ``TarError`` raised while handling ``ConnectionResetError``).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _one_is_transient(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class ClusterLost(RuntimeError):
    """The Ray cluster a run was using is gone (the driver's own raylet exited): nothing more can run on it; the
    same command, run again, resumes from what was finished."""


_END_PROCESS_ON_LOST_CLUSTER = False


def lost_cluster_ends_process() -> None:
    """From now on a lost cluster ends this process at once, as Ray's core worker itself does moments later, rather
    than raising ``ClusterLost`` through the flow (whose engine would log it with a traceback). Set by a command run
    under a supervising parent, which reports the loss in one line and marks the flow runs CRASHED."""
    global _END_PROCESS_ON_LOST_CLUSTER
    _END_PROCESS_ON_LOST_CLUSTER = True


def cluster_lost(detail: str) -> ClusterLost:
    """The error to raise for a lost cluster, or (after ``lost_cluster_ends_process``) the end of the process."""
    if _END_PROCESS_ON_LOST_CLUSTER:
        os._exit(1)
    return ClusterLost(f"the Ray cluster was lost during the run ({detail}); run the same command again to resume")
