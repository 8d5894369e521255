"""pipeline.healthcheck: compose's "is this process connected?" check, on loopback sockets."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from pipeline.healthcheck import established_remote_ports, main


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def test_an_established_connection_is_healthy_and_a_missing_one_is_not(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    assert port not in established_remote_ports()
    assert main(["--tcp", str(port)]) == 1
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        accepted, _ = listener.accept()
        with accepted:
            assert port in established_remote_ports()
            assert main(["--tcp", str(port)]) == 0
        client.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_checks_need_a_2xx() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["--http", f"{base}/ok"]) == 0
        assert main(["--http", f"{base}/down"]) == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_no_check_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
