"""A node restarted from its snapshot raises the same alerts as one that never stopped (issue 16).

One deterministic farm stream (the simulator, fixed seed, fixed UTC start, event time) is
fed over a real Mosquitto to ``edgepipe edge`` processes: node A takes it straight through;
node B is stopped in the middle and restarted on the same state dir. The alerts (ids and
states) in B's outbox must equal A's, each once, and every reading must be journaled exactly
once (the journal's last id equals the readings published: nothing lost, nothing accepted
twice). No cloud runs, so the outbox keeps every alert ever raised.

* SIGTERM: the stop writes a snapshot; the restart restores it and replays nothing.
* SIGKILL: B stops cleanly once (snapshot at the stop), takes more readings, is killed; the
  restart restores that snapshot and replays exactly the readings journaled since.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
from nodekit import edgepipe_process

from pipeline.edge.uplink import Priority, UplinkQueue
from pipeline.mqtt import MqttClient
from pipeline.protocol import Alert, Health, Reading, Topics, decode
from pipeline.services import Mosquitto
from simulators import SimOptions, run

pytestmark = pytest.mark.timeout(900)

TOPICS = Topics()
START_MS = 1_793_577_600_000  # 2026-11-02T00:00:00Z: the same stream on every day the suite runs
DAY_MS = 86_400_000
STREAM_SITE = "farm-snapshots"  # the simulator keys its random streams by site and seed
WAIT_S = 300  # generous: a busy 2-core machine


def farm_stream(days: float = 2.0, devices: int = 6, seed: int = 11) -> list[tuple[str, bytes]]:
    """(device, payload) of every reading, in publication order."""
    out = io.StringIO()
    options = SimOptions(
        sites=(STREAM_SITE,),
        devices_per_site=devices,
        rate=1 / 60,
        duration=days * 86_400,
        seed=seed,
        start_ms=START_MS,
        anomaly_rate=0.5,
    )
    run(options, None, out=out)
    stream = []
    for line in out.getvalue().splitlines():
        topic, payload = line.split("\t", 1)
        if "/dev/" in topic:
            stream.append((topic.rsplit("/", 1)[1], payload.encode()))
    return stream


@pytest.fixture(scope="module")
def stream() -> list[tuple[str, bytes]]:
    return farm_stream()


def ts_of(payload: bytes) -> int:
    return msgspec.json.decode(payload, type=Reading).ts


class HealthWatch:
    """The node's retained health, as it comes: the newest online one, per process run."""

    def __init__(self, url: str, site: str) -> None:
        self.client = MqttClient(url)
        self.client.connect(timeout=10)
        self.client.subscribe(TOPICS.edge(site, "health"), qos=1)
        self.latest: Health | None = None

    def wait(self, condition: str, check: Callable[[Health], bool], timeout: float = WAIT_S) -> Health:
        """Wait (bounded) until an online health message satisfies ``check``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.client.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            health = decode(message.payload, Health)
            if health.status == "online":
                self.latest = health
                if check(health):
                    return health
        raise AssertionError(f"no health with {condition} within {timeout} s; last {self.latest}")

    def wait_offline(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.client.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if decode(message.payload, Health).status == "offline":
                return
        raise AssertionError("the node never said offline")

    def close(self) -> None:
        self.client.close(1)


class Feeder:
    """Publishes the stream's readings to one site, QoS 1, and waits for the PUBACKs."""

    def __init__(self, url: str, site: str) -> None:
        self.site = site
        self.client = MqttClient(url, client_id=f"feeder-{site}")
        self.client.connect(timeout=10)

    def feed(self, part: list[tuple[str, bytes]]) -> None:
        for device, payload in part:
            self.client.publish(TOPICS.reading(self.site, device), payload, qos=1)
        assert self.client.flush(WAIT_S), "the broker did not acknowledge every reading"

    def close(self) -> None:
        self.client.close(1)


@contextmanager
def node(tmp_path: Path, url: str, site: str, label: str, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        "EDGEPIPE_MQTT__URL": url,
        "EDGEPIPE_EDGE__SITE": site,
        "EDGEPIPE_EDGE__STATE_DIR": str(tmp_path / site),
        "EDGEPIPE_EDGE__MAX_AGE_S": "1e10",  # the stream's fixed dates are weeks old
        "EDGEPIPE_EDGE__HEALTH_INTERVAL_S": "0.5",
        "EDGEPIPE_EDGE__SNAPSHOT_INTERVAL_S": "3600",  # snapshots at a stop only, unless told
        "EDGEPIPE_LOG__FORMAT": "json",
    } | {f"EDGEPIPE_{k.upper()}": v for k, v in extra.items()}
    with edgepipe_process(tmp_path / f"{site}-{label}.log", "edge", env=env) as (proc, _log):
        yield proc


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    os.kill(proc.pid, sig)
    assert proc.wait(60) in (0, -sig), f"exit {proc.returncode} after {sig.name}"


def outbox_alerts(tmp_path: Path, site: str) -> tuple[list[tuple[str, str]], int]:
    """(id with the site taken out, state) of every alert in the node's outbox, in seq order,
    and the journal's last id (how many readings were ever journaled)."""
    with UplinkQueue.in_state_dir(tmp_path / site / f"edge-{site}") as q:
        items = q.next_batch(1_000_000)
        journaled = q.last_journal_id
    alerts = [decode(i.payload, Alert) for i in items if i.priority == Priority.ALERT]
    return [(a.id.replace(site, "SITE"), a.data.state) for a in alerts], journaled


def straight(tmp_path: Path, url: str, stream: list[tuple[str, bytes]]) -> tuple[list[tuple[str, str]], int]:
    site = f"farm-a{uuid.uuid4().hex[:6]}"
    watch, feeder = HealthWatch(url, site), Feeder(url, site)
    try:
        with node(tmp_path, url, site, "straight") as proc:
            watch.wait("online", lambda h: True)
            feeder.feed(stream)
            watch.wait(f"received {len(stream)}", lambda h: h.counters["received"] >= len(stream))
            stop(proc, signal.SIGTERM)
    finally:
        watch.close()
        feeder.close()
    return outbox_alerts(tmp_path, site)


def assert_same_alerts(a: list[tuple[str, str]], b: list[tuple[str, str]], after_ms: int, note: str) -> None:
    def late(alerts: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [x for x in alerts if int(x[0].split(".")[-1]) >= after_ms]

    assert len(set(b)) == len(b), f"an alert was raised twice ({note})"
    assert late(a), "the stream must raise alerts after the restart point, or this test proves nothing"
    assert sorted(late(b)) == sorted(late(a)), f"alerts after the restart differ ({note})"
    assert sorted(b) == sorted(a), f"alerts differ ({note})"


def test_sigterm_restart_raises_the_alerts_of_an_uninterrupted_node(
    mosquitto: Mosquitto, tmp_path: Path, stream: list[tuple[str, bytes]]
) -> None:
    split = len(stream) * 3 // 4  # mid day 2, after the learning day
    split_ms = ts_of(stream[split][1])
    a_alerts, a_journaled = straight(tmp_path, mosquitto.url, stream)
    site = f"farm-b{uuid.uuid4().hex[:6]}"
    watch, feeder = HealthWatch(mosquitto.url, site), Feeder(mosquitto.url, site)
    try:
        with node(tmp_path, mosquitto.url, site, "1") as proc:
            watch.wait("online", lambda h: True)
            feeder.feed(stream[:split])
            first = watch.wait(f"received {split}", lambda h: h.counters["received"] >= split)
            stop(proc, signal.SIGTERM)
        watch.wait_offline()
        with node(tmp_path, mosquitto.url, site, "2") as proc:
            restarted = watch.wait("online", lambda h: True)
            feeder.feed(stream[split:])
            rest = len(stream) - split
            second = watch.wait(f"received {rest}", lambda h: h.counters["received"] >= rest)
            stop(proc, signal.SIGTERM)
    finally:
        watch.close()
        feeder.close()
    b_alerts, b_journaled = outbox_alerts(tmp_path, site)
    assert restarted.gauges["snapshot_restored"] == 1.0 and restarted.counters["replayed"] == 0
    assert restarted.gauges["snapshot_bytes"] > 0
    for h in (first, second):
        assert h.counters["unaccounted"] == 0 and h.counters["duplicates"] == 0
    assert a_journaled == b_journaled == len(stream), "every reading journaled exactly once"
    assert_same_alerts(a_alerts, b_alerts, split_ms, "SIGTERM")


def test_sigkill_restart_restores_then_replays_to_the_alerts_of_an_uninterrupted_node(
    mosquitto: Mosquitto, tmp_path: Path, stream: list[tuple[str, bytes]]
) -> None:
    snap, kill = len(stream) // 2, len(stream) * 3 // 4
    kill_ms = ts_of(stream[kill][1])
    a_alerts, _ = straight(tmp_path, mosquitto.url, stream)
    site = f"farm-k{uuid.uuid4().hex[:6]}"
    watch, feeder = HealthWatch(mosquitto.url, site), Feeder(mosquitto.url, site)
    try:
        with node(tmp_path, mosquitto.url, site, "1") as proc:
            watch.wait("online", lambda h: True)
            feeder.feed(stream[:snap])
            watch.wait(f"received {snap}", lambda h: h.counters["received"] >= snap)
            stop(proc, signal.SIGTERM)  # the snapshot: watermark = reading `snap`
        watch.wait_offline()
        with node(tmp_path, mosquitto.url, site, "2") as proc:
            watch.wait("online", lambda h: True)
            feeder.feed(stream[snap:kill])
            # Committed and acknowledged to the broker: health counts them after the commit.
            watch.wait(f"received {kill - snap}", lambda h: h.counters["received"] >= kill - snap)
            stop(proc, signal.SIGKILL)
        watch.wait_offline()
        with node(tmp_path, mosquitto.url, site, "3") as proc:
            restarted = watch.wait("online", lambda h: True)
            feeder.feed(stream[kill:])
            rest = len(stream) - kill
            watch.wait(f"accepted {rest}", lambda h: h.counters["accepted"] + h.counters["duplicates"] >= rest)
            stop(proc, signal.SIGTERM)
    finally:
        watch.close()
        feeder.close()
    b_alerts, b_journaled = outbox_alerts(tmp_path, site)
    assert restarted.gauges["snapshot_restored"] == 1.0
    replayed = restarted.counters["replayed"]
    assert replayed > 0, "the journal after the snapshot must be replayed"
    assert restarted.counters["snapshot_replay_gap"] == 0
    assert b_journaled == len(stream), "every reading journaled exactly once (none lost, none twice)"
    assert_same_alerts(a_alerts, b_alerts, kill_ms, f"SIGKILL, replayed {replayed}")
