"""The edge node over a real Mosquitto: ships what is valid, dead-letters the rest, counts all."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.edge.node import EdgeNode
from pipeline.mqtt import MqttClient
from pipeline.protocol import (
    Alert,
    DeadLetter,
    Health,
    Reading,
    Topics,
    decode,
    decode_batch,
    encode,
)
from pipeline.services import Mosquitto

TOPICS = Topics()


@dataclass
class Site:
    name: str
    node: EdgeNode
    device: MqttClient
    watcher: MqttClient

    def send(self, payload: bytes, device: str = "soil_probe-0001") -> None:
        self.device.publish(TOPICS.reading(self.name, device), payload, qos=1)

    def next_on(self, suffix: str, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.watcher.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if message.topic.endswith(suffix):
                return message.payload
        raise AssertionError(f"nothing on {suffix} within {timeout} s")


@pytest.fixture
def site(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Site]:
    name = f"farm-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        overrides={
            "mqtt.url": mosquitto.url,
            "edge.site": name,
            "edge.state_dir": str(tmp_path / "state"),
            "edge.batch_interval_s": 0.2,
            "select.method": "deadband",
            "select.tolerance_resolutions": 0.0,  # ship every change: these tests are not about selection
        }
    )
    watcher = MqttClient(mosquitto.url)
    watcher.connect(timeout=5)
    watcher.subscribe(f"{TOPICS.root}/{name}/#", qos=1)
    node = EdgeNode(settings)
    node.start(timeout=5)
    stop = threading.Event()
    thread = threading.Thread(target=node.run, args=(stop,))
    thread.start()
    device = MqttClient(mosquitto.url)
    device.connect(timeout=5)
    yield Site(name, node, device, watcher)
    stop.set()
    thread.join(10)
    device.close(1)
    watcher.close(1)


def reading(ts: int, moisture: float = 30.0, device: str = "soil_probe-0001") -> bytes:
    return encode(
        Reading(v=1, device=device, kind="soil_probe", ts=ts, seq=ts, metrics={"moisture": moisture})
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_valid_readings_are_shipped_in_a_batch(site: Site) -> None:
    t0 = now_ms()
    for i in range(3):
        site.send(reading(t0 + i, 30.0 + i))
    batch = decode_batch(site.next_on("/edge/batch"))
    assert batch.site == site.name
    assert [r.metrics["moisture"] for r in batch.readings] == [30.0, 31.0, 32.0]


def test_a_malformed_payload_is_dead_lettered_with_its_reason(site: Site) -> None:
    site.send(b'{"v": 1, "device": "soil_probe-0001", "metrics": "oops"')
    letter = decode(site.next_on("/deadletter"), DeadLetter)
    assert letter.reason == "bad_json"
    assert letter.payload.startswith('{"v": 1')
    assert site.node.counters.dead_letters == {"bad_json": 1}


def test_the_node_keeps_working_after_bad_input(site: Site) -> None:
    for bad in (b"", b"\xff", b"[]", json.dumps({"v": 9}).encode()):
        site.send(bad)
    site.send(reading(now_ms()))
    batch = decode_batch(site.next_on("/edge/batch"))
    assert len(batch.readings) == 1
    assert site.node.counters.dead_lettered == 4


def test_a_redelivered_reading_is_counted_as_duplicate_not_shipped_twice(site: Site) -> None:
    t = now_ms()
    site.send(reading(t, 30.0))
    site.send(reading(t, 30.0))
    site.send(reading(t + 1, 31.0))
    batch = decode_batch(site.next_on("/edge/batch"))
    assert [r.ts for r in batch.readings] == [t, t + 1]
    assert site.node.counters.duplicates == 1


def test_every_received_message_is_accounted_for(site: Site) -> None:
    t = now_ms()
    site.send(reading(t))
    site.send(reading(t))
    site.send(b"nope")
    site.send(reading(t + 5, moisture=-3.0))
    site.next_on("/edge/batch")
    counters = site.node.counters
    deadline = time.monotonic() + 5
    while counters.received < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (counters.received, counters.accepted, counters.duplicates, counters.dead_lettered) == (4, 1, 1, 2)
    assert counters.unaccounted == 0


def test_health_is_published_retained_with_the_counters(site: Site, mosquitto: Mosquitto) -> None:
    late = MqttClient(mosquitto.url)
    late.connect(timeout=5)
    try:
        late.subscribe(TOPICS.edge(site.name, "health"), qos=1)
        message = late.messages.get(timeout=5)
    finally:
        late.close(1)
    health = decode(message.payload, Health)
    assert message.retain
    assert (health.site, health.status) == (site.name, "online")
    assert "received" in health.counters


def test_a_spike_raises_an_alert_on_the_device_alert_topic(site: Site) -> None:
    t = now_ms() - 200_000
    for i in range(150):  # past the detector's warm-up: a steady, slightly noisy signal
        site.send(reading(t + i * 1000, 30.0 + (i % 3) * 0.1))
    site.send(reading(t + 150_000, 90.0))
    alert = decode(site.next_on("/alerts/soil_probe-0001"), Alert)
    assert (alert.data.state, alert.data.metric, alert.data.value) == ("raised", "moisture", 90.0)
    assert alert.seq > 0  # it travelled through the uplink outbox, to be acknowledged
    assert site.node.counters.alerts["raised"] == 1


def test_edgepipe_alerts_prints_an_alert_readably(site: Site, mosquitto: Mosquitto) -> None:
    from pipeline.tail import tail_alerts

    lines: list[str] = []
    settings = load_settings(overrides={"mqtt.url": mosquitto.url})
    tail = threading.Thread(
        target=tail_alerts,
        kwargs={"settings": settings, "site": site.name, "count": 1, "timeout": 20, "echo": lines.append},
    )
    tail.start()
    time.sleep(0.5)
    t = now_ms() - 200_000
    for i in range(150):
        site.send(reading(t + i * 1000, 30.0 + (i % 3) * 0.1))
    site.send(reading(t + 150_000, 90.0))
    tail.join(25)
    assert len(lines) == 1
    assert f"{site.name}/soil_probe-0001 moisture=90" in lines[0]
    assert "raised" in lines[0]
