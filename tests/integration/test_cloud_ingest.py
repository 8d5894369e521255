"""The cloud worker over real Mosquitto: stores what the edges ship, then acknowledges it."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import Store, open_store
from pipeline.config import load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import Ack, Batch, Reading, Topics, decode, encode_batch
from pipeline.services import Influxd, Mosquitto

TOPICS = Topics()


@dataclass
class Cloud:
    site: str
    store: Store
    worker: IngestWorker
    edge: MqttClient

    def ship(self, seq: int, readings: list[Reading]) -> None:
        batch = Batch(v=1, site=self.site, seq=seq, readings=readings)
        self.edge.publish(TOPICS.edge(self.site, "batch"), encode_batch(batch), qos=1)

    def next_ack(self, timeout: float = 10.0) -> Ack:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.edge.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            return decode(message.payload, Ack)
        raise AssertionError("no ack")


@pytest.fixture(params=["sqlite", "influx"])
def cloud(request: pytest.FixtureRequest, mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Cloud]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.db'}"
    else:
        influxdb: Influxd = request.getfixturevalue("influxdb")
        url = f"influxdb://127.0.0.1:{influxdb.port}/{request.getfixturevalue('influx_db')}"
    site = f"farm-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        overrides={
            "mqtt.url": mosquitto.url,
            "store.url": url,
            "cloud.client_id": f"cloud-{site}",
            "cloud.group": f"g-{site}",
            "cloud.flush_interval_s": 0.1,
            "cloud.buffer_dir": str(tmp_path / "buffer"),
        }
    )
    store = open_store(url)
    worker = IngestWorker(settings, store)
    worker.start(timeout=5)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    edge = MqttClient(mosquitto.url)
    edge.connect(timeout=5)
    edge.subscribe(TOPICS.cloud_ack(site), qos=1)
    time.sleep(0.2)  # let both SUBACKs land
    yield Cloud(site, store, worker, edge)
    stop.set()
    thread.join(10)
    edge.close(1)
    store.close()


def readings(start_ms: int, n: int) -> list[Reading]:
    return [
        Reading(v=1, device=f"d{i % 3}", kind="soil_probe", ts=start_ms + i, seq=i, metrics={"moisture": 20.0 + i})
        for i in range(n)
    ]


def test_a_shipped_batch_is_stored_then_acknowledged(cloud: Cloud) -> None:
    cloud.ship(1, readings(time.time_ns() // 1_000_000, 30))
    ack = cloud.next_ack()
    assert (ack.site, ack.seq) == (cloud.site, 1)
    assert cloud.store.count_readings(cloud.site) == 30


def test_a_redelivered_batch_does_not_double_count(cloud: Cloud) -> None:
    batch = readings(time.time_ns() // 1_000_000, 10)
    cloud.ship(1, batch)
    cloud.next_ack()
    cloud.ship(1, batch)
    cloud.next_ack()
    assert cloud.store.count_readings(cloud.site) == 10


def test_an_undecodable_batch_is_counted_and_does_not_block_the_next(cloud: Cloud) -> None:
    cloud.edge.publish(TOPICS.edge(cloud.site, "batch"), b"EPB\x01\x07garbage", qos=1)
    cloud.ship(2, readings(time.time_ns() // 1_000_000, 5))
    assert cloud.next_ack().seq == 2
    assert cloud.worker.counters.rejected == {"unknown_version": 1}
    assert cloud.store.count_readings(cloud.site) == 5
