"""The Store contract: one suite, run against SQLite and against the real InfluxDB 1.6.7.

Every test of the first part runs once per backend (fixture ``store``), so the dashboard and
the cloud writer can rely on the same answers from either. The last part covers what only
the InfluxDB backend has: HTTP error classes, each provoked on a real influxd.
"""

from __future__ import annotations

import math
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from conftest import WriterReaderStore

from pipeline.cloud.store import (
    HEALTH_RETENTION_MS,
    AggregateBucket,
    AlertCount,
    DeviceBucket,
    HealthPoint,
    InfluxStore,
    MetricTotals,
    PartialWriteError,
    ReadingRow,
    SQLiteStore,
    Store,
    StoreConfigError,
    StoreUnavailable,
    open_store,
)
from pipeline.protocol.agg_codec import decode_aggregates, encode_aggregates
from pipeline.protocol.batch_codec import DELTA_ZSTD, decode_batch, encode_batch
from pipeline.protocol.catalog import RESOLUTIONS
from pipeline.protocol.messages import (
    Aggregate,
    AggregateBatch,
    Alert,
    AlertData,
    Batch,
    DeadLetter,
    Health,
    Label,
    Reading,
)
from pipeline.services import Influxd, free_port

T0 = 1_700_000_000_000  # a multiple of every bucket width used below
HOUR = 3_600_000


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def reading(device: str, ts: int, seq: int, kind: str = "fridge", **metrics: float) -> Reading:
    return Reading(v=1, device=device, kind=kind, ts=ts, seq=seq, metrics=metrics or {"temp": 4.0})


def aggregate(device: str, start: int, *, mean: float = 4.0, metric: str = "temp") -> Aggregate:
    return Aggregate(
        v=1,
        site="shop1",
        device=device,
        kind="fridge",
        metric=metric,
        start=start,
        end=start + 60_000,
        count=600,
        min=3.5,
        max=4.5,
        mean=mean,
        std=0.25,
        last=4.25,
        anomalies=2,
    )


def alert(
    alert_id: str, ts: int, state: str = "raised", site: str = "shop1", score: float = 0.9
) -> Alert:
    data = AlertData(
        v=1,
        alert_id=alert_id,
        site=site,
        device="fridge1",
        kind="fridge",
        metric="temp",
        state=state,
        severity="warning",
        score=score,
        value=11.5,
        reading_ts=ts,
        reason="score 0.90 above 0.80",
        model_version="hst-3",
    )
    return Alert(
        id=f"{alert_id}-{state}",
        source=f"edgepipe/{site}",
        type="edgepipe.alert",
        time="2023-11-14T22:13:20Z",
        subject="fridge1",
        data=data,
    )


def sent_requests(
    store: Store, monkeypatch: pytest.MonkeyPatch, sent: list[object] | None = None
) -> list[object]:
    """Record everything the backend sends to its database from now on.

    SQLite: every SQL statement (trace callback). InfluxDB: every HTTP request (of both
    users for ``influx-auth``). Spies on the real connection; nothing is replaced.
    """
    sent = [] if sent is None else sent
    if isinstance(store, WriterReaderStore):
        sent_requests(store.writer, monkeypatch, sent)
        sent_requests(store.reader, monkeypatch, sent)
    elif isinstance(store, SQLiteStore):
        store._conn.set_trace_callback(sent.append)
    else:
        assert isinstance(store, InfluxStore)
        urlopen = store._pool.urlopen

        def spy(*args: object, **kwargs: object) -> object:
            sent.append(args)
            return urlopen(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store._pool, "urlopen", spy)
    return sent


# -- the contract, for every backend -------------------------------------------------------


def test_store_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_readings_round_trip_oldest_first(store: Store) -> None:
    store.write_readings("shop1", [reading("fridge1", T0 + 200, 3, temp=4.5, door=1.0)])
    store.write_readings("shop1", [reading("fridge1", T0 + 100, 2, temp=4.25, door=0.0)])

    rows = store.query_readings("shop1", "fridge1", "temp", T0, T0 + 1000)

    assert rows == [
        ReadingRow(T0 + 100, 4.25, 4.25, 4.25, 1),
        ReadingRow(T0 + 200, 4.5, 4.5, 4.5, 1),
    ]
    assert [r.value for r in store.query_readings("shop1", "fridge1", "door", T0, T0 + 1000)] == [
        0.0,
        1.0,
    ]


def test_query_interval_includes_start_and_excludes_end(store: Store) -> None:
    store.write_readings("shop1", [reading("fridge1", T0 + i * 100, i) for i in range(5)])

    rows = store.query_readings("shop1", "fridge1", "temp", T0 + 100, T0 + 300)

    assert [r.ts for r in rows] == [T0 + 100, T0 + 200]


def test_rewriting_a_reading_keeps_one_copy_with_the_new_value(store: Store) -> None:
    store.write_readings("shop1", [reading("fridge1", T0, 1, temp=4.0)])
    store.write_readings("shop1", [reading("fridge1", T0, 1, temp=7.5)])

    assert store.count_readings() == 1
    assert [r.value for r in store.query_readings("shop1", "fridge1", "temp", T0, T0 + 1)] == [7.5]


def test_a_resent_batch_leaves_the_count_unchanged(store: Store) -> None:
    batch = [reading(f"fridge{d}", T0 + i * 100, i) for d in range(3) for i in range(50)]
    store.write_readings("shop1", batch)
    store.write_readings("shop1", batch)

    assert store.count_readings() == 150


def test_count_readings_per_site_and_in_total(store: Store) -> None:
    store.write_readings("shop1", [reading("fridge1", T0 + i, i) for i in range(3)])
    store.write_readings("shop2", [reading("fridge1", T0 + i, i) for i in range(5)])

    assert store.count_readings("shop1") == 3
    assert store.count_readings("shop2") == 5
    assert store.count_readings() == 8
    assert store.count_readings("shop3") == 0


def test_a_reading_counts_once_whatever_its_number_of_metrics(store: Store) -> None:
    store.write_readings(
        "farm1", [reading("ws1", T0, 1, "weather_station", air_temp=20.0, wind=3.0)]
    )

    assert store.count_readings("farm1") == 1


def test_downsampling_gives_mean_min_max_and_count_per_bucket(store: Store) -> None:
    # values 0..9 every 100 ms; buckets of 250 ms hold {0,1,2} {3,4} {5,6,7} {8,9}
    store.write_readings(
        "shop1", [reading("fridge1", T0 + i * 100, i, temp=float(i)) for i in range(10)]
    )

    rows = store.query_readings("shop1", "fridge1", "temp", T0, T0 + 1000, every_ms=250)

    assert [(r.ts, r.min, r.max, r.count) for r in rows] == [
        (T0, 0.0, 2.0, 3),
        (T0 + 250, 3.0, 4.0, 2),
        (T0 + 500, 5.0, 7.0, 3),
        (T0 + 750, 8.0, 9.0, 2),
    ]
    assert [r.value for r in rows] == pytest.approx([1.0, 3.5, 6.0, 8.5])


def test_downsampling_leaves_out_empty_buckets(store: Store) -> None:
    store.write_readings("shop1", [reading("fridge1", T0, 1), reading("fridge1", T0 + 5000, 2)])

    rows = store.query_readings("shop1", "fridge1", "temp", T0, T0 + 10_000, every_ms=1000)

    assert [r.ts for r in rows] == [T0, T0 + 5000]


def test_a_non_finite_metric_is_not_written_but_the_reading_is(store: Store) -> None:
    store.write_readings(
        "shop1", [reading("fridge1", T0, 1, temp=math.nan, power=math.inf, door=1.0)]
    )

    assert store.count_readings() == 1
    assert store.query_readings("shop1", "fridge1", "temp", T0, T0 + 1) == []
    assert store.query_readings("shop1", "fridge1", "power", T0, T0 + 1) == []
    assert [r.value for r in store.query_readings("shop1", "fridge1", "door", T0, T0 + 1)] == [1.0]


def test_aggregates_round_trip_by_window_start(store: Store) -> None:
    later, earlier = aggregate("fridge1", T0 + 60_000), aggregate("fridge1", T0)
    store.write_aggregates([later, earlier, aggregate("fridge1", T0, metric="power")])

    assert store.query_aggregates("shop1", "fridge1", "temp", T0, T0 + HOUR) == [earlier, later]


def test_rewriting_an_aggregate_keeps_one_copy_with_the_new_values(store: Store) -> None:
    store.write_aggregates([aggregate("fridge1", T0, mean=4.0)])
    store.write_aggregates([aggregate("fridge1", T0, mean=5.0)])

    assert [a.mean for a in store.query_aggregates("shop1", "fridge1", "temp", T0, T0 + 1)] == [5.0]


def test_aggregate_buckets_merge_windows_in_the_database(store: Store) -> None:
    every = 200_000  # T0 is a multiple of it
    store.write_aggregates(
        [
            aggregate("fridge1", T0, mean=4.0),  # count 600, min 3.5, max 4.5, 2 anomalies
            msgspec.structs.replace(aggregate("fridge1", T0 + 60_000, mean=6.0), count=200,
                                    min=1.0, anomalies=0),
            aggregate("fridge1", T0 + 2 * every + 60_000, mean=5.0),  # skips a bucket
            aggregate("fridge1", T0 + HOUR),  # outside the range
            aggregate("fridge2", T0),  # another device
            aggregate("fridge1", T0, metric="power"),  # another metric
        ]
    )  # fmt: skip

    buckets = store.query_aggregate_buckets("shop1", "fridge1", "temp", T0, T0 + HOUR, every)

    assert buckets == [
        AggregateBucket(T0, 800, 1.0, 4.5, pytest.approx(4.5), 2),  # (600·4 + 200·6) / 800
        AggregateBucket(T0 + 2 * every, 600, 3.5, 4.5, pytest.approx(5.0), 2),
    ]
    assert store.query_aggregate_buckets("shop1", "fridge9", "temp", T0, T0 + HOUR, 1000) == []


def test_kind_buckets_merge_each_devices_windows_of_the_kind_in_one_query(store: Store) -> None:
    every = 200_000  # T0 is a multiple of it
    store.write_aggregates(
        [
            aggregate("fridge1", T0, mean=4.0),  # count 600
            msgspec.structs.replace(aggregate("fridge1", T0 + 60_000, mean=6.0), count=200),
            aggregate("fridge2", T0 + 120_000, mean=5.0),
            aggregate("fridge2", T0 + every, mean=3.0),
            aggregate("fridge1", T0, metric="power", mean=99.0),  # another metric
            msgspec.structs.replace(aggregate("oven1", T0, mean=200.0), kind="oven"),  # another kind
            msgspec.structs.replace(aggregate("fridge3", T0, mean=7.0), site="shop2"),  # another site
            aggregate("fridge1", T0 + HOUR),  # outside the range
        ]
    )  # fmt: skip

    buckets = store.query_kind_buckets("shop1", "fridge", "temp", T0, T0 + HOUR, every)

    assert buckets == [
        DeviceBucket(T0, "fridge1", pytest.approx(4.5), 800),  # (600·4 + 200·6) / 800
        DeviceBucket(T0, "fridge2", pytest.approx(5.0), 600),
        DeviceBucket(T0 + every, "fridge2", pytest.approx(3.0), 600),
    ]
    assert store.query_kind_buckets("shop1", "freezer", "temp", T0, T0 + HOUR, every) == []


def test_alerts_come_newest_first_up_to_the_limit(store: Store) -> None:
    store.write_alerts([alert(f"a{i}", T0 + i * 1000) for i in range(5)])

    found = store.query_alerts("shop1", since_ms=T0 + 1000, limit=3)

    assert [a.alert_id for a in found] == ["a4", "a3", "a2"]
    assert found[0] == alert("a4", T0 + 4000).data


def test_raised_and_cleared_at_the_same_instant_are_two_alerts(store: Store) -> None:
    store.write_alerts([alert("a1", T0, "raised"), alert("a1", T0, "cleared")])

    assert sorted(a.state for a in store.query_alerts(None, T0)) == ["cleared", "raised"]


def test_rewriting_an_alert_keeps_one_copy_with_the_new_values(store: Store) -> None:
    store.write_alerts([alert("a1", T0, score=0.85)])
    store.write_alerts([alert("a1", T0, score=0.95)])

    assert [a.score for a in store.query_alerts(None, T0)] == [0.95]


def test_alerts_can_be_filtered_by_site(store: Store) -> None:
    store.write_alerts([alert("a1", T0, site="shop1"), alert("a2", T0 + 1, site="shop2")])

    assert [a.alert_id for a in store.query_alerts("shop2", T0)] == ["a2"]
    assert [a.alert_id for a in store.query_alerts(None, T0)] == ["a2", "a1"]


def test_alerts_filter_by_source_in_the_database(store: Store) -> None:
    def cloud(a: Alert) -> Alert:
        return msgspec.structs.replace(a, data=msgspec.structs.replace(a.data, source="cloud"))

    store.write_alerts(
        [alert(f"e{i}", T0 + i) for i in range(20)] + [cloud(alert("c1", T0 - 5)), cloud(alert("c2", T0 - 6))]
    )

    found = store.query_alerts(None, 0, limit=5, sources=["cloud"])
    assert [(a.alert_id, a.source) for a in found] == [("c1", "cloud"), ("c2", "cloud")]  # not hidden
    assert {a.source for a in store.query_alerts(None, 0, 100, sources=["edge"])} == {"edge"}
    assert store.count_alerts(None, 0, sources=["cloud"]) == 2
    assert store.count_alerts(None, 0, sources=["edge"]) == 20
    assert store.count_alerts(None, 0, sources=["edge", "cloud"]) == store.count_alerts(None, 0) == 22


def test_latest_health_is_the_newest_report_of_each_node(store: Store) -> None:
    old = Health(v=1, site="farm1", node="edge1", ts=T0, status="online", counters={"received": 5})
    new = Health(
        v=1,
        site="farm1",
        node="edge1",
        ts=T0 + 10_000,
        status="offline",
        counters={"received": 9, "dlq": 1},
        gauges={"buffer_bytes": 2048.0, "lag_s": 0.5},
    )
    other = Health(v=1, site="city1", node="edge1", ts=T0, status="online")
    store.write_health(new)
    store.write_health(old)
    store.write_health(other)

    assert store.latest_health() == [other, new]


def health_report(site: str, node: str, ts: int, **gauges: float) -> Health:
    return Health(v=1, site=site, node=node, ts=ts, status="online", gauges=gauges)


def test_health_history_averages_each_node_per_bucket(store: Store) -> None:
    every = 100_000  # T0 is a multiple of it
    store.write_health(health_report("farm1", "edge1", T0, readings_per_s=10.0, queue_items=4.0))
    store.write_health(health_report("farm1", "edge1", T0 + 10_000, readings_per_s=20.0))
    store.write_health(health_report("farm1", "edge1", T0 + 2 * every, readings_per_s=5.0))
    store.write_health(health_report("city1", "edge1", T0 + 5_000, readings_per_s=7.5))
    store.write_health(health_report("farm1", "edge1", T0 + HOUR, readings_per_s=1.0))  # later

    history = store.health_history(T0, T0 + HOUR, every, ["readings_per_s", "queue_items"])

    assert history == [
        HealthPoint("city1", "edge1", T0, 1, {"readings_per_s": 7.5}),
        HealthPoint("farm1", "edge1", T0, 2, {"readings_per_s": 15.0, "queue_items": 4.0}),
        HealthPoint("farm1", "edge1", T0 + 2 * every, 1, {"readings_per_s": 5.0}),
    ]
    assert [p.site for p in store.health_history(T0, T0 + HOUR, every, [], "city1")] == ["city1"]
    assert store.health_history(T0 + 2 * HOUR, T0 + 3 * HOUR, every, ["readings_per_s"]) == []


def test_alert_counts_per_bucket_site_severity_and_state(store: Store) -> None:
    every = 100_000  # T0 is a multiple of it
    store.write_alerts(
        [alert(f"a{i}", T0 + i * 1000) for i in range(3)]  # three raised in the first bucket
        + [alert("a0", T0 + every + 1, "cleared"), alert("b0", T0 + every + 2, site="shop2")]
        + [alert("late", T0 + HOUR)]  # outside the range
    )

    counts = store.alert_counts(T0, T0 + HOUR, every)

    assert counts == [
        AlertCount(T0, "shop1", "warning", "raised", 3),
        AlertCount(T0 + every, "shop1", "warning", "cleared", 1),
        AlertCount(T0 + every, "shop2", "warning", "raised", 1),
    ]
    assert store.alert_counts(T0, T0 + HOUR, every, site="shop2") == [counts[2]]


def test_alerts_filter_by_severity_and_kind_in_the_database(store: Store) -> None:
    def with_(a: Alert, **changes: str) -> Alert:
        return msgspec.structs.replace(a, data=msgspec.structs.replace(a.data, **changes))

    store.write_alerts(
        [with_(alert(f"w{i}", T0 + i), severity="warning") for i in range(20)]
        + [with_(alert("c1", T0 - 5), severity="critical")]
        + [with_(alert("c2", T0 - 6), severity="critical", kind="freezer")]
    )

    found = store.query_alerts(None, 0, limit=5, severities=["critical"])
    assert [a.alert_id for a in found] == ["c1", "c2"]  # not hidden under the warnings
    assert [a.alert_id for a in store.query_alerts(None, 0, 5, [], ["freezer"])] == ["c2"]
    assert store.count_alerts(None, 0) == 22
    assert store.count_alerts("shop1", 0, severities=["critical", "info"]) == 2
    assert store.count_alerts(None, 0, ["critical"], ["fridge"]) == 1
    assert store.count_alerts(None, T0 + 10) == 10
    assert store.count_alerts("shop9", 0) == 0


def test_a_non_finite_gauge_is_left_out(store: Store) -> None:
    h = Health(
        v=1, site="farm1", node="edge1", ts=T0, status="online", gauges={"a": math.inf, "b": 1.5}
    )
    store.write_health(h)

    assert store.latest_health()[0].gauges == {"b": 1.5}


def test_dead_letters_keep_their_text_exactly_and_apart_within_one_ms(store: Store) -> None:
    hostile = 'bad "json" \\ with, commas=equals and\nnewlines'
    letters = [
        DeadLetter(
            v=1,
            site="farm1",
            ts=T0,
            reason="bad_json",
            detail=f"payload {i}",
            topic="edgepipe/v1/farm1/dev/ws 1",
            size=len(hostile),
            sha256=f"{i:064x}",
            payload=hostile,
        )
        for i in range(3)
    ]
    store.write_dead_letters(letters)
    store.write_dead_letters(letters)

    found = store.query_dead_letters("farm1", T0, limit=10)

    assert sorted(found, key=lambda d: d.detail) == letters


def test_labels_overlapping_the_range_are_returned(store: Store) -> None:
    spike = Label(
        v=1, site="farm1", device="ws1", metrics=["wind"], anomaly="spike", start=T0, end=T0 + 500
    )
    drift = Label(
        v=1, site="farm1", device="ws2", metrics=["air_temp", "humidity"], anomaly="drift",
        start=T0 + 2000, end=T0 + 9000,
    )  # fmt: skip
    store.write_labels([spike, drift])
    store.write_labels([spike])

    assert store.query_labels("farm1", None, T0 + 400, T0 + 2001) == [spike, drift]
    assert store.query_labels("farm1", "ws2", T0, T0 + 1000) == []


def test_each_sites_last_catalogue_is_kept(store: Store) -> None:
    from pipeline.protocol.catalog import KINDS, Catalog, DeviceKind, Metric

    builtin = Catalog.builtin()
    cold = DeviceKind("cold_room", "retail", {"temp": Metric("temp", "°C", 0.1, -40.0, 30.0, 0.3)})
    custom = Catalog({**KINDS, "cold_room": cold})
    store.write_catalogs([builtin.to_message("shop1"), builtin.to_message("farm1")])
    store.write_catalogs([custom.to_message("shop1")])

    latest = store.latest_catalogs()
    assert latest == {"farm1": builtin.to_message("farm1"), "shop1": custom.to_message("shop1")}
    assert Catalog.from_message(latest["shop1"]).kinds["cold_room"] == cold


def test_sites_lists_every_site_with_any_record(store: Store) -> None:
    store.write_readings("shop1", [reading("fridge1", T0, 1)])
    store.write_aggregates([aggregate("fridge1", T0)])
    store.write_health(Health(v=1, site="farm1", node="edge1", ts=T0, status="online"))
    store.write_alerts([alert("a1", T0, site="city1")])

    assert store.sites() == ["city1", "farm1", "shop1"]


def test_devices_lists_device_and_kind_of_one_site(store: Store) -> None:
    store.write_readings(
        "shop1", [reading("fridge1", T0, 1), reading("freezer1", T0, 1, "freezer")]
    )
    store.write_aggregates([aggregate("fridge2", T0)])
    store.write_readings("shop2", [reading("fridge9", T0, 1)])

    assert store.devices("shop1") == [
        ("freezer1", "freezer"),
        ("fridge1", "fridge"),
        ("fridge2", "fridge"),
    ]


def test_last_seen_is_the_newest_reading_or_aggregate_window_of_each_device(
    store: Store,
) -> None:
    store.write_readings(
        "shop1",
        [
            reading("fridge1", T0 + 5_000, 2),
            reading("fridge1", T0 + 1_000, 1),
            reading("freezer1", T0 + 1_000, 1, "freezer"),
        ],
    )
    # fridge2 has only aggregates; freezer1's newest window starts after its newest reading.
    store.write_aggregates([aggregate("fridge2", T0 + 60_000), aggregate("fridge2", T0)])
    store.write_aggregates(
        [msgspec.structs.replace(aggregate("freezer1", T0 + 120_000), kind="freezer")]
    )
    store.write_readings("shop2", [reading("fridge9", T0 + 9_000, 1)])

    assert store.last_seen("shop1") == [
        ("freezer1", "freezer", T0 + 120_000),
        ("fridge1", "fridge", T0 + 5_000),
        ("fridge2", "fridge", T0 + 60_000),
    ]
    assert store.last_seen("shop3") == []


def test_metric_totals_add_up_aggregate_counts_and_stored_points_per_metric(
    store: Store,
) -> None:
    store.write_aggregates(
        [
            aggregate("fridge1", T0),  # count 600, anomalies 2 each
            aggregate("fridge1", T0 + 60_000),
            aggregate("fridge2", T0),
            aggregate("fridge1", T0, metric="power"),
            aggregate("fridge1", T0 + HOUR),  # outside the range
        ]
    )
    store.write_readings(
        "shop1",
        [reading("fridge1", T0 + i * 1000, i, temp=4.0, door=0.0) for i in range(7)]
        + [reading("fridge2", T0 + 500, 1, temp=4.0)]
        + [reading("fridge1", T0 + HOUR, 99, temp=4.0)],  # outside the range
    )
    store.write_readings("shop2", [reading("fridge1", T0, 1, temp=4.0)])  # another site

    assert store.metric_totals("shop1", T0, T0 + HOUR) == [
        MetricTotals("door", readings_in=0, anomalies=0, points_stored=7),
        MetricTotals("power", readings_in=600, anomalies=2, points_stored=0),
        MetricTotals("temp", readings_in=1800, anomalies=6, points_stored=8),
    ]
    assert store.metric_totals("shop3", 0, T0 + HOUR) == []


def raw_query(store: Store, request: pytest.FixtureRequest, statement: str) -> list[list[object]]:
    """``statement`` sent as-is to the backend's own query language: what a user types in
    ``sqlite3`` or the InfluxDB shell, not what the store builds."""
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            return [list(row) for row in conn.execute(statement)]
    server = "influxdb"
    if isinstance(store, WriterReaderStore):  # influx-auth: its own server, as its admin
        store, server = store.reader, "influxdb_auth"
    assert isinstance(store, InfluxStore)
    influxdb: Influxd = request.getfixturevalue(server)
    result = influxdb.query(statement, db=store.database, epoch="ms")["results"][0]
    assert "error" not in result, result["error"]
    return [row[1:] for series in result.get("series", []) for row in series["values"]]


def test_window_ends_are_a_plain_field_a_user_can_select(
    store: Store, request: pytest.FixtureRequest
) -> None:
    # "end" is an InfluxQL keyword: `SELECT mean, end FROM aggregates` is a parse error.
    store.write_aggregates([aggregate("fridge1", T0, mean=4.5)])
    store.write_labels(
        [Label(v=1, site="shop1", device="fridge1", metrics=["temp"], anomaly="spike",
               start=T0, end=T0 + 500)]
    )  # fmt: skip

    assert raw_query(store, request, "SELECT mean, end_ms FROM aggregates") == [[4.5, T0 + 60_000]]
    assert raw_query(store, request, "SELECT anomaly, end_ms FROM labels") == [["spike", T0 + 500]]


OLD_LAYOUT_SQLITE = """
CREATE TABLE aggregates (
    site TEXT NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL, start INTEGER NOT NULL,
    kind TEXT NOT NULL, "end" INTEGER NOT NULL, count INTEGER NOT NULL,
    min REAL, max REAL, mean REAL, std REAL, last REAL, anomalies INTEGER NOT NULL,
    PRIMARY KEY (site, device, metric, start)
) WITHOUT ROWID;
CREATE TABLE labels (
    site TEXT NOT NULL, device TEXT NOT NULL, anomaly TEXT NOT NULL, start INTEGER NOT NULL,
    "end" INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (site, device, anomaly, start)
) WITHOUT ROWID;
INSERT INTO aggregates VALUES ('shop1', 'fridge1', 'temp', {t0}, 'fridge', {end}, 600,
                               3.5, 4.5, 4.0, 0.25, 4.25, 2);
INSERT INTO labels VALUES ('shop1', 'fridge1', 'spike', {t0}, {label_end}, 'temp');
PRAGMA user_version = 1;
"""


def test_windows_stored_under_the_old_field_name_end_still_read_back(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A database an older edgepipe filled (field or column ``end``) keeps working."""
    label = Label(v=1, site="shop1", device="fridge1", metrics=["temp"], anomaly="spike",
                  start=T0, end=T0 + 500)  # fmt: skip
    if isinstance(store, SQLiteStore):
        path = tmp_path / "written-by-schema-1.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(OLD_LAYOUT_SQLITE.format(t0=T0, end=T0 + 60_000, label_end=T0 + 500))
        store = SQLiteStore(path)  # migrates the file
    else:
        # influx-auth (a WriterReaderStore) has its own server, written to as its admin.
        auth = isinstance(store, WriterReaderStore)
        target = store.reader if isinstance(store, WriterReaderStore) else store
        assert isinstance(target, InfluxStore)
        influxdb: Influxd = request.getfixturevalue("influxdb_auth" if auth else "influxdb")
        influxdb.write(
            target.database,
            "aggregates,device=fridge1,kind=fridge,metric=temp,site=shop1 count=600i,min=3.5,"
            f"max=4.5,mean=4.0,std=0.25,last=4.25,anomalies=2i,end={T0 + 60_000}i {T0}\n"
            'labels,anomaly=spike,device=fridge1,site=shop1 metrics="temp",'
            f"end={T0 + 500}i {T0}",
        )

    assert store.query_aggregates("shop1", "fridge1", "temp", T0, T0 + 1) == [
        aggregate("fridge1", T0)
    ]
    assert store.query_labels("shop1", None, T0 + 400, T0 + 2000) == [label]
    assert store.query_labels("shop1", None, T0 + 501, T0 + 2000) == []
    store.write_aggregates([aggregate("fridge1", T0 + 60_000)])  # new windows beside old ones
    assert [a.end for a in store.query_aggregates("shop1", "fridge1", "temp", T0, T0 + HOUR)] == [
        T0 + 60_000,
        T0 + 120_000,
    ]
    store.close()


def test_the_documented_unbiased_mean_query_runs_on_both_backends(
    store: Store, request: pytest.FixtureRequest
) -> None:
    """docs/protocol.md (Store layout) tells users to average over aggregates, weighted by
    count, not over the selected readings: its query must run as written."""
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    (query,) = re.findall(r'`(SELECT SUM\("w"\)[^`]*)`', doc)
    store.write_aggregates(
        [
            msgspec.structs.replace(aggregate("fridge1", T0, mean=4.0), count=300),
            msgspec.structs.replace(aggregate("fridge1", T0 + 60_000, mean=7.0), count=100),
        ]
    )

    assert raw_query(store, request, query) == [[pytest.approx((300 * 4.0 + 100 * 7.0) / 400)]]


def test_stored_values_carry_no_float_noise(store: Store, request: pytest.FixtureRequest) -> None:
    """Values decoded from the edge's codecs are stored and read back as their decimal."""
    window = msgspec.structs.replace(aggregate("fridge1", T0), mean=25.4, min=25.1, max=25.7)
    sent = AggregateBatch(1, "shop1", 1, [window])
    (decoded,) = decode_aggregates(encode_aggregates(sent, RESOLUTIONS)).aggregates
    batch = Batch(
        1, "shop1", 1, [reading("fridge1", T0 + i, i, temp=20 + i / 10) for i in range(30)]
    )
    store.write_aggregates([decoded])
    store.write_readings("shop1", decode_batch(encode_batch(batch, DELTA_ZSTD)).readings)

    (stored,) = store.query_aggregates("shop1", "fridge1", "temp", T0, T0 + 1)
    assert [repr(v) for v in (stored.min, stored.mean, stored.max)] == ["25.1", "25.4", "25.7"]
    values = [r.value for r in store.query_readings("shop1", "fridge1", "temp", T0, T0 + 30)]
    assert [repr(v) for v in values] == [repr(round(20 + i / 10, 1)) for i in range(30)]
    raw = raw_query(store, request, "SELECT mean FROM aggregates")
    assert [repr(row[0]) for row in raw] == ["25.4"]


def test_an_empty_store_answers_with_nothing(store: Store) -> None:
    assert store.count_readings() == 0
    assert store.sites() == []
    assert store.devices("shop1") == []
    assert store.latest_health() == []
    assert store.query_alerts(None, 0) == []
    assert store.query_readings("shop1", "fridge1", "temp", 0, T0, every_ms=1000) == []
    assert store.last_seen("shop1") == []
    assert store.metric_totals("shop1", 0, T0) == []


HOSTILE_IDS = [
    pytest.param("x' OR 1=1", id="quote-or"),
    pytest.param('x" OR "1"="1', id="double-quote"),
    pytest.param("fridge1'; DROP DATABASE x; --", id="statement"),
    pytest.param("a b", id="space"),
    pytest.param("a,b=c", id="comma-equals"),
    pytest.param("dev1\nfake temp=666", id="newline"),
    pytest.param("", id="empty"),
    pytest.param("x" * 65, id="too-long"),
]

QUERIES: dict[str, Callable[[Store, str], object]] = {
    "readings.site": lambda s, bad: s.query_readings(bad, "fridge1", "temp", 0, T0),
    "readings.device": lambda s, bad: s.query_readings("shop1", bad, "temp", 0, T0),
    "readings.metric": lambda s, bad: s.query_readings("shop1", "fridge1", bad, 0, T0, 1000),
    "aggregates.metric": lambda s, bad: s.query_aggregates("shop1", "fridge1", bad, 0, T0),
    "aggregate_buckets.device": lambda s, bad: s.query_aggregate_buckets(
        "shop1", bad, "temp", 0, T0, 1000
    ),
    "kind_buckets.kind": lambda s, bad: s.query_kind_buckets("shop1", bad, "temp", 0, T0, 1000),
    "alerts.site": lambda s, bad: s.query_alerts(bad, 0),
    "dead_letters.site": lambda s, bad: s.query_dead_letters(bad, 0),
    "labels.device": lambda s, bad: s.query_labels("farm1", bad, 0, T0),
    "count.site": lambda s, bad: s.count_readings(bad),
    "devices.site": lambda s, bad: s.devices(bad),
    "last_seen.site": lambda s, bad: s.last_seen(bad),
    "metric_totals.site": lambda s, bad: s.metric_totals(bad, 0, T0),
    "alerts.severity": lambda s, bad: s.query_alerts(None, 0, 10, [bad]),
    "alerts.source": lambda s, bad: s.query_alerts(None, 0, 10, sources=["edge", bad]),
    "count_alerts.kind": lambda s, bad: s.count_alerts(None, 0, [], ["fridge", bad]),
    "alert_counts.site": lambda s, bad: s.alert_counts(0, T0, 1000, bad),
    "health_history.site": lambda s, bad: s.health_history(0, T0, 1000, [], bad),
    "health_history.gauge": lambda s, bad: s.health_history(0, T0, 1000, [bad + '"']),
}


@pytest.mark.parametrize("query", list(QUERIES))
@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_an_injection_in_a_query_filter_is_rejected_before_any_query(
    store: Store, monkeypatch: pytest.MonkeyPatch, query: str, bad: str
) -> None:
    sent = sent_requests(store, monkeypatch)

    with pytest.raises(ValueError, match="invalid"):
        QUERIES[query](store, bad)

    assert sent == []


def test_a_time_bound_that_is_not_an_int_is_rejected_before_any_query(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = sent_requests(store, monkeypatch)

    with pytest.raises(TypeError):
        store.query_readings("shop1", "fridge1", "temp", "0 OR 1=1", T0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.query_alerts(None, 1.5)  # type: ignore[arg-type]

    assert sent == []


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_a_write_with_an_invalid_id_is_refused_whole(store: Store, bad: str) -> None:
    good, evil = reading("fridge1", T0, 1), reading(bad, T0 + 1, 2)

    with pytest.raises(ValueError, match="invalid device"):
        store.write_readings("shop1", [good, evil])

    assert store.count_readings() == 0
    assert store.sites() == []


def test_ping_is_true_while_open_and_false_after_close(store: Store) -> None:
    assert store.ping() is True
    store.close()
    assert store.ping() is False
    store.close()  # idempotent


# -- SQLite only ---------------------------------------------------------------------------


def test_sqlite_keeps_a_bounded_health_history(tmp_path: Path) -> None:
    """Reports older than the retention before the node's newest report are deleted."""
    store = SQLiteStore(tmp_path / "health.db")
    old = health_report("farm1", "edge1", T0, readings_per_s=1.0)
    kept = health_report("farm1", "edge1", T0 + 1, readings_per_s=2.0)
    other = health_report("farm1", "edge2", T0, readings_per_s=3.0)
    for report in (old, kept, other):
        store.write_health(report)

    newest = T0 + 1 + HEALTH_RETENTION_MS  # `old` is now a millisecond past the retention
    store.write_health(health_report("farm1", "edge1", newest, readings_per_s=4.0))

    history = store.health_history(0, 2**62, 1, ["readings_per_s"])
    assert [(p.node, p.ts) for p in history] == [
        ("edge1", T0 + 1),
        ("edge1", newest),
        ("edge2", T0),  # another node's history is its own
    ]
    store.close()


# -- InfluxDB only: how server answers map to errors -------------------------------------


def test_influx_unreachable_server_raises_store_unavailable() -> None:
    store = open_store(f"influxdb://127.0.0.1:{free_port()}/edgepipe")  # opening does not fail

    assert store.ping() is False
    with pytest.raises(StoreUnavailable):
        store.write_readings("shop1", [reading("fridge1", T0, 1)])
    with pytest.raises(StoreUnavailable):
        store.count_readings()


def test_influx_alerts_stored_before_the_source_tag_are_the_edges_when_filtered(
    influxdb: Influxd, influx_db: str
) -> None:
    # an alert point as written before alerts carried a source: no ``source`` tag
    influxdb.write(
        influx_db,
        "alerts,device=fridge1,kind=fridge,metric=temp,severity=warning,site=shop1,state=raised "
        f'alert_id="old1",score=0.9,value=11.5,reason="old",model_version="hst-3" {T0}',
    )
    store = open_store(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    cloud = alert("c1", T0 + 1)
    store.write_alerts([msgspec.structs.replace(cloud, data=msgspec.structs.replace(cloud.data, source="cloud"))])

    assert [(a.alert_id, a.source) for a in store.query_alerts(None, 0, sources=["edge"])] == [("old1", "edge")]
    assert store.count_alerts(None, 0, sources=["cloud"]) == 1
    assert store.count_alerts(None, 0, sources=["edge", "cloud"]) == 2
    store.close()


def test_influx_partial_write_raises_and_keeps_the_good_points(
    influxdb: Influxd, influx_db: str
) -> None:
    # "temp" becomes a string field, so a float "temp" in the same shard is a type conflict.
    influxdb.write(influx_db, f'readings,device=fridge0,kind=fridge,site=shop1 temp="hot" {T0}')
    store = open_store(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    good = reading("fridge1", T0 + 1, 1, door=1.0)

    with pytest.raises(PartialWriteError) as raised:
        store.write_readings("shop1", [reading("fridge2", T0 + 2, 1, temp=4.0), good])

    assert "conflict" in raised.value.text
    assert raised.value.dropped == 1
    assert [r.value for r in store.query_readings("shop1", "fridge1", "door", T0, T0 + 10)] == [1.0]
    store.close()


def test_influx_body_too_large_is_split_until_it_fits(
    influxd_factory: Callable[..., Influxd],
) -> None:
    server = influxd_factory(config_overrides={"http": {"max-body-size": 4000}})
    store = InfluxStore("127.0.0.1", server.port, "small")
    batch = [reading(f"fridge{i % 7}", T0 + i, i) for i in range(1000)]  # ~75 kB of lines

    store.write_readings("shop1", batch)

    assert store.count_readings() == 1000
    store.close()


def test_influx_wrong_password_raises_store_config_error(
    influxd_factory: Callable[..., Influxd],
) -> None:
    server = influxd_factory(config_overrides={"http": {"auth-enabled": True}})
    server.query("CREATE USER admin WITH PASSWORD 'right' WITH ALL PRIVILEGES")
    store = open_store(f"influxdb://admin:wrong@127.0.0.1:{server.port}/edgepipe")

    with pytest.raises(StoreConfigError):
        store.write_readings("shop1", [reading("fridge1", T0, 1)])
    store.close()
    right = open_store(f"influxdb://admin:right@127.0.0.1:{server.port}/edgepipe")
    right.write_readings("shop1", [reading("fridge1", T0, 1)])
    assert right.count_readings() == 1
    right.close()


def test_influx_frozen_server_raises_store_unavailable_within_the_timeout(
    influxd_factory: Callable[..., Influxd],
) -> None:
    server = influxd_factory()
    server.kill(signal.SIGSTOP)
    try:
        began = time.monotonic()
        store = open_store(f"influxdb://127.0.0.1:{server.port}/edgepipe?timeout=0.5")
        with pytest.raises(StoreUnavailable):
            store.write_readings("shop1", [reading("fridge1", T0, 1)])
        assert time.monotonic() - began < 3.0
    finally:
        server.kill(signal.SIGCONT)
    store.write_readings("shop1", [reading("fridge1", T0, 1)])  # works again once thawed
    assert store.count_readings() == 1
    store.close()


def test_site_aggregates_come_by_window_then_device_then_metric(store: Store) -> None:
    """What the fleet analyst replays on start: every series of one site, in window order."""
    store.write_aggregates(
        [
            aggregate("fridge2", T0 + 60_000),
            aggregate("fridge1", T0 + 60_000, metric="power"),
            aggregate("fridge1", T0 + 60_000),
            aggregate("fridge2", T0),
            aggregate("fridge1", T0 + 120_000),  # outside [T0, T0 + 120_000)
        ]
    )
    got = store.query_site_aggregates("shop1", T0, T0 + 120_000)

    assert [(a.start, a.device, a.metric) for a in got] == [
        (T0, "fridge2", "temp"),
        (T0 + 60_000, "fridge1", "power"),
        (T0 + 60_000, "fridge1", "temp"),
        (T0 + 60_000, "fridge2", "temp"),
    ]
    assert got[0] == aggregate("fridge2", T0)
    assert store.query_site_aggregates("other", T0, T0 + HOUR) == []


def test_site_aggregates_stop_at_the_limit_keeping_the_earliest(store: Store) -> None:
    store.write_aggregates([aggregate("fridge1", T0 + i * 60_000) for i in range(5)])

    assert [a.start for a in store.query_site_aggregates("shop1", T0, T0 + HOUR, limit=2)] == [T0, T0 + 60_000]


def test_an_alert_keeps_its_source_and_one_without_it_reads_as_the_edges(store: Store) -> None:
    edge = alert("shop1.fridge1.temp.1", T0)
    cloud = alert("cloud.shop1.fridge1.temp.2", T0 + 1000)
    cloud = msgspec.structs.replace(cloud, data=msgspec.structs.replace(cloud.data, source="cloud"))
    store.write_alerts([edge, cloud])

    got = {a.alert_id: a.source for a in store.query_alerts("shop1", T0)}
    assert got == {"shop1.fridge1.temp.1": "edge", "cloud.shop1.fridge1.temp.2": "cloud"}


def test_a_schema_2_file_gains_the_alert_source_and_its_alerts_read_as_the_edges(tmp_path: Path) -> None:
    path = tmp_path / "written-by-schema-2.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE alerts (
                site TEXT NOT NULL, alert_id TEXT NOT NULL, state TEXT NOT NULL,
                device TEXT NOT NULL, kind TEXT NOT NULL, metric TEXT NOT NULL, severity TEXT NOT NULL,
                score REAL, value REAL, reading_ts INTEGER NOT NULL, reason TEXT NOT NULL,
                model_version TEXT NOT NULL,
                PRIMARY KEY (site, alert_id, state)
            );
            INSERT INTO alerts VALUES ('shop1', 'a1', 'raised', 'fridge1', 'fridge', 'temp', 'warning',
                                       0.9, 11.5, 1700000000000, 'anomaly', 'hst-3');
            PRAGMA user_version = 2;
            """
        )
    store = SQLiteStore(path)  # migrates the file
    try:
        assert [a.source for a in store.query_alerts("shop1", 0)] == ["edge"]
        store.write_alerts([alert("a2", T0)])
        assert {a.alert_id for a in store.query_alerts("shop1", 0)} == {"a1", "a2"}
    finally:
        store.close()
