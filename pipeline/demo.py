"""``edgepipe demo``: the whole pipeline in one process, end to end, with an honest summary.

Simulated devices → broker → edge node → broker → cloud worker → store, each on its own
thread with its own MQTT connection, exactly as the separate processes would run. The
summary compares what the edge accepted with what the store holds: ``lost`` must be 0.
Every count it prints is defined in docs/summaries.md, with the identities between them.
"""

from __future__ import annotations

import io
import json
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
from pipeline.detect.labels import Event, Raised, grace_ms, match_alerts
from pipeline.edge.node import EdgeNode
from pipeline.errors import ServiceError
from pipeline.protocol.catalog import KINDS, domain_of_site
from pipeline.protocol.messages import AlertData
from pipeline.simulate import run_sim
from simulators import Inject
from simulators.domains import DOMAINS, MODELS

DEMO_RATE = 2.0  # readings per second per device
DEMO_BAD_RATE = 0.02
# The anomaly the demo injects, so that it has one to show: a spike (a user recognises it at
# once) this long after the start, once the detectors score (the built-in priors: 10
# readings, 5 s at 2 Hz), on the first of these it finds in the site (else on any metric
# that can spike).
DEMO_ANOMALY = "spike"
DEMO_ANOMALY_AT_S = 12.0
DEMO_ANOMALY_SHARE = 0.6  # of a shorter --duration
DEMO_TARGETS = (
    ("soil_probe", "moisture"),
    ("fridge", "temp"),
    ("freezer", "temp"),
    ("air_quality", "pm25"),
    ("noise_meter", "noise"),
)


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
        if settings.detect.builtin_priors is None:
            # twenty seconds are 40 readings: only a prior lets a series score at all
            settings.detect = settings.detect.model_copy(update={"builtin_priors": True})
        injected = demo_anomaly(site, devices, duration)
        inject = [*settings.sim.inject, *([str(injected)] if injected is not None else [])]
        settings.sim = settings.sim.model_copy(
            update={
                "sites": [site],
                "devices_per_site": devices,
                "rate": DEMO_RATE,
                "qos": 1,
                "bad_rate": DEMO_BAD_RATE,
                "speed": 1.0,
                "inject": inject,
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

        labels_out = io.StringIO()
        sim_start_ms = time.time_ns() // 1_000_000  # not on a whole minute: only this run's alerts
        report = run_sim(
            settings, publish=True, duration=duration, start_ms=sim_start_ms, stop=stop, labels_out=labels_out
        )
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
        raised_by_node = node.counters.alerts["raised"]  # raises and escalations
        _wait_until(
            lambda: len(alert_records(store, site, sim_start_ms, "raised")) >= raised_by_node, settle_timeout, stop
        )
        stored = stored_now()
        alerts = store.count_alerts(site, since_ms=0) - alerts_before
        events = labelled_events(labels_out.getvalue())
        raised = first_raises(store, site, sim_start_ms)
        matching = alerts_matching(events, raised)
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
            "alerts_raised": len(raised),
            "alerts_matching_labels": len(matching),
            "injected": "none" if injected is None else describe_injected(injected, events),
            "matched": [describe_alert(a, sim_start_ms) for a in matching],
            "seconds": round(time.monotonic() - started, 2),
            "dashboard": f"edgepipe dashboard --store {settings.store.url}",
        }
    raise AssertionError("unreachable")


def demo_anomaly(site: str, devices: int, duration: float) -> Inject | None:
    """The spike the demo injects: on the first ``DEMO_TARGETS`` metric of the site's devices."""
    domain = DOMAINS[domain_of_site(site)]
    kinds = [domain.kind_at(i) for i in range(devices)]
    candidates = [*DEMO_TARGETS]
    for kind in dict.fromkeys(kinds):  # any metric that can spike, in the site's order
        candidates += [(kind, m) for m, allowed in MODELS[kind].generic.items() if DEMO_ANOMALY in allowed]
    for kind, metric in candidates:
        if kind in kinds and DEMO_ANOMALY in MODELS[kind].generic.get(metric, ()):
            at_s = min(DEMO_ANOMALY_AT_S, DEMO_ANOMALY_SHARE * duration)
            return Inject(DEMO_ANOMALY, at_s, f"{kind}-0001", metric)
    return None


def labelled_events(labels_jsonl: str) -> list[Event]:
    """The ground-truth windows the simulator published (its ``--labels-out`` lines)."""
    events = []
    for line in labels_jsonl.splitlines():
        d = json.loads(line)
        events.append(Event(d["device"], tuple(d["metrics"]), d["anomaly"], d["start"], d["end"]))
    return events


def alert_records(store: Store, site: str, since_ms: int, state: str) -> list[AlertData]:
    """The site's alert records of one state (raised: raises and escalations) since ``since_ms``."""
    return [a for a in store.query_alerts(site, since_ms, limit=100_000) if a.state == state]


def first_raises(store: Store, site: str, since_ms: int) -> list[AlertData]:
    """The alerts of the run as users count them: each one's first raise (not its escalations)."""
    return [a for a in alert_records(store, site, since_ms, "raised") if a.alert_id.endswith(f".{a.reading_ts}")]


def alerts_matching(events: list[Event], raised: list[AlertData]) -> list[AlertData]:
    """The raised alerts inside a label window of their device and metric (the bench's rules)."""
    interval_ms = 1000.0 / DEMO_RATE
    grace = grace_ms(interval_ms)
    return [
        a
        for a in raised
        if match_alerts(events, [Raised(a.device, a.metric, a.reading_ts, "")], interval_ms, 0, grace_ms=grace).detected
    ]


def describe_injected(injected: Inject, events: list[Event]) -> str:
    """What was injected, and when its label window was (from the simulator's label)."""
    text = f"{injected.anomaly} on {injected.device} {injected.metric} at {injected.at_s:g} s"
    for e in events:
        if (e.device, e.anomaly) == (injected.device, injected.anomaly):
            return f"{text} ({e.end - e.start + round(1000 / DEMO_RATE)} ms long)"
    return text


def describe_alert(a: AlertData, start_ms: int) -> str:
    """One matched alert as the summary shows it: when, where, how severe, and why."""
    at_s = (a.reading_ts - start_ms) / 1000
    return f"{a.device} {a.metric} {a.severity} at {at_s:.1f} s (score {a.score:.2f}, value {a.value:g}): {a.reason}"


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
