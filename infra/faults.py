"""A fault-injecting HTTP proxy in front of an S3 server: every ``fail_every``-th request is answered with an S3 error
(503 SlowDown by default; 403 AccessDenied stands in for wrong credentials) instead of being forwarded.

It sits on the wire, so the storage clients' own retry policies (botocore retry modes, s3fs) are what is tested —
the same faults a busy S3 or MinIO gives.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_ERROR = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected</Message></Error>'


@dataclass
class FaultProxy:
    """Forwards to ``upstream`` (``http://host:port``); ``endpoint_url`` is where clients connect."""

    upstream: str
    fail_every: int = 0  # 0: never; 1: every request; n: every n-th request
    status: int = 503
    code: str = "SlowDown"
    requests: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def should_fail(self) -> bool:
        with self._lock:
            self.requests += 1
            fail = self.fail_every > 0 and self.requests % self.fail_every == 0
            self.failed += fail
            return fail

    def start(self) -> FaultProxy:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # no line per request
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.should_fail():
                    self._answer(proxy.status, {"Content-Type": "application/xml"},
                                 _ERROR.format(code=proxy.code).encode())
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                    resp = conn.getresponse()
                    data = resp.read()
                    headers = {k: v for k, v in resp.getheaders() if k.lower() != "transfer-encoding"}
                    self._answer(resp.status, headers, data)
                finally:
                    conn.close()

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                if self.command != "HEAD":  # a HEAD answer keeps the object's length, with no body
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                    headers["Content-Length"] = str(len(data))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
