"""The cloud tier loses nothing and counts nothing twice: real Mosquitto, real InfluxDB 1.6.7.

A test edge (``ShippingEdge``) ships batches of readings with increasing uplink seqs,
keeps a ledger of every reading it shipped, and resends what the cloud has not acknowledged
(as the real edge does), so every test ends by comparing InfluxDB with the ledger:
the same number of points and the same values, nothing more. Goals: issue 6, RELIABILITY.md
R2 (store outage), R4 (worker crash), R8 (replay), R12 (poison batch).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import Store, open_store
from pipeline.config import load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import Ack, Batch, Reading, Topics, decode, encode_batch
from pipeline.protocol.batch_codec import HEADER_VERSION, MAGIC
from pipeline.services import Influxd, Mosquitto

TOPICS = Topics()
DEVICES = 10


class RecordingStore:
    """A store that remembers which readings went through it, to tell workers apart."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.readings: set[tuple[str, int]] = set()

    def write_readings(self, site: str, readings: Sequence[Reading]) -> None:
        self.inner.write_readings(site, readings)
        self.readings.update((r.device, r.ts) for r in readings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class ShippingEdge:
    """Ships batches like an edge node: a ledger, and resends until the cloud acknowledges."""

    url: str
    site: str
    resend_after_s: float = 3.0
    client: MqttClient = field(init=False)
    ledger: dict[tuple[str, int], float] = field(default_factory=dict)
    frames: dict[int, bytes] = field(default_factory=dict)
    unacked: dict[int, float] = field(default_factory=dict)  # seq -> last sent (monotonic)
    acks: int = 0
    resent: int = 0
    _seq: int = 0
    _ts: int = field(default_factory=lambda: time.time_ns() // 1_000_000 - 3_600_000)

    def __post_init__(self) -> None:
        self.client = MqttClient(self.url, client_id=f"edge-{self.site}", session_expiry=3600)
        self.client.connect(timeout=5)
        self.client.subscribe(TOPICS.cloud_ack(self.site), qos=1)

    def ship(self, readings_per_batch: int = 50) -> None:
        self._seq += 1
        readings = []
        for i in range(readings_per_batch):
            self._ts += 1
            device = f"d{i % DEVICES}"
            value = round((self._ts % 997) / 10, 1)
            readings.append(
                Reading(v=1, device=device, kind="soil_probe", ts=self._ts, seq=self._ts,
                        metrics={"moisture": value})
            )
            self.ledger[(device, self._ts)] = value
        frame = encode_batch(Batch(v=1, site=self.site, seq=self._seq, readings=readings))
        self.frames[self._seq] = frame
        self.send(self._seq)

    def send(self, seq: int) -> None:
        self.client.publish(TOPICS.edge(self.site, "batch"), self.frames[seq], qos=1)
        self.unacked[seq] = time.monotonic()

    def pump(self) -> None:
        """Take the acks that arrived; resend what waited too long for one."""
        while True:
            try:
                message = self.client.messages.get_nowait()
            except queue.Empty:
                break
            ack = decode(message.payload, Ack)
            self.acks += 1
            for low, high in ack.ranges or [[ack.seq, ack.seq]]:
                for seq in range(low, high + 1):
                    self.unacked.pop(seq, None)
        now = time.monotonic()
        for seq, sent in list(self.unacked.items()):
            if now - sent > self.resend_after_s:
                self.resent += 1
                self.send(seq)

    def stream(self, seconds: float, batches_per_s: float = 20, per_batch: int = 50) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ship(per_batch)
            self.pump()
            time.sleep(1 / batches_per_s)

    def settle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.unacked and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.05)
        assert not self.unacked, f"{len(self.unacked)} batches never acknowledged"

    def close(self) -> None:
        self.client.close(1)


@dataclass
class RunningWorker:
    worker: IngestWorker
    stop: threading.Event
    thread: threading.Thread

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


def cloud_settings(mosquitto: Mosquitto, store_url: str, name: str, tmp_path: Path, **extra: Any) -> Any:
    return load_settings(
        overrides={
            "mqtt.url": mosquitto.url,
            "store.url": store_url,
            "cloud.client_id": name,
            "cloud.group": f"g-{tmp_path.name[-20:]}".replace(".", "-"),
            "cloud.flush_interval_s": 0.1,
            "cloud.buffer_dir": str(tmp_path / "buffers"),
            "cloud.health_interval_s": 1.0,
            **extra,
        }
    )


@pytest.fixture
def start_worker() -> Iterator[Callable[..., RunningWorker]]:
    """Start ingest workers on threads; every one is stopped at teardown."""
    running: list[RunningWorker] = []

    def start(settings: Any, store: Store) -> RunningWorker:
        worker = IngestWorker(settings, store)
        worker.start(timeout=5)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        running.append(RunningWorker(worker, stop, thread))
        return running[-1]

    yield start
    for r in running:
        r.stop.set()
        r.thread.join(15)


def influx_points(server: Influxd, db: str, site: str) -> dict[tuple[str, int], float]:
    """Every stored reading of ``site`` as (device, ts) -> moisture, read back with InfluxQL."""
    answer = server.query(
        f"SELECT \"moisture\", \"device\" FROM \"readings\" WHERE \"site\" = '{site}'",
        db=db,
        epoch="ms",
    )
    points: dict[tuple[str, int], float] = {}
    for series in answer["results"][0].get("series", []):
        columns = series["columns"]
        for row in series["values"]:
            values = dict(zip(columns, row, strict=True))
            points[(values["device"], values["time"])] = values["moisture"]
    return points


def fingerprint(server: Influxd, db: str) -> str:
    """SHA-256 over every readings row, sorted: changes if anything is added or rewritten."""
    answer = server.query('SELECT * FROM "readings"', db=db, epoch="ns")
    rows = sorted(
        json.dumps(row) for s in answer["results"][0].get("series", []) for row in s["values"]
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def site() -> str:
    return f"farm-{uuid.uuid4().hex[:8]}"


# -- shared subscription -----------------------------------------------------------------


def test_two_workers_on_a_shared_subscription_split_a_stream_exactly(
    mosquitto: Mosquitto, influxdb: Influxd, influx_db: str, tmp_path: Path, site: str,
    start_worker: Callable[..., RunningWorker],
) -> None:
    url = f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"
    stores = [RecordingStore(open_store(url)) for _ in range(2)]
    for i, store in enumerate(stores):
        start_worker(cloud_settings(mosquitto, url, f"cloud-{i}-{site}", tmp_path), store)
    edge = ShippingEdge(mosquitto.url, site, resend_after_s=30)

    edge.stream(seconds=3)
    edge.settle(timeout=20)

    first, second = (s.readings for s in stores)
    print(f"worker 0 stored {len(first)}, worker 1 stored {len(second)} of {len(edge.ledger)}")
    assert len(first) > 0 and len(second) > 0
    assert first | second == set(edge.ledger)
    assert not first & second
    assert influx_points(influxdb, influx_db, site) == edge.ledger
    edge.close()


# -- InfluxDB outage (R2) ----------------------------------------------------------------


def _survive_influx_outage(
    outage_s: float, mosquitto: Mosquitto, influxd_factory: Callable[..., Influxd],
    tmp_path: Path, site: str, start_worker: Callable[..., RunningWorker], hang: bool = False,
) -> None:
    """influxd down (SIGTERM, restarted) or, with ``hang``, frozen (SIGSTOP, then SIGCONT)."""
    server = influxd_factory()
    server.create_database("edgepipe")
    url = f"influxdb://127.0.0.1:{server.port}/edgepipe?timeout=2"
    running = start_worker(cloud_settings(mosquitto, url, f"cloud-{site}", tmp_path), open_store(url))
    edge = ShippingEdge(mosquitto.url, site, resend_after_s=max(30.0, outage_s * 2))

    edge.stream(seconds=2)
    acked_before = len(edge.frames) - len(edge.unacked)
    if hang:
        server.kill(signal.SIGSTOP)  # accepts connections, answers nothing: writes time out
    else:
        server.stop()
    try:
        edge.stream(seconds=outage_s)
        acked_during_outage = len(edge.frames) - len(edge.unacked) - acked_before
    finally:
        if hang:
            server.kill(signal.SIGCONT)
    if not hang:
        server.start()
    edge.stream(seconds=2)
    edge.settle(timeout=90)
    worker = running.worker
    wait_for(lambda: worker.buffer.items == 0, 90, "the disk buffer to drain")

    stored = influx_points(server, "edgepipe", site)
    c = worker.counters
    print(
        f"{'SIGSTOP hang' if hang else 'outage'} {outage_s:.0f} s: shipped {len(edge.ledger)} readings in {len(edge.frames)} "
        f"batches, stored {len(stored)}; buffered {c.buffered} writes, drained {c.drained}, "
        f"store errors {dict(c.store_errors)}, edge resends {edge.resent}"
    )
    assert stored == edge.ledger  # nothing lost, nothing extra, every value exact
    assert c.buffered > 0 and c.drained == c.buffered
    assert c.store_errors["unavailable"] > 0
    assert acked_during_outage > 0  # buffered writes were acknowledged while influxd was down
    running.halt()
    edge.close()


def test_a_5s_influx_outage_loses_nothing_and_counts_nothing_twice(
    mosquitto: Mosquitto, influxd_factory: Callable[..., Influxd], tmp_path: Path, site: str,
    start_worker: Callable[..., RunningWorker],
) -> None:
    _survive_influx_outage(5, mosquitto, influxd_factory, tmp_path, site, start_worker)


@pytest.mark.slow
def test_a_60s_influx_outage_loses_nothing_and_counts_nothing_twice(
    mosquitto: Mosquitto, influxd_factory: Callable[..., Influxd], tmp_path: Path, site: str,
    start_worker: Callable[..., RunningWorker],
) -> None:
    _survive_influx_outage(60, mosquitto, influxd_factory, tmp_path, site, start_worker)


def test_a_5s_influx_hang_loses_nothing_and_counts_nothing_twice(
    mosquitto: Mosquitto, influxd_factory: Callable[..., Influxd], tmp_path: Path, site: str,
    start_worker: Callable[..., RunningWorker],
) -> None:
    _survive_influx_outage(5, mosquitto, influxd_factory, tmp_path, site, start_worker, hang=True)


@pytest.mark.slow
def test_a_60s_influx_hang_loses_nothing_and_counts_nothing_twice(
    mosquitto: Mosquitto, influxd_factory: Callable[..., Influxd], tmp_path: Path, site: str,
    start_worker: Callable[..., RunningWorker],
) -> None:
    _survive_influx_outage(60, mosquitto, influxd_factory, tmp_path, site, start_worker, hang=True)


# -- worker crash (R4) -------------------------------------------------------------------


def _spawn_cloud(mosquitto: Mosquitto, url: str, name: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPIPE_")}
    env.update(
        EDGEPIPE_CLOUD__CLIENT_ID=name,
        EDGEPIPE_CLOUD__GROUP=f"g-{name}",
        EDGEPIPE_CLOUD__FLUSH_INTERVAL_S="0.1",
        EDGEPIPE_CLOUD__BUFFER_DIR=str(tmp_path / "buffers"),
        EDGEPIPE_MQTT__SESSION_EXPIRY="3600",
    )
    with open(tmp_path / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "cloud", "--broker", mosquitto.url, "--store", url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stream_through_kills(
    mosquitto: Mosquitto, url: str, name: str, tmp_path: Path, edge: ShippingEdge,
    ups: list[float], outage_s: float, settle_s: float,
) -> list[str]:
    """Stream through a cloud worker SIGKILLed after each of ``ups`` seconds and restarted
    after ``outage_s`` more seconds of streaming (the broker keeps what no worker takes); then
    2 s more and settle. Closes ``edge``; returns what each kill left unacknowledged."""
    proc = _spawn_cloud(mosquitto, url, name, tmp_path)
    kills: list[str] = []
    try:
        for up_s in ups:
            edge.stream(seconds=up_s)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills.append(f"{up_s:.1f}s/{len(edge.unacked)} unacked")
            edge.stream(seconds=outage_s)
            proc = _spawn_cloud(mosquitto, url, name, tmp_path)
        edge.stream(seconds=2)
        edge.settle(timeout=settle_s)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        edge.close()
    return kills


def test_a_cloud_worker_killed_mid_stream_loses_nothing(
    mosquitto: Mosquitto, influxdb: Influxd, influx_db: str, tmp_path: Path, site: str,
) -> None:
    url = f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"
    edge = ShippingEdge(mosquitto.url, site, resend_after_s=5)
    _stream_through_kills(mosquitto, url, f"cloud-{site}", tmp_path, edge, [4.0], outage_s=2.0, settle_s=60)

    stored = influx_points(influxdb, influx_db, site)
    print(f"SIGKILL mid-stream: shipped {len(edge.ledger)}, stored {len(stored)}, resent {edge.resent}")
    assert stored == edge.ledger


@pytest.mark.slow
def test_a_cloud_worker_killed_5_times_loses_nothing_and_counts_nothing_twice(
    mosquitto: Mosquitto, influxdb: Influxd, influx_db: str, tmp_path: Path, site: str,
) -> None:
    url = f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"
    rng = random.Random(4)  # noqa: S311 - reproducible kill moments, not crypto
    edge = ShippingEdge(mosquitto.url, site, resend_after_s=5)
    ups = [rng.uniform(2.0, 5.0) for _ in range(5)]
    kills = _stream_through_kills(mosquitto, url, f"cloud-{site}", tmp_path, edge, ups, outage_s=1.0, settle_s=90)

    stored = influx_points(influxdb, influx_db, site)
    rows = influxdb.query(
        f"SELECT count(\"moisture\") FROM \"readings\" WHERE \"site\" = '{site}'", db=influx_db
    )["results"][0]["series"][0]["values"][0][1]
    print(
        f"5 x SIGKILL (after {', '.join(kills)}): shipped {len(edge.ledger)} in "
        f"{len(edge.frames)} batches, stored {len(stored)} points ({rows} rows), "
        f"lost {len(set(edge.ledger) - set(stored))}, extra {len(set(stored) - set(edge.ledger))}, "
        f"resent {edge.resent}"
    )
    assert stored == edge.ledger  # nothing lost, nothing extra, every value exact
    assert rows == len(edge.ledger)


# -- replay (R8) -------------------------------------------------------------------------


def test_replaying_every_batch_twice_changes_nothing(
    mosquitto: Mosquitto, influxdb: Influxd, influx_db: str, tmp_path: Path, site: str,
    start_worker: Callable[..., RunningWorker],
) -> None:
    url = f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"
    start_worker(cloud_settings(mosquitto, url, f"cloud-{site}", tmp_path), open_store(url))
    edge = ShippingEdge(mosquitto.url, site)
    edge.stream(seconds=2)
    edge.settle(timeout=20)
    before, count = fingerprint(influxdb, influx_db), len(influx_points(influxdb, influx_db, site))

    for _ in range(2):
        for seq in edge.frames:
            edge.send(seq)
        edge.settle(timeout=30)

    series = influxdb.query('SHOW SERIES FROM "readings"', db=influx_db)["results"][0]["series"]
    print(f"replayed {len(edge.frames)} batches twice: {count} points before and after")
    assert len(influx_points(influxdb, influx_db, site)) == count == len(edge.ledger)
    assert fingerprint(influxdb, influx_db) == before
    assert len(series[0]["values"]) == DEVICES  # one series per device: no seq or uuid tags
    edge.close()


# -- poison batch (R12) ------------------------------------------------------------------


def test_a_batch_with_a_corrupt_body_is_acknowledged_to_its_edge_and_dead_lettered(
    mosquitto: Mosquitto, tmp_path: Path, site: str, start_worker: Callable[..., RunningWorker],
) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    store = open_store(url)
    running = start_worker(cloud_settings(mosquitto, url, f"cloud-{site}", tmp_path), store)
    edge = ShippingEdge(mosquitto.url, site, resend_after_s=60)
    edge.ship(10)
    good = edge.frames[1]
    body_at = len(MAGIC) + 2 + 1 + len(site) + 8
    assert good[3] == HEADER_VERSION
    edge.frames[2] = good[:body_at].replace((1).to_bytes(8, "little"), (2).to_bytes(8, "little")) + b"\x28\xb5\x2f\xfd garbage"
    edge.send(2)

    edge.settle(timeout=10)

    letters = store.query_dead_letters(site, 0)
    print(f"poison batch: acked, dead letters {[(d.reason, d.detail) for d in letters]}")
    assert [d.reason for d in letters] == ["bad_json"]
    assert letters[0].detail.startswith("seq 2:")
    assert running.worker.counters.poison_acked == 1
    assert store.count_readings(site) == 10
    edge.close()
