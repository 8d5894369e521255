"""``edgepipe demo``: the whole pipeline in one process, end to end, with an honest summary.

Simulated devices → broker → edge node → broker → cloud worker → store, each on its own
thread with its own MQTT connection, exactly as the separate processes would run. The
summary compares what the edge accepted with what the store holds: ``lost`` must be 0.
Every count it prints is defined in docs/summaries.md, with the identities between them.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import Store, open_store
from pipeline.config import Settings
from pipeline.edge.node import EdgeNode
from pipeline.errors import ServiceError
from pipeline.protocol.catalog import KINDS
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
        settings.edge = settings.edge.model_copy(update={"state_dir": str(workdir / "edge")})
        settings.cloud = settings.cloud.model_copy(update={"buffer_dir": str(workdir / "cloud")})
        _with_model_keys(settings, site)
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
        since_ms = time.time_ns() // 1_000_000 - 3_600_000
        until_ms = since_ms + 3 * 3_600_000
        stored_before = readings_in_aggregates(store, site, since_ms)
        points_before = points_in_store(store, site, since_ms, until_ms)
        alerts_before = store.count_alerts(site, since_ms=0)

        worker = IngestWorker(settings, store)
        worker.start()
        node = EdgeNode(settings)
        node.start()
        # Stopped in reverse order: the node first (its last health goes out), then the worker.
        for role in (worker, node):
            halt = threading.Event()
            thread = threading.Thread(target=role.run, args=(halt,), name=type(role).__name__)
            thread.start()
            stack.callback(thread.join, 15)
            stack.callback(halt.set)
            if role is worker:
                stack.callback(time.sleep, 0.5)  # let the node's last messages reach the worker

        report = run_sim(settings, publish=True, duration=duration, stop=stop)
        sent = report["payloads_published"]
        _wait_until(lambda: node.counters.received >= sent, settle_timeout, stop)
        node.request_drain()
        accepted = node.counters.accepted

        def stored_now() -> int:
            return readings_in_aggregates(store, site, since_ms) - stored_before

        def points_now() -> int:
            return points_in_store(store, site, since_ms, until_ms) - points_before

        _wait_until(
            lambda: stored_now() >= accepted and points_now() >= node.counters.readings_shipped,
            settle_timeout,
            stop,
        )
        stored = stored_now()
        alerts = store.count_alerts(site, since_ms=0) - alerts_before
        counters = node.counters
        return {
            "site": site,
            "devices": devices,
            "broker": broker,
            "store": settings.store.url,
            "readings_published": report["readings_published"],
            "bad_published": report["bad_published"],
            "payloads_published": report["payloads_published"],
            "payloads_acknowledged": report["payloads_acknowledged"],
            "labels": report["labels"],
            "labels_acknowledged": report["labels_acknowledged"],
            "readings_received": counters.received,
            "readings_accepted": accepted,
            "duplicates": counters.duplicates,
            "dead_letters": counters.dead_lettered,
            "dead_letters_by_reason": dict(counters.dead_letters),
            "dropped": counters.dropped_total,
            "unaccounted": counters.unaccounted,
            "readings_stored": stored,
            "lost": max(0, accepted - stored),
            "points_shipped": counters.readings_shipped,
            "points_stored": points_now(),
            "alerts": alerts,
            "seconds": round(time.monotonic() - started, 2),
            "dashboard": f"edgepipe dashboard --store {settings.store.url}",
        }
    raise AssertionError("unreachable")


def readings_in_aggregates(store: Store, site: str, since_ms: int) -> int:
    """Readings the store accounts for: the aggregates' counts of each device's first metric.

    Every reading carries every metric of its kind, so one metric's window counts add up to
    the device's readings, whatever data selection shipped at full resolution.
    """
    until_ms = time.time_ns() // 1_000_000 + 3_600_000
    total = 0
    for device, kind in store.devices(site):
        metric = next(iter(KINDS[kind].metrics))
        total += sum(a.count for a in store.query_aggregates(site, device, metric, since_ms, until_ms))
    return total


def points_in_store(store: Store, site: str, since_ms: int, until_ms: int) -> int:
    """Metric values the store holds at full resolution (what selection shipped) in a range."""
    return sum(t.points_stored for t in store.metric_totals(site, since_ms, until_ms))


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


def _with_model_keys(settings: Settings, site: str) -> None:
    """Model sync on for the demo: keys made for this run unless configured, deltas every 5 s."""
    edge_key = settings.edge.model_key or secrets.token_hex(32)
    cloud_key = settings.cloud.model_key or secrets.token_hex(32)
    settings.edge = settings.edge.model_copy(
        update={
            "model_key": edge_key,
            "cloud_model_key": settings.edge.cloud_model_key or cloud_key,
            "model_interval_s": min(settings.edge.model_interval_s, 5.0),
        }
    )
    settings.cloud = settings.cloud.model_copy(
        update={"model_keys": {site: edge_key, **settings.cloud.model_keys}, "model_key": cloud_key}
    )
