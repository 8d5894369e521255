"""A loopback TCP proxy that can cut a link: the link faults of the failure tests.

RELIABILITY.md section 5, "Link faults without root": put :class:`TcpProxy` between a
client and its broker and switch its mode from any thread:

* ``pass``: forward both ways;
* ``blackhole``: stop forwarding but keep every socket open, so nothing arrives and nothing
  fails: only the client's keepalive can notice (what a dead NAT or a pulled cable does);
* ``reset``: abort every connection (RST) and refuse new ones until the mode changes.

It listens on 127.0.0.1 only, holds at most ``max_connections`` at a time, and runs an
asyncio loop on one daemon thread that :meth:`close` stops. Bytes read before a blackhole
starts are held, not dropped, and delivered when forwarding resumes (TCP would retransmit
them too).

>>> with TcpProxy("127.0.0.1", 9) as proxy:
...     proxy.mode
'pass'
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Literal, Self

Mode = Literal["pass", "blackhole", "reset"]
LOOPBACK = "127.0.0.1"


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port`` with a switchable fault."""

    def __init__(self, target_host: str, target_port: int, *, max_connections: int = 64) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.connections_total = 0  # accepted and forwarded, over the proxy's life
        self.refused_total = 0  # refused in reset mode or over max_connections
        self._mode: Mode = "pass"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    # -- control (any thread) -------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Switch to ``mode``; returns once the proxy's loop has applied it."""
        if mode not in ("pass", "blackhole", "reset"):
            raise ValueError(f"unknown proxy mode {mode!r}")
        asyncio.run_coroutine_threadsafe(self._apply(mode), self._loop).result(timeout=5)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("the proxy did not start within 5 s")

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``: where a client connects to go through the proxy."""
        return f"mqtt://{LOOPBACK}:{self.port}"

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _apply(self, mode: Mode) -> None:
        assert self._flowing is not None
        self._mode = mode
        if mode == "pass":
            self._flowing.set()
            return
        self._flowing.clear()
        if mode == "reset":
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if self._flowing is not None:
            self._flowing.set()  # wake paused pumps so they see their sockets closed

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "reset" or len(self._writers) >= 2 * self.max_connections:
            self.refused_total += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            self.refused_total += 1
            writer.transport.abort()
            return
        self.connections_total += 1
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pump(reader, up_writer, writer), self._pump(up_reader, writer, up_writer)
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        """Copy ``reader`` to ``writer`` while flowing; close both directions at EOF or error."""
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                if writer not in self._writers:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            for w in (writer, other):
                self._writers.discard(w)
                w.transport.abort()
