"""A stand-in for an InfluxDB 2.x server: a loopback HTTP proxy in front of influxd 1.6.7.

No 2.x or 3.x server can be installed on these machines, and 1.6.7 answers
``/api/v2/write`` with 404. This proxy speaks the part of the 2.x API the store uses and
forwards it to the real 1.6.7:

* every request needs ``Authorization: Token <token>``, else 401 (2.x's JSON answer);
* ``POST /api/v2/write?org=O&bucket=B&precision=P`` (org and bucket required, 400 without,
  as 2.x) is forwarded as ``POST /write?db=B&precision=P`` (``ns`` by default, as 2.x);
* ``/query`` and ``/ping`` pass through (the token is not forwarded: 1.6.7 runs without
  auth); any other path is a 404.

``fail_with(503, retry_after="7")`` makes it answer every request with that status until
``fail_with(None)``; ``paths`` counts the paths asked for (before any failure), and
``forwarded`` the 1.6.7 paths it forwarded to.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

import urllib3


class InfluxV2Proxy:
    """``127.0.0.1:port`` speaking 2.x's write API and token auth, backed by influxd 1.x."""

    def __init__(self, influx_port: int, token: str) -> None:
        self.token = token
        self.paths: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self._failure: tuple[int, str | None] | None = None
        self._lock = threading.Lock()
        pool = urllib3.HTTPConnectionPool("127.0.0.1", influx_port, maxsize=4, retries=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                proxy._handle(self, pool)

            do_POST = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._pool = pool
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="influx-v2-proxy", daemon=True
        )
        self._thread.start()

    def fail_with(self, status: int | None, retry_after: str | None = None) -> None:
        """Answer every request with ``status`` (and ``Retry-After``), or forward again (None)."""
        with self._lock:
            self._failure = None if status is None else (status, retry_after)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._pool.close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- one request ----------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, pool: urllib3.HTTPConnectionPool) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        url = urlsplit(req.path)
        with self._lock:
            self.paths[url.path] += 1
            failure = self._failure
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": retry_after} if retry_after else {}
            _answer(req, status, _json("unavailable", f"proxy set to fail with {status}"), headers)
            return
        if req.headers.get("Authorization") != f"Token {self.token}":
            _answer(req, 401, _json("unauthorized", "unauthorized access"))
            return
        path, query = url.path, url.query
        if path == "/api/v2/write":
            q = parse_qs(query)
            if not q.get("org") or not q.get("bucket"):
                _answer(req, 400, _json("invalid", "org and bucket are required"))
                return
            db, precision = q["bucket"][0], q.get("precision", ["ns"])[0]
            path, query = "/write", urlencode({"db": db, "precision": precision})
        elif path not in ("/query", "/ping"):
            _answer(req, 404, _json("not found", f"path not found: {path}"))
            return
        with self._lock:
            self.forwarded[path] += 1
        headers = {}
        if req.headers.get("Content-Type"):
            headers["Content-Type"] = req.headers["Content-Type"]
        resp = pool.request(req.command, f"{path}?{query}", body=body or None, headers=headers)
        out = {}
        for name in ("Content-Type", "Retry-After"):
            if resp.headers.get(name):
                out[name] = resp.headers[name]
        _answer(req, resp.status, resp.data, out)


def _json(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


def _answer(
    req: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str] | None = None
) -> None:
    req.send_response(status)
    for name, value in (headers or {}).items():
        req.send_header(name, value)
    if "Content-Type" not in (headers or {}):
        req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    if req.command != "HEAD":
        req.wfile.write(data)
