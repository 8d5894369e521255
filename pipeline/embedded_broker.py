"""An in-process MQTT 3.1.1 broker (amqtt), the demo's fallback when Mosquitto is absent.

It is slower than Mosquitto and has no MQTT 5 (so no shared subscriptions): the pipeline
must work over 3.1.1, and only ``edgepipe demo`` ever starts this. Loopback only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from pipeline.errors import ServiceError
from pipeline.services import free_port


class EmbeddedBroker:
    """Runs an amqtt broker on its own event loop in a daemon thread."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-broker", daemon=True)
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._thread.start()

        async def start() -> None:
            self._broker = Broker(config)
            await self._broker.start()

        try:
            asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout)
        except Exception as exc:
            raise ServiceError(f"embedded broker failed to start: {exc}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        if self._broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout)
            except Exception:  # noqa: BLE001 - best effort at exit
                logging.getLogger(__name__).warning("embedded broker did not shut down cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
