"""``cloud.points_per_s``: the cloud's InfluxDB writer against plain POSTs of the same lines.

Both write the same readings, in the same 5,000-line requests (``cloud.flush_points``), to
a private ``influxd`` on a loopback port, each run into a fresh database so that neither
overwrites points the other wrote. The gap is what ``InfluxStore`` adds (building and
checking line protocol, its error handling) over the HTTP round trips themselves.
A point is one reading: one line of line protocol with one field per metric.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import urllib3

from pipeline.bench.common import ratio, summarise
from pipeline.bench.stream import Stream
from pipeline.cloud.store import open_store
from pipeline.cloud.store.influx import reading_lines
from pipeline.protocol import Reading
from pipeline.services import Influxd

CHUNK = 5000
SITE = "farm"


def bench_cloud(workdir: Path, stream: Stream, repeats: int, echo: Any) -> dict[str, Any]:
    """Write ``stream``'s readings ``repeats`` times through ``InfluxStore`` and as raw POSTs."""
    decoder = msgspec.json.Decoder(Reading)
    readings = [decoder.decode(p) for p in stream.payloads]
    chunks = [readings[i : i + CHUNK] for i in range(0, len(readings), CHUNK)]
    bodies = ["\n".join(reading_lines(SITE, chunk)).encode() for chunk in chunks]
    influx = Influxd(workdir / "influxd")
    influx.start()
    store_rates: list[float] = []
    raw_rates: list[float] = []
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1", influx.port, maxsize=1, timeout=urllib3.Timeout(connect=5, read=60), retries=False
    )
    try:
        for r in range(repeats):
            # Alternate which goes first, so that neither always meets influxd's compactions.
            for which in ("store", "raw") if r % 2 == 0 else ("raw", "store"):
                if which == "store":
                    store_rates.append(_store_run(influx.port, f"bench_store_{r}", chunks))
                else:
                    raw_rates.append(_raw_run(influx, pool, f"bench_raw_{r}", bodies, len(readings)))
            echo(f"  round {r + 1}/{repeats} store {store_rates[-1]:>10,.0f} points/s (raw POST {raw_rates[-1]:,.0f})")
    finally:
        pool.close()
        influx.stop()
    ours, raw = summarise(store_rates), summarise(raw_rates)
    return {
        "cloud.points_per_s": ours,
        "cloud.raw_post_points_per_s": raw,
        "cloud.points_per_s_ratio_to_raw_post": ratio(ours, raw),
        "cloud.details": {
            "points_per_run": len(readings),
            "points_per_request": CHUNK,
            "line_bytes_per_point": sum(len(b) for b in bodies) / len(readings),
            "store": "InfluxStore (pipeline.cloud.store.open_store), InfluxDB 1.x on loopback",
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


def _raw_run(influx: Influxd, pool: urllib3.HTTPConnectionPool, database: str, bodies: list[bytes], n: int) -> float:
    """Points/s of the same line protocol POSTed as it is: the HTTP and influxd floor."""
    influx.create_database(database)
    started = time.perf_counter()
    for body in bodies:
        resp = pool.request("POST", f"/write?db={database}&precision=ms", body=body)
        if resp.status != 204:
            raise RuntimeError(f"raw POST answered HTTP {resp.status}: {resp.data[:200]!r}")
    return n / (time.perf_counter() - started)
