"""An S3-compatible server on loopback (moto's), for the demo's ``--s3`` mode and the tests.

It speaks the real S3 HTTP protocol, so the code under test (s3fs, pyarrow, Ray workers) goes over the wire
exactly as against AWS or MinIO. Production users bring their own S3 or MinIO and set ``storage.endpoint_url``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from moto.server import ThreadedMotoServer

from core.settings import StorageConfig
from core.storage import filesystem
from infra.services import free_port


class RequestLog:
    """Every request the server answered, as ``(method, path)``: how a test counts the storage round trips a piece
    of code makes (``since`` a ``mark``), the cost that matters on S3 where each is a network round trip."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            self.requests.append((environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")))
        return self._app(environ, start_response)

    def mark(self) -> int:
        """A point in the log to count from."""
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[tuple[str, str]]:
        with self._lock:
            return self.requests[mark:]


@dataclass
class EmbeddedS3:
    """A running server; ``storage`` is the configuration that reaches it, ``log`` every request it answered."""

    server: ThreadedMotoServer
    storage: StorageConfig
    log: RequestLog

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (if missing); return its URI."""
        fs, _ = filesystem(f"s3://{name}", self.storage)
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        self.server.stop()


def start_s3(host: str = "127.0.0.1", port: int | None = None) -> EmbeddedS3:
    """Start the server on ``host`` (a free port unless given); up in a few seconds."""
    port = port or free_port(host)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server.start()
    log = RequestLog(server._server.app)  # moto's WSGI app, wrapped: werkzeug calls ``server.app`` per request
    server._server.app = log
    # moto accepts any credentials; explicit ones keep botocore from searching the machine's credential chain.
    # No region: s3fs would send it as a LocationConstraint, which S3 rejects for us-east-1.
    storage = StorageConfig(endpoint_url=f"http://{host}:{port}", key="embedded", secret="embedded")
    return EmbeddedS3(server=server, storage=storage, log=log)
