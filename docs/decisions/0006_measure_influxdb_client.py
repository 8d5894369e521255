"""The measurement behind decision 0006: influxdb-client's writes against our InfluxStore.

InfluxDB 1.6.7, the only server installable here, has no ``/api/v2/write``; so both
clients write through one small loopback proxy that maps ``/api/v2/write?bucket=B`` to
``/write?db=B`` (and passes everything else through), into a real influxd. Same readings
(the bench's cloud stream, 5,000 per request), each run into a fresh database, the order
rotated every round; every run checks that all points arrived. Three writers:

* ``InfluxStore``: ours (``write_readings``: our line protocol, one POST per 5,000);
* ``client+lines``: influxdb-client's ``WriteApi`` (SYNCHRONOUS) given our line protocol;
* ``client+Point``: influxdb-client building each point with its ``Point`` API.

Run (influxdb-client is a dependency, decision 0006)::

    python docs/decisions/0006_measure_influxdb_client.py 7
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import msgspec
import urllib3
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from pipeline.bench import Plan
from pipeline.bench.stream import sim_stream
from pipeline.cloud.store import open_store
from pipeline.cloud.store.influx import reading_lines
from pipeline.protocol import Reading
from pipeline.services import Influxd

CHUNK = 5000
SITE = "farm"
WRITERS = ("InfluxStore", "client+lines", "client+Point")


def start_proxy(influx_port: int) -> int:
    """A v2 write endpoint in front of influxd 1.x: rewrites the path, forwards the rest."""
    pool = urllib3.HTTPConnectionPool("127.0.0.1", influx_port, maxsize=4, retries=False)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            url = urlsplit(self.path)
            path, query = url.path, url.query
            if path == "/api/v2/write":
                q = parse_qs(query)
                query = urlencode({"db": q["bucket"][0], "precision": q.get("precision", ["ns"])[0]})
                path = "/write"
            resp = pool.request("POST", f"{path}?{query}", body=body or None)
            self.send_response(resp.status)
            self.send_header("Content-Length", str(len(resp.data)))
            self.end_headers()
            self.wfile.write(resp.data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port: int = server.server_address[1]
    return port


def points(readings: list[Reading]) -> list[Point]:
    out = []
    for r in readings:
        p = Point("readings").tag("device", r.device).tag("kind", r.kind).tag("site", SITE)
        for name, value in r.metrics.items():
            p = p.field(name, float(value))
        out.append(p.field("seq", int(r.seq)).time(r.ts, WritePrecision.MS))
    return out


def run(writer: str, port: int, influx: Influxd, db: str, chunks: list[list[Reading]]) -> float:
    """Points/s of one writer into a fresh database; checks every point arrived."""
    n = sum(len(c) for c in chunks)
    influx.create_database(db)
    if writer == "InfluxStore":
        store = open_store(f"influxdb://127.0.0.1:{port}/{db}")
        started = time.perf_counter()
        for chunk in chunks:
            store.write_readings(SITE, chunk)
        rate = n / (time.perf_counter() - started)
        store.close()
    else:
        client = InfluxDBClient(url=f"http://127.0.0.1:{port}", token="unused", org="-", timeout=60_000)
        api = client.write_api(write_options=SYNCHRONOUS)
        started = time.perf_counter()
        for chunk in chunks:
            record: Any = reading_lines(SITE, chunk) if writer == "client+lines" else points(chunk)
            api.write(bucket=db, record=record, write_precision=WritePrecision.MS)
        rate = n / (time.perf_counter() - started)
        client.close()
    answer = influx.query('SELECT COUNT("seq") FROM "readings"', db=db)
    stored = answer["results"][0]["series"][0]["values"][0][1]
    if stored != n:
        raise RuntimeError(f"{writer}: {stored} of {n} points stored")
    return rate


def main(repeats: int) -> None:
    plan = Plan.quick()
    decoder = msgspec.json.Decoder(Reading)
    readings = [decoder.decode(p) for p in sim_stream(plan.cloud_devices, plan.cloud_ticks).payloads]
    chunks = [readings[i : i + CHUNK] for i in range(0, len(readings), CHUNK)]
    rates: dict[str, list[float]] = {w: [] for w in WRITERS}
    with tempfile.TemporaryDirectory() as tmp, Influxd(Path(tmp)) as influx:
        port = start_proxy(influx.port)
        for r in range(repeats):
            for writer in WRITERS[r % 3 :] + WRITERS[: r % 3]:
                rates[writer].append(run(writer, port, influx, f"m{r}_{WRITERS.index(writer)}", chunks))
            print("  ".join(f"{w} {rates[w][-1]:,.0f}" for w in WRITERS), flush=True)
    base = statistics.median(rates["InfluxStore"])
    print(f"{len(readings):,} readings per run, {repeats} runs each")
    for w in WRITERS:
        m = statistics.median(rates[w])
        print(f"{w:14} median {m:>9,.0f} points/s (min {min(rates[w]):,.0f}, max {max(rates[w]):,.0f}), "
              f"ratio to InfluxStore {m / base:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
