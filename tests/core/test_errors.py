"""The transient/content split every reader and retry policy shares."""

from __future__ import annotations

import errno
import tarfile

import aiohttp
import botocore.exceptions
import pytest

from core.errors import is_transient


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    response = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "GetObject")


def _wrapped(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 - the implicit __context__ is what is tested
    except BaseException as err:
        return err


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("read timed out"),
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        _client_error("SlowDown", 503),
        _client_error("InternalError", 500),
        _client_error("Whatever", 502),
        _client_error("Throttling", 400),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("response payload is not completed"),
        OSError(errno.EBUSY, "Please reduce your request rate."),  # s3fs's 503
        OSError("When reading information for key 'a': AWS Error SLOW_DOWN during GetObject operation: slow"),
        _wrapped(tarfile.ReadError("unexpected end of data"), ConnectionResetError("reset")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        tarfile.ReadError("invalid header"),
        EOFError("compressed file ended"),
        ValueError("wrong schema"),
        KeyError("episode_index"),
        FileNotFoundError(errno.ENOENT, "no such key"),
        PermissionError(errno.EACCES, "AccessDenied"),
        _client_error("NoSuchKey", 404),
        _client_error("AccessDenied", 403),
        OSError("Couldn't deserialize thrift: TProtocolException: Invalid data"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_content_or_setup_fault_is_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)
