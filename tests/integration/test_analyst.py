"""The fleet analyst over a real Mosquitto: aggregates in, one cloud alert out, shards split.

Aggregates are published as an edge node ships them (``AggregateBatch`` JSON on
``{site}/edge/agg``); the analyst runs as ``edgepipe analyst`` runs it (``AnalystRole``), on
a thread. Waits are bounded by a count and a deadline; nothing asserts on speed.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.analyst.role import AnalystRole, shard_of
from pipeline.cloud.store.sqlite import SQLiteStore
from pipeline.config import Settings, load_settings
from pipeline.mqtt import Message, MqttClient
from pipeline.protocol import AggregateBatch, Alert, Topics, decode, encode
from pipeline.services import Influxd, Mosquitto

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "analyst"))
from fleetkit import MINUTE_MS, T0, drift, window  # noqa: E402

WINDOWS = 360  # six hours of one-minute windows: warm-up, then the drift
DRIFT_AT = 320
DEADLINE_S = 120.0  # a busy machine: generous, and only an upper bound on waiting


def settings(url: str, root: str, tmp_path: Path, **extra: object) -> Settings:
    overrides: dict[str, object] = {
        "mqtt.url": url,
        "mqtt.topic_root": root,
        "analyst.client_id": f"analyst-{uuid.uuid4().hex[:8]}",
        "analyst.horizon": False,  # six hours hold no previous day: the peers are under test
        "store.url": f"sqlite:///{tmp_path / 'store.db'}",
    }
    overrides.update(extra)
    return load_settings(overrides=overrides)


@contextmanager
def running(role: AnalystRole) -> Iterator[AnalystRole]:
    role.start(timeout=10)
    stop = threading.Event()
    thread = threading.Thread(target=role.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield role
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the analyst did not stop within 15 s"


@contextmanager
def watching(url: str, topic_filter: str) -> Iterator[queue.Queue[Message]]:
    watcher = MqttClient(url, client_id=f"watch-{uuid.uuid4().hex[:8]}")
    watcher.connect(timeout=5)
    watcher.subscribe(topic_filter, qos=1)
    try:
        yield watcher.messages
    finally:
        watcher.close()


def publish_site(url: str, topics: Topics, site: str, first: int, last: int, drifting: str | None) -> int:
    """Windows ``first``..``last`` of twelve soil probes of ``site``, one batch per window."""
    offset = drift(drifting, DRIFT_AT, 0.1) if drifting else (lambda d, i: 0.0)
    publisher = MqttClient(url, client_id=f"edge-{uuid.uuid4().hex[:8]}")
    publisher.connect(timeout=5)
    sent = 0
    try:
        for i in range(first, last):
            aggs = window(i, site=site, offset=offset)
            batch = AggregateBatch(v=1, site=site, seq=i + 1, aggregates=aggs)
            publisher.publish(topics.edge(site, "agg"), encode(batch), qos=1)
            sent += len(aggs)
        assert publisher.flush(DEADLINE_S), "the broker did not take every batch"
    finally:
        publisher.close()
    return sent


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def drain(messages: queue.Queue[Message], expected: int) -> list[Alert]:
    """The alerts received, once at least ``expected`` arrived (bounded), and any more queued."""
    out: list[Alert] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(out) < expected and time.monotonic() < deadline:
        try:
            out.append(decode(messages.get(timeout=0.2).payload, Alert))
        except queue.Empty:
            continue
    while True:
        try:
            out.append(decode(messages.get(timeout=0.5).payload, Alert))
        except queue.Empty:
            return out


def first_raises(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.data.state == "raised" and a.data.alert_id.endswith(f".{a.data.reading_ts}")]


def test_a_drifting_probe_among_its_peers_gets_one_cloud_alert_on_its_topic(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    root = f"t-{uuid.uuid4().hex[:8]}"
    topics = Topics(root)
    site = "farm"
    role = AnalystRole(settings(mosquitto.url, root, tmp_path))
    with watching(mosquitto.url, topics.alerts(site)) as received, running(role):
        bad = MqttClient(mosquitto.url, client_id=f"bad-{uuid.uuid4().hex[:8]}")
        bad.connect(timeout=5)
        bad.publish(topics.edge(site, "agg"), b'{"v": 1, "site": "farm", "seq": 1, "aggregates": [{"oops": 1}]}', qos=1)
        bad.publish(topics.edge(site, "agg"), b"\xff\x00 not an aggregate", qos=1)
        assert bad.flush(10)
        bad.close()
        sent = publish_site(mosquitto.url, topics, site, 0, WINDOWS, drifting="p3")
        wait_for(lambda: role.analyst.counters.aggregates >= sent, "the analyst to read every aggregate")
        wait_for(lambda: sum(role.bad.values()) >= 2, "the malformed payloads to be counted")
        alerts = drain(received, role.published)

    raised = first_raises(alerts)
    assert [(a.data.device, a.data.source, a.source) for a in raised] == [("p3", "cloud", "edgepipe/farm/cloud")]
    assert raised[0].data.reading_ts > T0 + DRIFT_AT * MINUTE_MS
    assert sum(role.bad.values()) == 2  # counted with their reasons, and the analyst went on
    assert role.published == len(alerts)


def test_two_analysts_split_three_sites_with_no_duplicate_alert(mosquitto: Mosquitto, tmp_path: Path) -> None:
    root = f"t-{uuid.uuid4().hex[:8]}"
    topics = Topics(root)
    sites = ["farm", "retail", "city"]
    assert {shard_of(s, 2) for s in sites} == {0, 1}  # both analysts own something
    roles = [AnalystRole(settings(mosquitto.url, root, tmp_path / str(i), **{"analyst.shard": f"{i}/2"})) for i in (0, 1)]
    with watching(mosquitto.url, topics.alerts("+")) as received, running(roles[0]), running(roles[1]):
        sent = sum(publish_site(mosquitto.url, topics, site, 0, WINDOWS, drifting="p3") for site in sites)
        for role in roles:
            wait_for(lambda role=role: role.analyst.counters.aggregates + role.other_shard * 12 >= sent, "every aggregate")
        alerts = drain(received, roles[0].published + roles[1].published)

    raised = first_raises(alerts)
    assert sorted((a.data.site, a.data.device) for a in raised) == sorted((s, "p3") for s in sites)
    for i, role in enumerate(roles):
        owned = sorted(s for s in sites if shard_of(s, 2) == i)
        assert role.analyst.counters.aggregates == 12 * WINDOWS * len(owned)  # only its own sites


def test_a_restarted_analyst_rebuilds_from_the_store_and_raises_no_storm(mosquitto: Mosquitto, tmp_path: Path) -> None:
    root = f"t-{uuid.uuid4().hex[:8]}"
    topics = Topics(root)
    site = "farm"
    store_path = tmp_path / "store.db"
    store = SQLiteStore(store_path)
    offset = drift("p3", DRIFT_AT, 0.1)
    for i in range(0, WINDOWS):  # what the cloud workers stored before the restart
        store.write_aggregates(window(i, site=site, offset=offset))
    now = T0 + WINDOWS * MINUTE_MS
    role = AnalystRole(settings(mosquitto.url, root, tmp_path), store, now_ms=lambda: now)
    with watching(mosquitto.url, topics.alerts(site)) as received, running(role):
        assert role.restored == 12 * WINDOWS
        assert role.analyst.open_alerts == 1  # the drift's alert, raised before the restart, still open
        sent = publish_site(mosquitto.url, topics, site, WINDOWS, WINDOWS + 30, drifting="p3")
        wait_for(lambda: role.analyst.counters.aggregates >= 12 * WINDOWS + sent, "the live aggregates")
        alerts = drain(received, 0)
    store.close()

    assert first_raises(alerts) == []  # nothing raised again


def test_shard_of_is_stable_across_processes() -> None:
    """The split must not depend on the process (Python's str hash is salted per process)."""
    import subprocess

    code = "from pipeline.analyst.role import shard_of; print([shard_of(s, 7) for s in ('farm', 'retail', 'city', 'x-1')])"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout for _ in range(2)}
    assert outputs == {str([shard_of(s, 7) for s in ("farm", "retail", "city", "x-1")]) + "\n"}


def test_with_a_cloud_worker_and_influxdb_the_cloud_alert_is_stored_with_its_source_and_restores(
    mosquitto: Mosquitto, influxdb: Influxd, influx_db: str, tmp_path: Path
) -> None:
    """The deployed path: edge aggregates -> worker -> InfluxDB 1.6.7; analyst -> alert -> worker -> InfluxDB;
    then a second analyst starts from what InfluxDB holds and raises nothing again."""
    from pipeline.cloud.ingest import IngestWorker
    from pipeline.cloud.store import open_store

    root = f"t-{uuid.uuid4().hex[:8]}"
    topics = Topics(root)
    site = "farm"
    url = f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"
    worker_settings = load_settings(
        overrides={
            "mqtt.url": mosquitto.url,
            "mqtt.topic_root": root,
            "store.url": url,
            "cloud.client_id": f"cloud-{root}",
            "cloud.group": f"g-{root}",
            "cloud.flush_interval_s": 0.1,
            "cloud.buffer_dir": str(tmp_path / "buffer"),
        }
    )
    store = open_store(url)
    worker = IngestWorker(worker_settings, store)
    worker.start(timeout=10)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        role = AnalystRole(settings(mosquitto.url, root, tmp_path, **{"store.url": url}), open_store(url))
        with running(role):
            sent = publish_site(mosquitto.url, topics, site, 0, WINDOWS, drifting="p3")
            wait_for(lambda: role.analyst.counters.aggregates >= sent, "the analyst to read every aggregate")
            wait_for(
                lambda: any(a.source == "cloud" for a in store.query_alerts(site, 0)), "the cloud alert in InfluxDB"
            )
            wait_for(lambda: len(store.query_site_aggregates(site, 0, T0 + WINDOWS * MINUTE_MS)) >= sent, "every aggregate in InfluxDB")
        stored = [a for a in store.query_alerts(site, 0) if a.state == "raised"]
        assert {(a.device, a.source) for a in stored} == {("p3", "cloud")}

        later = AnalystRole(
            settings(mosquitto.url, root, tmp_path, **{"store.url": url, "analyst.client_id": f"again-{root}"}),
            open_store(url),
            now_ms=lambda: T0 + WINDOWS * MINUTE_MS,
        )
        later.restore()
        assert later.restored == sent
        assert later.analyst.open_alerts == 1  # the stored drift's alert is open again in its policy
        for r in (role, later):
            assert r.store is not None
            r.store.close()
    finally:
        stop.set()
        thread.join(15)
        store.close()
