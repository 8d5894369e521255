"""The cloud worker decodes the next flush while the store writes this one (issue 20).

Real Mosquitto and a real store (SQLite, and InfluxDB 1.6.7). A gate in front of the store's
``write_readings`` holds a write in flight for as long as a test needs, so what the worker
does meanwhile can be observed without timing anything: it keeps receiving and decoding,
it acknowledges nothing that the store does not hold yet, and once the gate opens its acks
reach the edge in seq order.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import InfluxStore, Store, StoreUnavailable, open_store
from pipeline.cloud.store.influx import reading_lines
from pipeline.config import load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import Ack, Batch, Reading, Topics, decode, encode_batch
from pipeline.services import Influxd, Mosquitto

GATE_TIMEOUT_S = 60.0  # a write held longer than this fails (the test has gone wrong)
PROBE = b"probe"  # published on the ack topic once, to know the subscription holds


class GatedStore:
    """The real store; every ``write_readings`` waits until the test opens ``gate``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered: queue.Queue[int] = queue.Queue()  # first ts of each write that began

    def write_readings(self, site: str, readings: Sequence[Reading]) -> None:
        self.entered.put(readings[0].ts)
        if not self.gate.wait(GATE_TIMEOUT_S):
            raise StoreUnavailable("the test never opened the gate")
        self.inner.write_readings(site, readings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Rig:
    site: str
    topics: Topics  # a topic root of its own: no other test's retained messages reach this worker
    store: GatedStore
    worker: IngestWorker
    edge: MqttClient

    def ship(self, seq: int, n: int = 20) -> None:
        start = 1_700_000_000_000 + seq * 1000
        readings = [
            Reading(v=1, device=f"d{i % 4}", kind="soil_probe", ts=start + i, seq=start + i,
                    metrics={"moisture": float(i)})
            for i in range(n)
        ]
        frame = encode_batch(Batch(v=1, site=self.site, seq=seq, readings=readings))
        self.edge.publish(self.topics.edge(self.site, "batch"), frame, qos=1)

    def acks(self, until: set[int], timeout: float) -> list[Ack]:
        """Acks in arrival order, until every seq of ``until`` is acknowledged or ``timeout``."""
        got: list[Ack] = []
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while not until <= seen and time.monotonic() < deadline:
            try:
                ack = decode(self.edge.messages.get(timeout=0.1).payload, Ack)
            except queue.Empty:
                continue
            got.append(ack)
            for low, high in ack.ranges or [[ack.seq, ack.seq]]:
                seen.update(range(low, high + 1))
        return got


def acknowledged(acks: list[Ack]) -> set[int]:
    return {seq for a in acks for low, high in a.ranges for seq in range(low, high + 1)}


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(params=["sqlite", "influx"])
def rig(request: pytest.FixtureRequest, mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """A worker on a gated store and an edge subscribed to its acks; stopped at teardown."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.db'}"
    else:
        influxdb: Influxd = request.getfixturevalue("influxdb")
        url = f"influxdb://127.0.0.1:{influxdb.port}/{request.getfixturevalue('influx_db')}"
    running: list[tuple[threading.Event, threading.Thread, Rig]] = []

    def start(**overrides: Any) -> Rig:
        site = f"farm-{uuid.uuid4().hex[:8]}"
        topics = Topics(f"pipelining-{site}/v1")
        settings = load_settings(
            overrides={
                "mqtt.url": mosquitto.url,
                "mqtt.topic_root": topics.root,
                "store.url": url,
                "cloud.client_id": f"cloud-{site}",
                "cloud.group": f"g-{site}",
                "cloud.flush_interval_s": 0.05,
                "cloud.buffer_dir": str(tmp_path / "buffer"),
                **overrides,
            }
        )
        store = GatedStore(open_store(url))
        worker = IngestWorker(settings, store)  # type: ignore[arg-type]  # a Store by delegation
        worker.start(timeout=5)
        edge = MqttClient(mosquitto.url)
        edge.connect(timeout=5)
        edge.subscribe(topics.cloud_ack(site), qos=1)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread, Rig(site, topics, store, worker, edge)))
        # The edge's subscription holds once its own probe comes back (a sleep is not enough
        # on a busy machine: an ack published before the SUBACK is lost to the test).
        edge.publish(topics.cloud_ack(site), PROBE, qos=1)
        assert edge.messages.get(timeout=30).payload == PROBE
        return running[-1][2]

    yield start
    for stop, thread, r in running:
        r.store.gate.set()
        stop.set()
        thread.join(30)
        r.edge.close(1)
        r.store.inner.close()


def test_the_next_batches_are_decoded_while_a_write_is_in_flight_and_acked_only_after_it(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    r.ship(1)
    first = r.store.entered.get(timeout=30)  # write 1 is in flight, held at the gate

    r.ship(2)
    r.ship(3)

    decoded = wait_until(lambda: r.worker.counters.messages == 3, timeout=30)
    early = r.acks(until={1}, timeout=0.5)
    pending = r.worker._health("online").gauges["pending_messages"]
    print(f"write of ts {first} held: {r.worker.counters.messages} messages decoded, "
          f"{len(early)} acks, pending_messages {pending}")
    assert decoded, "the worker stopped receiving while a write was in flight"
    assert early == []  # nothing is acknowledged before the store holds it
    assert pending == 3.0  # the one in flight and the two behind it
    assert r.store.inner.count_readings(r.site) == 0

    r.store.gate.set()

    acks = r.acks(until={1, 2, 3}, timeout=20)
    order = [a.seq for a in acks]
    print(f"gate open: acks {[(a.seq, a.ranges) for a in acks]}")
    assert order[0] == 1 and order == sorted(order)
    assert acknowledged(acks) == {1, 2, 3}
    assert r.store.inner.count_readings(r.site) == 60


def test_acks_of_many_overlapping_flushes_reach_the_edge_in_seq_order(
    rig: Callable[..., Rig],
) -> None:
    r = rig(**{"cloud.flush_points": 20})  # every batch is a flush of its own
    r.store.gate.set()

    for seq in range(1, 61):
        r.ship(seq)

    acks = r.acks(until=set(range(1, 61)), timeout=60)
    order = [a.seq for a in acks]
    print(f"60 batches: {len(acks)} acks, flushes {r.worker.counters.flushes}")
    assert order == sorted(order) and len(set(order)) == len(order)
    assert acknowledged(acks) == set(range(1, 61))
    assert r.store.inner.count_readings(r.site) == 60 * 20


# -- readings encoded ahead (InfluxStore) ------------------------------------------------


def _readings(n: int) -> list[Reading]:
    return [
        Reading(v=1, device=f"d{i % 3}", kind="soil_probe", ts=1_700_000_000_000 + i, seq=i,
                metrics={"moisture": i / 10, "soil_temp": 12.5})
        for i in range(n)
    ]


def test_readings_encoded_ahead_are_stored_as_if_encoded_at_the_write(
    influxdb: Influxd, influx_db: str
) -> None:
    store = InfluxStore("127.0.0.1", influxdb.port, influx_db)
    ahead = store.encode_readings("shop1", _readings(50))

    store.write_readings("shop1", ahead)
    store.write_readings("shop2", _readings(50))

    one = store.query_readings("shop1", "d1", "moisture", 0, 2_000_000_000_000)
    two = store.query_readings("shop2", "d1", "moisture", 0, 2_000_000_000_000)
    assert list(ahead) == _readings(50) and ahead.lines == reading_lines("shop1", _readings(50))
    assert one == two and len(one) == 17
    store.close()


def test_readings_encoded_for_another_site_are_encoded_again(influxdb: Influxd, influx_db: str) -> None:
    store = InfluxStore("127.0.0.1", influxdb.port, influx_db)

    store.write_readings("shop2", store.encode_readings("shop1", _readings(10)))

    assert (store.count_readings("shop1"), store.count_readings("shop2")) == (0, 10)
    store.close()
