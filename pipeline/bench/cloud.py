"""``cloud.points_per_s``: the cloud's InfluxDB writer against plain POSTs of the same lines.

Both write the same readings, in the same 5,000-line requests (``cloud.flush_points``), to
a private ``influxd`` on a loopback port, each run into a fresh database so that neither
overwrites points the other wrote. The gap is what ``InfluxStore`` adds (building and
checking line protocol, its error handling) over the HTTP round trips themselves.
A point is one reading: one line of line protocol with one field per metric.

``cloud.worker_points_per_s`` is the whole worker, as deployed: the same readings as
``delta-zstd`` batches of 500 (what an edge ships) published to a private Mosquitto, and
one ``IngestWorker`` receiving, decoding, writing to InfluxDB and acknowledging them; from
the first publish to the last point stored.

``cloud.details.cpu_us_per_point`` says where the CPU went in those timed runs (medians,
µs per point): influxd's during the raw POSTs, and this process's (the worker's threads),
influxd's and Mosquitto's during the worker runs. On a 2-core machine the worker's ratio to
the raw POSTs cannot exceed what those sums allow, so they tell a CPU-bound run from a
stalled one.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import urllib3

from pipeline.bench.common import ratio, summarise
from pipeline.bench.stream import Stream
from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import open_store
from pipeline.cloud.store.influx import reading_lines
from pipeline.config import load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import SCHEMA_VERSION, Batch, Reading, Topics, encode_batch
from pipeline.protocol.batch_codec import DELTA_ZSTD
from pipeline.services import Influxd, Mosquitto

CHUNK = 5000
EDGE_BATCH = 500  # edge.batch_max_readings
SITE = "farm"


class CpuMeter:
    """CPU seconds used so far by this process and by child services (Linux ``/proc``)."""

    def __init__(self, services: dict[str, int]) -> None:
        self.services = services
        self.used: dict[str, list[float]] = defaultdict(list)  # name -> µs per point, per run
        self._tick = os.sysconf("SC_CLK_TCK")

    def now(self) -> dict[str, float]:
        cpu = {"bench_process": time.process_time()}
        for name, pid in self.services.items():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu[name] = (int(fields[11]) + int(fields[12])) / self._tick
        return cpu

    def add(self, run: str, before: dict[str, float], points: int) -> None:
        if points <= 0:  # a plan too small for one whole flush measures nothing
            return
        after = self.now()
        for name, seconds in after.items():
            if name in before:
                self.used[f"{run}.{name}"].append((seconds - before[name]) / points * 1e6)

    def medians(self) -> dict[str, float]:
        return {key: round(statistics.median(v), 2) for key, v in sorted(self.used.items())}


def bench_cloud(workdir: Path, stream: Stream, repeats: int, echo: Any) -> dict[str, Any]:
    """Write ``stream``'s readings ``repeats`` times through ``InfluxStore`` and as raw POSTs."""
    decoder = msgspec.json.Decoder(Reading)
    readings = [decoder.decode(p) for p in stream.payloads]
    chunks = [readings[i : i + CHUNK] for i in range(0, len(readings), CHUNK)]
    bodies = ["\n".join(reading_lines(SITE, chunk)).encode() for chunk in chunks]
    influx = Influxd(workdir / "influxd")
    influx.start()
    broker = Mosquitto(workdir / "mosquitto-cloud", max_queued_messages=1_000_000)
    broker.start()
    # Whole flushes only: a last partial one would wait cloud.flush_interval_s for more.
    whole = len(readings) // CHUNK * CHUNK
    batches = [
        encode_batch(Batch(SCHEMA_VERSION, SITE, seq, readings[i : i + EDGE_BATCH]), DELTA_ZSTD)
        for seq, i in enumerate(range(0, whole, EDGE_BATCH), start=1)
    ]
    store_rates: list[float] = []
    raw_rates: list[float] = []
    worker_rates: list[float] = []
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1", influx.port, maxsize=1, timeout=urllib3.Timeout(connect=5, read=60), retries=False
    )
    cpu = CpuMeter({"influxd": influx.pid, "mosquitto": broker.pid})
    try:
        for r in range(repeats):
            # Alternate which goes first, so that neither always meets influxd's compactions.
            for which in ("store", "raw") if r % 2 == 0 else ("raw", "store"):
                if which == "store":
                    store_rates.append(_store_run(influx.port, f"bench_store_{r}", chunks))
                else:
                    raw_rates.append(_raw_run(influx, pool, f"bench_raw_{r}", bodies, len(readings), cpu))
            worker_rates.append(
                _worker_run(workdir, broker.url, influx.port, f"bench_worker_{r}", batches, whole, cpu)
            )
            echo(
                f"  round {r + 1}/{repeats} store {store_rates[-1]:>10,.0f} points/s (raw POST "
                f"{raw_rates[-1]:,.0f}, whole worker over MQTT {worker_rates[-1]:,.0f})"
            )
    finally:
        pool.close()
        broker.stop()
        influx.stop()
    ours, raw, worker = summarise(store_rates), summarise(raw_rates), summarise(worker_rates)
    return {
        "cloud.points_per_s": ours,
        "cloud.raw_post_points_per_s": raw,
        "cloud.points_per_s_ratio_to_raw_post": ratio(ours, raw),
        "cloud.worker_points_per_s": worker,
        "cloud.worker_points_per_s_ratio_to_raw_post": ratio(worker, raw),
        "cloud.details": {
            "points_per_run": len(readings),
            "points_per_request": CHUNK,
            "line_bytes_per_point": sum(len(b) for b in bodies) / len(readings),
            "worker_points_per_run": whole,
            "worker_batches": f"{len(batches)} delta-zstd batches of {EDGE_BATCH}, QoS 1, over MQTT 5",
            "store": "InfluxStore (pipeline.cloud.store.open_store), InfluxDB 1.x on loopback",
            "cpu_us_per_point": cpu.medians(),
        },
    }


def _store_run(port: int, database: str, chunks: list[list[Reading]]) -> float:
    """Points/s through ``InfluxStore.write_readings``; checks that all were stored."""
    n = sum(len(c) for c in chunks)
    store = open_store(f"influxdb://127.0.0.1:{port}/{database}")
    try:
        started = time.perf_counter()
        for chunk in chunks:
            store.write_readings(SITE, chunk)
        rate = n / (time.perf_counter() - started)
        stored = store.count_readings(SITE)
    finally:
        store.close()
    if stored != n:
        raise RuntimeError(f"InfluxStore into {database}: {stored} readings stored of {n}")
    return rate


def _raw_run(
    influx: Influxd,
    pool: urllib3.HTTPConnectionPool,
    database: str,
    bodies: list[bytes],
    n: int,
    cpu: CpuMeter | None = None,
) -> float:
    """Points/s of the same line protocol POSTed as it is: the HTTP and influxd floor."""
    influx.create_database(database)
    before = cpu.now() if cpu else {}
    started = time.perf_counter()
    for body in bodies:
        resp = pool.request("POST", f"/write?db={database}&precision=ms", body=body)
        if resp.status != 204:
            raise RuntimeError(f"raw POST answered HTTP {resp.status}: {resp.data[:200]!r}")
    rate = n / (time.perf_counter() - started)
    if cpu:
        cpu.add("raw_post", before, n)
    return rate


def _worker_run(
    workdir: Path,
    broker_url: str,
    port: int,
    database: str,
    batches: list[bytes],
    n: int,
    cpu: CpuMeter | None = None,
) -> float:
    """Points/s through one ``IngestWorker`` draining ``batches`` queued for it by the broker.

    The batches are published while the worker's session is subscribed but offline, so that
    the publisher does not share the worker's process while it is timed: the clock runs from
    the worker's start (connect, subscribe, the broker sends the queue) to the last point
    stored.
    """
    name = database.replace("_", "-")
    settings = load_settings(
        overrides={
            "mqtt.url": broker_url,
            "store.url": f"influxdb://127.0.0.1:{port}/{database}",
            "cloud.client_id": f"bench-{name}",
            "cloud.group": f"bench-{name}",  # not an earlier run's group
            "cloud.buffer_dir": str(workdir / "cloud-buffer"),
        }
    )
    store = open_store(settings.store.url)
    try:
        subscriber = IngestWorker(settings, store)
        subscriber.start(timeout=10)  # the session and its subscriptions, kept by the broker
        subscriber.client.close(timeout=2)
        publisher = MqttClient(broker_url, client_id=f"bench-edge-{name}")
        publisher.connect(timeout=10)
        topic = Topics().edge(SITE, "batch")
        for body in batches:
            publisher.publish(topic, body, qos=1)
        if not publisher.flush(timeout=60):
            raise RuntimeError("the broker did not take every batch")
        publisher.close(timeout=2)
        worker = IngestWorker(settings, store)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        before = cpu.now() if cpu else {}
        started = time.perf_counter()
        worker.start(timeout=10)
        thread.start()
        try:
            deadline = time.monotonic() + 120 + n / 10_000
            while worker.counters.readings < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker stored {worker.counters.readings} of {n} readings in time")
                time.sleep(0.002)
            rate = n / (time.perf_counter() - started)
            if cpu:
                cpu.add("worker", before, n)
        finally:
            stop.set()
            thread.join(30)
            _end_session(broker_url, settings.cloud.client_id)
    finally:
        store.close()
    return rate


def _end_session(broker_url: str, client_id: str) -> None:
    """Delete a worker's durable session (a clean start with its client id).

    Why: a session left behind stays subscribed in its own shared group, so the broker
    would queue every later round's batches for it too and save them on every change:
    each round would pay more broker time than the one before.
    """
    client = MqttClient(broker_url, client_id=client_id)  # session expiry 0: a clean start
    client.connect(timeout=10)
    client.close(timeout=2)
