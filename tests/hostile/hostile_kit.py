"""Helpers of the hostile-input tests: the running site, and the S7 payload catalogue."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waiting import GENEROUS_S, wait_until

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import open_store
from pipeline.config import load_settings
from pipeline.edge.node import EdgeNode
from pipeline.mqtt import MqttClient
from pipeline.protocol import DeadLetter, Topics, decode
from pipeline.services import Mosquitto

TOPICS = Topics()


@dataclass
class HostileSite:
    site: str
    broker: Mosquitto
    node: EdgeNode
    thread: threading.Thread
    dead_letters: MqttClient  # subscribed to the site's dead-letter topic
    attacker: MqttClient

    def letters(self, expected: int, timeout: float = GENEROUS_S) -> list[DeadLetter]:
        """Collect ``expected`` dead letters (fewer if ``timeout`` runs out)."""
        out: list[DeadLetter] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            try:
                message = self.dead_letters.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if message.topic == TOPICS.deadletter(self.site):  # not the node's health (the probe)
                out.append(decode(message.payload, DeadLetter))
        return out

    def wait_received(self, n: int, timeout: float = GENEROUS_S) -> bool:
        """True once the node has received ``n`` messages (any verdict), False after ``timeout``."""
        return wait_until(lambda: self.node.counters.received >= n, timeout)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def reading(device: str, ts: int, seq: int, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {"v": 1, "device": device, "kind": "fridge", "ts": ts, "seq": seq, "metrics": {"temp": 4.5}}
    body.update(changes)
    return body


def dump(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


BAD = "fridge-bad"  # the device id the malformed payloads claim (they never update its state)

# S7's 15 kinds: name -> (payload maker (i, now) -> bytes, expected reason). Kind 13, the
# duplicate, is made by the test itself (it must repeat an accepted reading).
KINDS: dict[str, tuple[Callable[[int, int], bytes], str]] = {
    "invalid_json": (lambda i, now: b'{"v":1,"device":"fridge-bad","ts":' + str(i).encode(), "bad_json"),
    "non_utf8": (
        lambda i, now: b"\xff\xfe" + dump(reading(BAD, now, i))
        if i % 2
        else dump(reading(BAD, now, i)).replace(b'"fridge-bad"', b'"fridge-b\x80d"'),  # inside a string
        "not_utf8",
    ),
    "empty": (lambda i, now: b"", "empty"),
    "not_object": (lambda i, now: dump([reading(BAD, now, i)]) if i % 2 else b"42", "not_object"),
    "missing_field": (
        lambda i, now: dump({k: v for k, v in reading(BAD, now, i).items() if k != ("ts", "metrics", "kind")[i % 3]}),
        "missing_field",
    ),
    "wrong_type": (lambda i, now: dump(reading(BAD, now, i, metrics={"temp": "hot"})), "wrong_type"),
    "non_finite": (
        lambda i, now: dump(reading(BAD, now, i)).replace(b"4.5", (b"NaN", b"Infinity", b"-Infinity", b"1e999")[i % 4]),
        "non_finite",
    ),
    "oversize": (lambda i, now: dump(reading(BAD, now, i, note="x" * (2000 + 100 * i))), "too_large"),
    "deep_nesting": (lambda i, now: b'{"v":1,"x":' + b"[" * 60 + b"]" * 60 + b"}", "too_deep"),
    "unknown_device_kind": (lambda i, now: dump(reading(BAD, now, i, kind="toaster")), "unknown_kind"),
    "future_ts": (lambda i, now: dump(reading(BAD, now + 3_600_000 + i, i)), "future_ts"),
    "ancient_ts": (lambda i, now: dump(reading(BAD, now - 30 * 86_400_000 + i, i)), "stale_ts"),
    "topic_mismatch": (lambda i, now: dump(reading("fridge-other", now, i)), "topic_mismatch"),
    "unknown_version": (lambda i, now: dump(reading(BAD, now, i, v=2 + i % 3)), "unknown_version"),
}


def influx_values(influxdb: Any, db: str, q: str) -> list[list[Any]]:
    """Every row of every series an InfluxQL statement returns."""
    result = influxdb.query(q, db, epoch="ms")
    rows: list[list[Any]] = []
    for statement in result.get("results", []):
        for series in statement.get("series", []):
            rows += series.get("values", [])
    return rows


@contextmanager
def cloud_worker(site: str, broker: Mosquitto, store_url: str, workdir: Path) -> Iterator[IngestWorker]:
    """A running cloud worker writing to ``store_url``; stopped and its store closed after."""
    settings = load_settings(
        overrides={
            "mqtt.url": broker.url,
            "store.url": store_url,
            "cloud.client_id": f"cloud-{site}",
            "cloud.group": f"g-{site}",
            "cloud.flush_interval_s": 0.1,
            "cloud.buffer_dir": str(workdir / "cloud-buffer"),
        }
    )
    store = open_store(store_url)
    worker = IngestWorker(settings, store)
    worker.start(timeout=5)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(15)
        store.close()


@contextmanager
def hostile(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[HostileSite]:
    """A running edge node on its own broker, a spy on its dead-letter topic, an attacker's
    client (MQTT 3.1.1: RELIABILITY.md S6 explains why an attacker over v5 QoS 1 would stall
    on the broker's 0x95 PUBACK). Not a conftest.py fixture: see ``edgekit.stacks``."""
    broker = mosquitto_factory()
    site = f"retail-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        overrides={
            "mqtt.url": broker.url,
            "edge.site": site,
            "edge.state_dir": str(tmp_path / "state"),
            "aggregate.window_s": 1.0,
        }
    )
    node = EdgeNode(settings)
    node.start(timeout=5)
    stop = threading.Event()
    thread = threading.Thread(target=node.run, args=(stop,), daemon=True)
    thread.start()
    spy = MqttClient(broker.url)
    spy.connect(timeout=5)
    spy.subscribe(TOPICS.deadletter(site), qos=1)
    # The probe that both subscriptions hold: the node sent its first health after its own
    # SUBSCRIBEs, and the spy subscribes to that (retained) health after the dead letters, so
    # once the health reaches the spy, the broker had taken all three in order.
    spy.subscribe(TOPICS.edge(site, "health"), qos=1)
    try:
        spy.messages.get(timeout=GENEROUS_S)
    except queue.Empty:
        raise AssertionError(f"the node's health never reached the spy within {GENEROUS_S:g} s") from None
    attacker = MqttClient(broker.url, protocol="3.1.1", max_payload=32 * 2**20)
    attacker.connect(timeout=5)
    try:
        yield HostileSite(site, broker, node, thread, spy, attacker)
    finally:
        attacker.close(1)
        spy.close(1)
        stop.set()
        thread.join(15)
