"""``edgepipe demo``: the whole pipeline in one process, end to end, with an honest summary.

Simulated devices → broker → edge node → broker → cloud worker → store, each on its own
thread with its own MQTT connection, exactly as the separate processes would run. The
summary compares what the edge accepted with what the store holds: ``lost`` must be 0.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import open_store
from pipeline.config import Settings
from pipeline.edge.node import EdgeNode
from pipeline.errors import ServiceError
from pipeline.simulate import run_sim

DEMO_RATE = 2.0  # readings per second per device
DEMO_BAD_RATE = 0.02


def run_demo(
    settings: Settings,
    *,
    own_broker: bool,
    duration: float,
    devices: int,
    stop: threading.Event | None = None,
    settle_timeout: float = 30.0,
) -> dict[str, Any]:
    stop = stop or threading.Event()
    site = settings.edge.site
    started = time.monotonic()
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="edgepipe-demo-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        broker = "given"
        if own_broker:
            broker, url, protocol = _start_broker(workdir, stack)
            settings.mqtt = settings.mqtt.model_copy(update={"url": url, "protocol": protocol})
        settings.sim = settings.sim.model_copy(
            update={
                "sites": [site],
                "devices_per_site": devices,
                "rate": DEMO_RATE,
                "qos": 1,
                "bad_rate": DEMO_BAD_RATE,
                "speed": 1.0,
            }
        )
        store = open_store(settings.store.url)
        stack.callback(store.close)
        stored_before = store.count_readings(site)
        alerts_before = len(store.query_alerts(site, since_ms=0, limit=1_000_000))

        worker = IngestWorker(settings, store)
        worker.start()
        node = EdgeNode(settings)
        node.start()
        halt = threading.Event()
        for role in (worker, node):
            thread = threading.Thread(target=role.run, args=(halt,), name=type(role).__name__)
            thread.start()
            stack.callback(thread.join, 15)
        stack.callback(halt.set)

        report = run_sim(settings, publish=True, duration=duration, stop=stop)
        sent = report["readings_published"] + report["bad_published"]
        _wait_until(lambda: node.counters.received >= sent, settle_timeout, stop)
        accepted = node.counters.accepted
        _wait_until(lambda: store.count_readings(site) - stored_before >= accepted, settle_timeout, stop)
        stored = store.count_readings(site) - stored_before
        alerts = len(store.query_alerts(site, since_ms=0, limit=1_000_000)) - alerts_before
        counters = node.counters
        return {
            "site": site,
            "devices": devices,
            "broker": broker,
            "store": settings.store.url,
            "readings_published": report["readings_published"],
            "readings_acknowledged": report.get("readings_acknowledged", 0),
            "bad_published": report["bad_published"],
            "readings_received": counters.received,
            "readings_accepted": accepted,
            "readings_stored": stored,
            "lost": max(0, accepted - stored),
            "duplicates": counters.duplicates,
            "dead_letters": counters.dead_lettered,
            "dead_letters_by_reason": dict(counters.dead_letters),
            "alerts": alerts,
            "labels": report.get("labels", 0),
            "unaccounted": counters.unaccounted,
            "seconds": round(time.monotonic() - started, 2),
        }
    raise AssertionError("unreachable")


def _start_broker(workdir: Path, stack: ExitStack) -> tuple[str, str, str]:
    """Start a local Mosquitto, or the embedded broker when Mosquitto is not installed."""
    from pipeline.services import Mosquitto

    try:
        mosquitto = Mosquitto(workdir / "mosquitto")
        mosquitto.start()
    except ServiceError:
        from pipeline.embedded_broker import EmbeddedBroker

        embedded = EmbeddedBroker()
        embedded.start()
        stack.callback(embedded.stop)
        return "embedded", embedded.url, "3.1.1"
    stack.callback(mosquitto.stop)
    return "mosquitto", mosquitto.url, "5"


def _wait_until(condition: Callable[[], bool], timeout: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if stop.is_set() or time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
