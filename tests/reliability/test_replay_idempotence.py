"""R8: effectively once into the store: replaying every uplink message twice changes nothing.

A short clean run records every message the edge sent up (batches, aggregates, model deltas,
alerts) with a spy subscriber. After the store has settled and the node has stopped, the
whole history is published again, twice, to the running cloud worker. The store's content
(every aggregate's fields, every stored reading, every alert, the readings count) must hash
the same before and after; on InfluxDB the series cardinality must not change either (no
seq or UUID used as a tag).
"""

from __future__ import annotations

import hashlib
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgekit import METRIC, LedgerDevices, Stack, now_ms, running, settle, stacks, wait_for
from waiting import GENEROUS_S

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import Store
from pipeline.mqtt import Message, MqttClient
from pipeline.protocol import Health, Topics, decode
from pipeline.services import Influxd, Mosquitto


@pytest.fixture
def stack(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with stacks(mosquitto_factory, tmp_path) as make:
        yield make

TOPICS = Topics()
READINGS = 150  # per device: 3 s at the devices' 50 Hz


def uplink_history(spy: MqttClient, after_ms: int) -> list[Message]:
    """Every uplink message the spy received, up to the node's first health made after
    ``after_ms`` (the last one, sent as the node stops): the node sends that health after all
    its uplink on one connection and the broker keeps the order, so the history is whole."""
    history: list[Message] = []
    deadline = time.monotonic() + GENEROUS_S
    while time.monotonic() < deadline:
        try:
            message = spy.messages.get(timeout=0.2)
        except queue.Empty:
            continue
        if not message.topic.endswith("/health"):
            history.append(message)
        elif decode(message.payload, Health).ts > after_ms:
            return history
    raise AssertionError(f"no health after the first pass reached the spy within {GENEROUS_S:g} s")


def committed(worker: IngestWorker) -> bool:
    """Everything the worker has handled is written (or durably buffered) and acknowledged,
    and its disk buffer is drained into the store: the store shows all it ever will."""
    gauges = worker.health().gauges
    return gauges["pending_messages"] == 0 and gauges["buffer_items"] == 0


def snapshot(store: Store, site: str) -> tuple[str, int]:
    """SHA-256 over the site's stored content, and the number of rows hashed."""
    since, until = now_ms() - 3_600_000, now_ms() + 3_600_000
    rows: list[str] = []
    for device, kind in sorted(store.devices(site)):
        rows += [repr(a) for a in store.query_aggregates(site, device, METRIC, since, until)]
        rows += [repr(r) for r in store.query_readings(site, device, METRIC, since, until)]
        rows.append(f"{device} {kind}")
    rows += sorted(repr(a) for a in store.query_alerts(site, since, limit=100_000))
    rows.append(f"readings={store.count_readings(site)}")
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest(), len(rows)


@pytest.fixture(params=["sqlite", "influxdb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
    else:
        influxdb: Influxd = request.getfixturevalue("influxdb")
        yield f"influxdb://127.0.0.1:{influxdb.port}/{request.getfixturevalue('influx_db')}"


def cardinality(request: pytest.FixtureRequest, store_url: str) -> int | None:
    if not store_url.startswith("influxdb://"):
        return None
    influxdb: Influxd = request.getfixturevalue("influxdb")
    result = influxdb.query("SHOW SERIES CARDINALITY", store_url.rsplit("/", 1)[1])
    series = result["results"][0].get("series", [])
    return sum(int(s["values"][0][0]) for s in series)


def test_replaying_every_uplink_message_twice_changes_nothing_in_the_store(
    stack: Callable[..., Stack], store_url: str, request: pytest.FixtureRequest
) -> None:
    s = stack(**{"store.url": store_url, "select.tolerance_resolutions": 0.0})
    spy = MqttClient(s.broker.url)
    spy.connect(timeout=5)
    for what in ("batch", "agg", "model"):
        spy.subscribe(TOPICS.edge(s.site, what), qos=1)
    spy.subscribe(TOPICS.alerts(s.site), qos=1)
    spy.subscribe(TOPICS.edge(s.site, "health"), qos=1)  # the sentinel that ends the history
    with running(s.worker):
        with running(s.node), LedgerDevices(s.broker.url, s.site, max_per_device=READINGS) as devices:
            wait_for(lambda: devices.finished, f"{READINGS} readings from each device")
            devices.stop()
            v = settle(s.node, devices, s.store, s.site)
            settled = now_ms()
        assert (v.lost, v.double) == (0, 0), v.line("R8 first pass")
        history = uplink_history(spy, after_ms=settled)
        spy.close(1)
        before, rows = snapshot(s.store, s.site)
        series_before = cardinality(request, store_url)
        handled = s.worker.counters.messages

        publisher = MqttClient(s.broker.url)
        publisher.connect(timeout=5)
        for _ in range(2):
            for m in history:
                publisher.publish(m.topic, m.payload, qos=1)
        assert publisher.flush(30)
        publisher.close(1)
        # Positive, not a pause: every replayed message handled, and none left unwritten.
        wait_for(
            lambda: s.worker.counters.messages >= handled + 2 * len(history) and committed(s.worker),
            "the worker handled and committed every replayed message",
        )
        after, rows_after = snapshot(s.store, s.site)
        series_after = cardinality(request, store_url)
    kind = store_url.split(":", 1)[0]
    print(
        f"R8 {kind}: uplink messages={len(history)} replayed={2 * len(history)} rows={rows}->{rows_after} "
        f"sha256 {before[:12]}->{after[:12]} series={series_before}->{series_after} ({v.line('first pass')})"
    )
    assert history, "the spy saw no uplink messages"
    assert (after, rows_after) == (before, rows)
    assert series_after == series_before
