"""The cloud bench measures each round on its own: a worker round leaves no broker session.

Real Mosquitto and InfluxDB (the session fixtures). A session left behind by one round
stays subscribed in its own shared group, so the broker queued every later round's batches
for it as well and saved them on every change: the broker's share of each round grew with
the number of rounds before it (1.5 to 7 µs of mosquitto CPU per point over 6 rounds).
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

from pipeline.bench.cloud import EDGE_BATCH, SITE, _end_session, _worker_run
from pipeline.mqtt import MqttClient
from pipeline.protocol import SCHEMA_VERSION, Batch, Reading, Topics, encode_batch
from pipeline.protocol.batch_codec import DELTA_ZSTD
from pipeline.services import Influxd, Mosquitto

TOPICS = Topics()
MARKER = "bench-test/marker"


def batches(n: int) -> list[bytes]:
    readings = [
        Reading(v=1, device=f"d{i % 5}", kind="soil_probe", ts=1_700_000_000_000 + i, seq=i,
                metrics={"moisture": float(i % 50)})
        for i in range(n)
    ]
    return [
        encode_batch(Batch(SCHEMA_VERSION, SITE, seq, readings[i : i + EDGE_BATCH]), DELTA_ZSTD)
        for seq, i in enumerate(range(0, n, EDGE_BATCH), start=1)
    ]


def test_a_worker_round_leaves_no_session_that_queues_the_next_rounds_batches(
    mosquitto: Mosquitto, influxdb: Influxd, tmp_path: Path
) -> None:
    frames = batches(2 * EDGE_BATCH)
    rate = _worker_run(tmp_path, mosquitto.url, influxdb.port, "bench_round_0", frames, 2 * EDGE_BATCH)
    worker_id = "bench-bench-round-0"

    # The next round's edge publishes: a session left behind would get these queued.
    edge = MqttClient(mosquitto.url)
    edge.connect(timeout=10)
    edge.publish(TOPICS.edge(SITE, "batch"), frames[0], qos=1)
    assert edge.flush(timeout=10)
    # Resume the worker's session if it still exists: its queue comes first, then the marker.
    probe = MqttClient(mosquitto.url, client_id=worker_id, session_expiry=3600)
    probe.connect(timeout=10)
    probe.subscribe(MARKER, qos=1)
    topics: list[str] = []
    deadline = time.monotonic() + 20
    while MARKER not in topics and time.monotonic() < deadline:
        edge.publish(MARKER, b"", qos=1)  # again until the subscription is in place
        try:
            topics.append(probe.messages.get(timeout=0.5).topic)
        except queue.Empty:
            continue
    probe.close(timeout=2)
    edge.close(timeout=2)
    _end_session(mosquitto.url, worker_id)

    print(f"round at {rate:,.0f} points/s; the worker's id then received {topics}")
    assert MARKER in topics
    assert TOPICS.edge(SITE, "batch") not in topics
