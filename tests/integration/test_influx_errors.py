"""Every InfluxDB error class is handled (RELIABILITY.md R7): real influxd where it can say it.

A 400 partial write keeps the good points and dead-letters exactly the bad ones; a 413
splits; 429 and 503 are retried with no attempt cap, honouring Retry-After (a small fake
server says those, since influxd 1.6.7 sends no Retry-After); 401 raises the
``writer_config_error`` alarm while the worker keeps buffering, and nothing is lost once
the credentials work.

Least privilege, on an influxd with ``auth-enabled`` (``influx_auth_db``): a WRITE-only
worker stores and acknowledges without the right to ``CREATE DATABASE``; a READ-only one
(the wrong grant) raises the alarm, keeps buffering and tries the store only at its backoff
pace, never once per batch; a merging worker without READ raises the alarm on a model delta
and goes on storing everything else.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import urllib3
from conftest import AuthDatabase
from waiting import wait_until

from pipeline.cloud.ingest import JITTER, MAX_BACKOFF_S, MIN_BACKOFF_S, IngestWorker
from pipeline.cloud.models import ModelMerger
from pipeline.cloud.store import (
    InfluxStore,
    MergedModelRecord,
    PartialWriteError,
    StoreConfigError,
    StoreUnavailable,
    open_store,
)
from pipeline.config import load_settings
from pipeline.errors import ProtocolError
from pipeline.mqtt import MqttClient
from pipeline.protocol import Ack, Batch, Reading, Topics, decode, encode_batch
from pipeline.protocol.model_codec import MergedModel, encode_model
from pipeline.services import Influxd, Mosquitto

TOPICS = Topics()
T0 = 1_700_000_000_000


def reading(device: str, ts: int, metric: str = "temp") -> Reading:
    return Reading(v=1, device=device, kind="fridge", ts=ts, seq=ts - T0, metrics={metric: 4.0})


# InfluxDB 1.x fixes a field's type per measurement and shard: once "door" is a string,
# every float "door" in that shard is refused (400 partial write), and "temp" is not.
CONFLICT = 'readings,device=x,kind=fridge,site={site} door="open" ' + str(T0)


# -- a worker and an edge over the session broker ----------------------------------------


class Edge:
    """Publishes batches of one site and waits for the cloud's acks."""

    def __init__(self, url: str, site: str) -> None:
        self.site = site
        self.client = MqttClient(url)
        self.client.connect(timeout=5)
        self.client.subscribe(TOPICS.cloud_ack(site), qos=1)
        time.sleep(0.2)

    def ship(self, seq: int, readings: list[Reading]) -> None:
        frame = encode_batch(Batch(v=1, site=self.site, seq=seq, readings=readings))
        self.client.publish(TOPICS.edge(self.site, "batch"), frame, qos=1)

    def acked(self, timeout: float) -> set[int]:
        """Seqs acknowledged within ``timeout``."""
        seqs: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ack = decode(self.client.messages.get(timeout=0.1).payload, Ack)
            except queue.Empty:
                continue
            for low, high in ack.ranges or [[ack.seq, ack.seq]]:
                seqs.update(range(low, high + 1))
            return seqs
        return seqs


@pytest.fixture
def ingest(
    mosquitto: Mosquitto, tmp_path: Path
) -> Iterator[Callable[..., tuple[IngestWorker, Edge]]]:
    """Start a worker writing to a store URL (settings ``overrides`` as keyword arguments),
    and an edge of a fresh site; stopped at teardown."""
    stops: list[tuple[threading.Event, threading.Thread, Edge]] = []

    def start(store_url: str, **overrides: Any) -> tuple[IngestWorker, Edge]:
        site = f"shop-{uuid.uuid4().hex[:8]}"
        settings = load_settings(
            overrides={
                "mqtt.url": mosquitto.url,
                "store.url": store_url,
                "cloud.client_id": f"cloud-{site}",
                "cloud.group": f"g-{site}",
                "cloud.flush_interval_s": 0.1,
                "cloud.buffer_dir": str(tmp_path / "buffers"),
                **overrides,
            }
        )
        worker = IngestWorker(settings, open_store(store_url))
        worker.start(timeout=5)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        edge = Edge(mosquitto.url, site)
        stops.append((stop, thread, edge))
        return worker, edge

    yield start
    for stop, thread, edge in stops:
        stop.set()
        thread.join(15)
        edge.client.close(1)


# -- 400 partial write -------------------------------------------------------------------


def test_a_partial_write_keeps_97_good_points_and_isolates_exactly_the_3_bad(
    influxdb: Influxd, influx_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    influxdb.write(influx_db, CONFLICT.format(site="shop1"))
    store = InfluxStore("127.0.0.1", influxdb.port, influx_db)
    writes = 0
    request = store._request

    def counting(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        writes += path == "/write"
        return request(method, path, *args, **kwargs)

    monkeypatch.setattr(store, "_request", counting)
    batch = [reading(f"good{i % 7}", T0 + 1 + i) for i in range(97)]
    batch[10:10] = [reading("bad1", T0 + 500, "door")]
    batch[50:50] = [reading("bad2", T0 + 501, "door")]
    batch[90:90] = [reading("bad3", T0 + 502, "door")]

    with pytest.raises(PartialWriteError) as raised:
        store.write_readings("shop1", batch)

    refused = sorted(line.split(",")[1] for line, _ in raised.value.rejected)
    print(f"100 points, 3 bad: {writes} write requests, refused {refused}")
    assert refused == ["device=bad1", "device=bad2", "device=bad3"]
    assert all("conflict" in why for _, why in raised.value.rejected)
    assert store.count_readings("shop1") == 97
    assert writes <= 1 + 2 * 3 * 7  # bisection: 1 + 2·k·⌈log2 n⌉, never a loop
    store.close()


def test_the_worker_dead_letters_refused_points_and_acknowledges_the_rest(
    influxdb: Influxd, influx_db: str, ingest: Callable[[str], tuple[IngestWorker, Edge]]
) -> None:
    worker, edge = ingest(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    influxdb.write(influx_db, CONFLICT.format(site=edge.site))
    batch = [reading(f"good{i % 7}", T0 + 1 + i) for i in range(99)]
    batch.append(reading("bad1", T0 + 500, "door"))

    edge.ship(1, batch)

    assert edge.acked(timeout=10) == {1}
    store = open_store(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    letters = store.query_dead_letters(edge.site, 0)
    print(f"refused: {[(d.reason, d.payload[:40]) for d in letters]}")
    assert [d.reason for d in letters] == ["store_rejected"]
    assert "device=bad1" in letters[0].payload
    assert store.count_readings(edge.site) == 99
    assert worker.counters.store_rejected == 1
    store.close()


# -- 413 ---------------------------------------------------------------------------------


def test_5000_points_over_a_200kb_body_limit_are_all_stored(
    influxd_factory: Callable[..., Influxd],
) -> None:
    server = influxd_factory(config_overrides={"http": {"max-body-size": 200_000}})
    store = InfluxStore("127.0.0.1", server.port, "small")
    batch = [reading(f"fridge{i % 50}", T0 + i) for i in range(5000)]  # ~390 kB of lines

    store.write_readings("shop1", batch)

    assert store.count_readings("shop1") == 5000
    store.close()


# -- 429 / 503: a fake InfluxDB ----------------------------------------------------------


class FakeInflux:
    """Answers /write with ``answer(n)`` for the n-th write (status, headers); keeps 204'd lines."""

    def __init__(self, answer: Callable[[int], tuple[int, dict[str, str]]]) -> None:
        self.answer = answer
        self.lines: set[str] = set()
        self.writes: list[tuple[float, int]] = []  # (monotonic, status)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.startswith("/query"):
                    self._send(200, {}, b'{"results":[{"statement_id":0}]}')
                    return
                status, headers = fake.answer(len(fake.writes))
                fake.writes.append((time.monotonic(), status))
                if status == 204:
                    fake.lines.update(x for x in body.decode().split("\n") if x.startswith("readings,"))
                self._send(status, headers, b"" if status == 204 else b'{"error":"busy"}')

            def do_GET(self) -> None:  # noqa: N802
                self._send(204, {}, b"")

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_influx() -> Iterator[Callable[..., FakeInflux]]:
    made: list[FakeInflux] = []

    def make(answer: Callable[[int], tuple[int, dict[str, str]]]) -> FakeInflux:
        made.append(FakeInflux(answer))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


def test_a_429_carries_its_retry_after_to_the_caller(fake_influx: Callable[..., FakeInflux]) -> None:
    fake = fake_influx(lambda n: (429, {"Retry-After": "7"}))
    store = InfluxStore("127.0.0.1", fake.port, "edgepipe")

    with pytest.raises(StoreUnavailable) as raised:
        store.write_readings("shop1", [reading("fridge1", T0)])

    assert raised.value.retry_after == 7.0
    store.close()


def test_the_worker_waits_as_long_as_retry_after_says(
    fake_influx: Callable[..., FakeInflux], ingest: Callable[[str], tuple[IngestWorker, Edge]]
) -> None:
    fake = fake_influx(lambda n: (429, {"Retry-After": "2"}) if n == 0 else (204, {}))
    worker, edge = ingest(f"influxdb://127.0.0.1:{fake.port}/edgepipe")

    edge.ship(1, [reading("fridge1", T0 + i) for i in range(10)])

    assert edge.acked(timeout=5) == {1}  # buffered on disk, so acknowledged at once
    deadline = time.monotonic() + 10
    while len(fake.lines) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    (first, _), (second, _) = fake.writes[0], fake.writes[1]
    print(f"429 Retry-After 2: next attempt after {second - first:.2f} s")
    assert second - first >= 1.9  # the default first backoff is 0.5 s
    assert len(fake.lines) == 10


def test_503_for_6s_is_retried_until_it_passes_and_loses_nothing(
    fake_influx: Callable[..., FakeInflux], ingest: Callable[[str], tuple[IngestWorker, Edge]]
) -> None:
    until = time.monotonic() + 6
    fake = fake_influx(lambda n: (503, {}) if time.monotonic() < until else (204, {}))
    worker, edge = ingest(f"influxdb://127.0.0.1:{fake.port}/edgepipe")

    for seq in range(1, 6):
        edge.ship(seq, [reading(f"fridge{seq}", T0 + i) for i in range(20)])
    acked: set[int] = set()
    deadline = time.monotonic() + 10
    while acked != {1, 2, 3, 4, 5} and time.monotonic() < deadline:
        acked |= edge.acked(timeout=1)
    deadline = time.monotonic() + 30
    while len(fake.lines) < 100 and time.monotonic() < deadline:
        time.sleep(0.1)

    refused = sum(1 for _, status in fake.writes if status == 503)
    print(f"503 for 6 s: {refused} refused attempts, then {len(fake.lines)} lines stored")
    assert acked == {1, 2, 3, 4, 5}
    assert refused >= 4 and len(fake.lines) == 100
    assert worker.counters.store_errors["unavailable"] == refused
    # The buffered item is removed just after its write is answered: wait for that, bounded.
    assert wait_until(lambda: worker.buffer.items == 0, 10), worker.buffer.items


# -- 401: an alarm, buffering, nothing lost ----------------------------------------------


def _admin(server: Influxd, q: str) -> None:
    http = urllib3.PoolManager()
    params = urlencode({"q": q, "u": "admin", "p": "right"})
    resp = http.request("POST", f"http://127.0.0.1:{server.port}/query?{params}")
    assert resp.status == 200, resp.data


def test_a_401_raises_the_alarm_keeps_buffering_and_loses_nothing_once_fixed(
    influxd_factory: Callable[..., Influxd],
    ingest: Callable[[str], tuple[IngestWorker, Edge]],
) -> None:
    server = influxd_factory(config_overrides={"http": {"auth-enabled": True}})
    server.query("CREATE USER admin WITH PASSWORD 'right' WITH ALL PRIVILEGES")
    _admin(server, 'CREATE DATABASE "edgepipe"')
    worker, edge = ingest(f"influxdb://writer:pw@127.0.0.1:{server.port}/edgepipe")

    for seq in range(1, 4):
        edge.ship(seq, [reading(f"fridge{seq}", T0 + i) for i in range(10)])
    acked: set[int] = set()
    deadline = time.monotonic() + 10
    while acked != {1, 2, 3} and time.monotonic() < deadline:
        acked |= edge.acked(timeout=1)
    health = worker._health("online")
    print(f"401: alarm {worker.config_alarm[:60]!r}, buffer items {worker.buffer.items}")
    assert acked == {1, 2, 3}  # durably buffered, so acknowledged
    assert worker.config_alarm and health.gauges["store_config_error"] == 1.0
    assert health.counters["store_errors.config"] >= 1
    assert worker.buffer.items >= 1

    _admin(server, "CREATE USER writer WITH PASSWORD 'pw'")
    _admin(server, 'GRANT ALL ON "edgepipe" TO writer')
    deadline = time.monotonic() + 45  # the backoff doubles up to 30 s
    while worker.buffer.items and time.monotonic() < deadline:
        time.sleep(0.2)

    admin = open_store(f"influxdb://admin:right@127.0.0.1:{server.port}/edgepipe")
    assert admin.count_readings(edge.site) == 30
    assert worker.config_alarm == ""
    admin.close()


# -- least privilege: WRITE-only and READ-only users (auth-enabled influxd) ----------------


def test_a_write_only_worker_stores_and_acknowledges_without_create_database_rights(
    influx_auth_db: AuthDatabase, ingest: Callable[..., tuple[IngestWorker, Edge]]
) -> None:
    worker, edge = ingest(influx_auth_db.url(influx_auth_db.writer), **{"cloud.merge_models": False})

    edge.ship(1, [reading(f"fridge{i % 3}", T0 + i) for i in range(10)])

    assert edge.acked(timeout=10) == {1}
    reader = open_store(influx_auth_db.url(influx_auth_db.reader))
    assert reader.count_readings(edge.site) == 10
    assert worker.counters.store_errors == {} and worker.config_alarm == ""
    reader.close()


def test_a_write_only_merging_worker_raises_the_alarm_on_a_model_delta_and_goes_on_storing(
    influx_auth_db: AuthDatabase,
    ingest: Callable[..., tuple[IngestWorker, Edge]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker, edge = ingest(influx_auth_db.url(influx_auth_db.writer))  # merge_models: the default
    caplog.set_level(logging.ERROR, logger="pipeline.cloud.ingest")

    # Any delta makes the merger read its state back first, which needs READ.
    edge.client.publish(TOPICS.edge(edge.site, "model"), b'{"v": 1}', qos=1)
    edge.ship(1, [reading(f"fridge{i % 3}", T0 + i) for i in range(10)])

    assert edge.acked(timeout=10) == {1}  # the worker goes on
    health = worker._health("online")
    lines = [r.getMessage() for r in caplog.records if "writer_config_error" in r.getMessage()]
    print(f"alarm: {lines[:1]}")
    assert health.gauges["store_config_error"] == 1.0
    assert health.counters["store_errors.models"] == 1
    assert lines and "merge_models" in lines[0] and "requires READ" in lines[0]
    reader = open_store(influx_auth_db.url(influx_auth_db.reader))
    assert reader.count_readings(edge.site) == 10
    reader.close()


def max_attempts(elapsed_s: float) -> int:
    """Most store attempts the worker's backoff allows in ``elapsed_s`` (shortest jittered waits)."""
    attempts, waited, wait = 1, 0.0, MIN_BACKOFF_S * (1 - JITTER)
    while waited + wait <= elapsed_s:
        attempts, waited, wait = attempts + 1, waited + wait, min(wait * 2, MAX_BACKOFF_S)
    return attempts


def test_a_read_only_writer_raises_the_alarm_retries_at_the_backoff_pace_and_loses_nothing_once_granted(
    influx_auth_db: AuthDatabase,
    ingest: Callable[..., tuple[IngestWorker, Edge]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker, edge = ingest(influx_auth_db.url(influx_auth_db.reader))
    caplog.set_level(logging.ERROR, logger="pipeline.cloud.ingest")
    began = time.monotonic()

    acked: set[int] = set()
    for seq in range(1, 31):
        edge.ship(seq, [reading(f"fridge{seq}", T0 + i) for i in range(10)])
        acked |= edge.acked(timeout=0.2)
    deadline = time.monotonic() + 20
    while acked != set(range(1, 31)) and time.monotonic() < deadline:
        acked |= edge.acked(timeout=1)
    attempts = worker.counters.store_errors["config"]
    allowed = max_attempts(time.monotonic() - began)
    lines = [r.getMessage() for r in caplog.records if "writer_config_error" in r.getMessage()]
    print(f"READ-only writer: {attempts} refused attempts (backoff allows {allowed}) for "
          f"{worker.counters.messages} messages; log: {lines[:1]}")
    assert acked == set(range(1, 31))  # durably buffered, so acknowledged
    assert 1 <= attempts <= allowed  # the backoff's pace, not one attempt per batch
    assert worker._health("online").gauges["store_config_error"] == 1.0
    assert lines and "403" in lines[0] and "not authorized to write" in lines[0]

    # GRANT replaces a user's privilege on a database: READ becomes ALL (READ and WRITE).
    influx_auth_db.server.query(f'GRANT ALL ON "{influx_auth_db.name}" TO "{influx_auth_db.reader[0]}"')
    deadline = time.monotonic() + 2 * MAX_BACKOFF_S * (1 + JITTER)
    while worker.buffer.items and time.monotonic() < deadline:
        time.sleep(0.2)

    reader = open_store(influx_auth_db.url(influx_auth_db.reader))
    assert reader.count_readings(edge.site) == 300
    assert worker.config_alarm == ""
    reader.close()


def test_a_merger_that_could_not_read_its_state_reads_it_again_before_merging(
    influx_auth_db: AuthDatabase,
) -> None:
    admin = influx_auth_db.server
    name = influx_auth_db.writer[0]
    stored = MergedModel(v=1, kind="soil_probe", version=5, created_ms=T0, sites=["farm"], metrics={})
    writer = open_store(influx_auth_db.url(influx_auth_db.writer))
    writer.write_merged_model(
        MergedModelRecord("soil_probe", 5, T0, 0, ("farm",), encode_model(stored).decode())
    )
    merger = ModelMerger(load_settings(), writer, lambda topic, body: None)

    with pytest.raises(StoreConfigError, match="requires READ"):
        merger.handle("farm", b"{}")  # WRITE only: it cannot read its state
    admin.query(f'GRANT ALL ON "{influx_auth_db.name}" TO "{name}"')
    with pytest.raises(ProtocolError):
        merger.handle("farm", b"{}")  # now it reads it, then refuses the bad delta

    print(f"state after the second delta: {merger.kinds}")
    assert merger.kinds["soil_probe"].version == 5  # it goes on from version 5, not from 0
    writer.close()


# -- a full disk buffer -------------------------------------------------------------------


def test_a_full_disk_buffer_leaves_messages_unacknowledged_until_the_store_takes_them(
    fake_influx: Callable[..., FakeInflux], ingest: Callable[..., tuple[IngestWorker, Edge]]
) -> None:
    up = threading.Event()
    fake = fake_influx(lambda n: (204, {}) if up.is_set() else (503, {}))
    worker, edge = ingest(
        f"influxdb://127.0.0.1:{fake.port}/edgepipe", **{"cloud.buffer_mb": 0.002}  # ~2 kB
    )

    acked: set[int] = set()
    for seq in range(1, 6):
        edge.ship(seq, [reading(f"fridge{seq}", T0 + i) for i in range(10)])
        acked |= edge.acked(timeout=0.5)
    deadline = time.monotonic() + 20
    while not worker.counters.buffer_full and time.monotonic() < deadline:
        acked |= edge.acked(timeout=0.2)
    refused = worker.counters.buffer_full
    acked_while_down = set(acked)

    up.set()
    deadline = time.monotonic() + 60
    while acked != set(range(1, 6)) and time.monotonic() < deadline:
        acked |= edge.acked(timeout=1)
    deadline = time.monotonic() + 30
    while len(fake.lines) < 50 and time.monotonic() < deadline:
        time.sleep(0.1)

    print(f"buffer full {refused} times; acked while down {sorted(acked_while_down)}, "
          f"then {sorted(acked)}; {len(fake.lines)} lines stored")
    assert refused >= 1
    assert acked_while_down != set(range(1, 6))  # what did not fit stayed unacknowledged
    assert acked == set(range(1, 6)) and len(fake.lines) == 50
