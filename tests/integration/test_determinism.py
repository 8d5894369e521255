"""The same event-time stream gives the same alerts, however its arrival is perturbed (issue 19).

One recorded stream (a farm block of 10 devices from the simulators: a weather station, soil
probes and irrigation valves; 30 simulated hours at one reading a minute from a fixed UTC
midnight, with the simulator's anomalies, dropouts among them, and irrigation leaks) is fed
to a real edge node through a real Mosquitto twice:

* plain: in the order the simulator made it;
* perturbed: every reading delayed at random by up to two readings' time of its device
  (120 s of event time; a device's own readings keep their order, as MQTT keeps one
  publisher's), so the devices interleave differently; the publisher pauses now and then;
  two busy processes (started here, stopped by PID) load the machine; and the broker is
  restarted in the middle while the stream is being published.

Both runs must give the identical set of alerts (id, state, severity, metric, reading time).
The node is configured with ``aggregate.lateness_s = 180``: the lateness it allows a
reading, which bounds the perturbation (docs/decisions/0011-event-time-watermark.md). Every
wait is on a condition: the node accepted every reading, drained, and the watcher holds every
alert the node raised.
"""

from __future__ import annotations

import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.clock import OffsetClock
from pipeline.config import load_settings
from pipeline.edge.node import EdgeNode
from pipeline.mqtt import MqttClient
from pipeline.protocol import Alert, Reading, Topics, decode
from pipeline.services import Mosquitto
from simulators import SimOptions, run

# About 150 s on a loaded 2-core machine (two runs of 18,000 readings): the slow tier.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOPICS = Topics()
SITE = "farm-determinism"
SEED = 19
MINUTE_MS = 60_000
START_MS = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a fixed date: the same stream every day
HOURS = 30.0
DEVICES = 10
LATENESS_S = 180.0  # the node's allowed lateness; the perturbation stays within it
MAX_DELAY_MS = 2 * MINUTE_MS  # how far (event time) a reading may fall behind others
HOG_SECONDS = 600  # the CPU hogs end by themselves even if this test is killed
WAIT_S = 600.0  # generous bound on every wait (a loaded 2-core machine is slow, not stuck)

AlertKey = tuple[str, str, str, str, int]


@dataclass(frozen=True)
class Recorded:
    topic: str
    payload: bytes
    device: str
    ts: int


class Recorder:
    """A ``simulators.Publisher`` that keeps the device readings it is given, in order."""

    def __init__(self) -> None:
        self.readings: list[Recorded] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if "/dev/" not in topic:
            return  # labels: not part of the stream the node sees
        r = decode(payload, Reading)
        self.readings.append(Recorded(topic, payload, r.device, r.ts))


@pytest.fixture(scope="module")
def stream() -> list[Recorded]:
    recorder = Recorder()
    run(
        SimOptions(
            sites=(SITE,),
            devices_per_site=DEVICES,
            rate=1 / 60,
            duration=HOURS * 3600,
            seed=SEED,
            qos=1,
            start_ms=START_MS,
            anomaly_rate=0.2,
            anomaly_rates={"irrigation_leak": 0.3},
        ),
        recorder,
    )
    return recorder.readings


def perturbed(stream: list[Recorded], seed: int) -> list[Recorded]:
    """``stream`` with each reading delayed at random by up to ``MAX_DELAY_MS`` of event time
    behind the others; a device's own readings keep their order."""
    rng = random.Random(seed)
    last: dict[str, float] = {}
    keyed = []
    for i, r in enumerate(stream):
        key = max(r.ts + rng.uniform(0, MAX_DELAY_MS), last.get(r.device, -1.0))
        last[r.device] = key
        keyed.append((key, i, r))
    return [r for _, _, r in sorted(keyed)]


@contextmanager
def cpu_hogs(count: int) -> Iterator[list[int]]:
    """``count`` busy processes, each ending by itself after ``HOG_SECONDS``; stopped by PID."""
    code = f"import time\nend = time.monotonic() + {HOG_SECONDS}\nwhile time.monotonic() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def _wait(condition: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def feed(
    broker: Mosquitto,
    state_dir: Path,
    readings: list[Recorded],
    restart_at: int | None = None,
    pause_rng: random.Random | None = None,
) -> set[AlertKey]:
    """Publish ``readings`` (in this order) to a real node on ``broker``; its alerts, once all are in."""
    end_ms = max(r.ts for r in readings)
    settings = load_settings(
        overrides={
            "mqtt.url": broker.url,
            "edge.site": SITE,
            "edge.state_dir": str(state_dir),
            "aggregate.lateness_s": LATENESS_S,
        }
    )
    watcher = MqttClient(broker.url, client_id=f"watch-{state_dir.name}", session_expiry=3600, reconnect_delay=(1, 1))
    watcher.connect(timeout=10)
    watcher.subscribe(TOPICS.alerts(SITE), qos=1)
    node = EdgeNode(settings, clock=OffsetClock(end_ms + MINUTE_MS - time.time_ns() // 1_000_000))
    node.start(timeout=10)
    stop = threading.Event()
    thread = threading.Thread(target=node.run, args=(stop,))
    thread.start()
    publisher = MqttClient(broker.url, client_id=f"devices-{state_dir.name}", reconnect_delay=(1, 1))
    publisher.connect(timeout=10)
    alerts: dict[str, AlertKey] = {}
    restarter: threading.Thread | None = None
    try:
        for i, r in enumerate(readings):
            if i == restart_at:  # the broker restarts while the stream goes on
                restarter = threading.Thread(target=broker.restart)
                restarter.start()
            if pause_rng is not None and pause_rng.random() < 0.002:
                time.sleep(pause_rng.uniform(0.0, 0.05))
            publisher.publish(r.topic, r.payload, qos=1)
        if restarter is not None:
            restarter.join(60)
            assert broker.running
        assert publisher.flush(WAIT_S), "the broker never acknowledged every reading"
        _wait(lambda: node.counters.accepted >= len(readings), "the node to accept every reading")
        assert node.counters.accepted == len(readings)
        node.request_drain()
        assert node.wait_drained(WAIT_S), "the node never drained"
        raised = sum(node.counters.alerts.values())

        def all_alerts_in() -> bool:
            while True:
                try:
                    m = watcher.messages.get_nowait()
                except queue.Empty:
                    return len(alerts) >= raised
                a = decode(m.payload, Alert)
                d = a.data
                alerts[a.id] = (d.alert_id, d.state, d.severity, d.metric, d.reading_ts)

        _wait(all_alerts_in, "every alert the node raised")
        return set(alerts.values())
    finally:
        stop.set()
        thread.join(30)
        publisher.close(1)
        watcher.close(1)


def test_a_perturbed_arrival_gives_the_same_alerts_as_the_plain_one(
    stream: list[Recorded], mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    shuffled = perturbed(stream, seed=SEED)
    assert len(shuffled) == len(stream) >= DEVICES * HOURS * 60 * 0.9
    moved = sum(1 for a, b in zip(stream, shuffled, strict=True) if a is not b)
    assert moved >= len(stream) // 2  # the interleaving really differs

    plain = feed(mosquitto_factory(), tmp_path / "plain", stream)
    with cpu_hogs(2):
        rough = feed(
            mosquitto_factory(),
            tmp_path / "perturbed",
            shuffled,
            restart_at=len(shuffled) // 2,
            pause_rng=random.Random(SEED),
        )
    metrics = {key[3] for key in plain}
    assert len(plain) >= 10 and "_device" in metrics and "moisture" in metrics  # dropouts and zones alerted
    assert rough == plain, {"only plain": sorted(plain - rough), "only perturbed": sorted(rough - plain)}
