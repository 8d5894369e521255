"""The dashboard's numbers, from ``dashboards.queries`` and ``dashboards.charts``, without Streamlit.

A real SQLite store written by hand, so each rule (offline after silence, open alerts,
downsampling, reduction figures) is checked against values known exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from dashboards import charts, queries
from pipeline.cloud.store import Store, open_store
from pipeline.protocol.messages import Aggregate, Alert, AlertData, Health, Label, Reading

T0 = 1_800_000_000_000  # a multiple of every bucket width used below
MIN = 60_000
HOUR = 3_600_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    yield s
    s.close()


def health(site: str, node: str, ts: int, status: str = "online", **gauges: float) -> Health:
    return Health(v=1, site=site, node=node, ts=ts, status=status, gauges=gauges)


def alert(alert_id: str, ts: int, state: str = "raised", *, severity: str = "warning",
          device: str = "fridge1", kind: str = "fridge", site: str = "shop1") -> Alert:  # fmt: skip
    data = AlertData(
        v=1, alert_id=alert_id, site=site, device=device, kind=kind, metric="temp", state=state,
        severity=severity, score=0.999, value=9.5, reading_ts=ts, reason="test",
        model_version="m1",
    )  # fmt: skip
    return Alert(id=alert_id, source="t", type="t", time="t", subject=device, data=data)


def aggregate(device: str, start: int, count: int = 60, *, metric: str = "temp",
              lo: float = 3.0, hi: float = 5.0, anomalies: int = 0) -> Aggregate:  # fmt: skip
    return Aggregate(
        v=1, site="shop1", device=device, kind="fridge", metric=metric, start=start,
        end=start + MIN, count=count, min=lo, max=hi, mean=(lo + hi) / 2, std=0.5, last=hi,
        anomalies=anomalies,
    )  # fmt: skip


def fridge_reading(ts: int, temp: float, device: str = "fridge1") -> Reading:
    return Reading(v=1, device=device, kind="fridge", ts=ts, seq=ts // 1000, metrics={"temp": temp})


class NoQueries:
    """A store that fails the test if anything is asked of it: ids are checked first."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"store.{name} was called before the filter was validated")


# -- fleet ----------------------------------------------------------------------------------


def test_a_node_is_offline_when_it_says_so_or_after_three_silent_intervals() -> None:
    now = T0 + HOUR
    reports = [
        health("farm", "fresh", now - 29_000, readings_per_s=5.0),
        health("farm", "silent", now - 31_000, readings_per_s=7.0),
        health("shop", "willed", now - 1_000, status="offline"),
    ]

    nodes = queries.node_status(reports, now, health_interval_s=10).set_index("node")

    assert list(nodes["status"]) == ["online", "offline", "offline"]
    assert "silent for 31 s (> 30 s)" in nodes.loc["silent", "why"]
    assert "reported offline" in nodes.loc["willed", "why"]
    assert math.isnan(nodes.loc["willed", "readings_per_s"])  # the will carries no gauges


def test_devices_report_when_the_store_saw_them_recently(store: Store) -> None:
    now = T0 + HOUR
    store.write_readings("shop1", [fridge_reading(now - 5 * MIN, 4.0, "fresh")])
    store.write_readings("shop1", [fridge_reading(now - 20 * MIN, 4.0, "quiet")])
    store.write_aggregates([aggregate("windowed", now - 3 * MIN)])  # aggregates count too
    nodes = queries.node_status([health("shop1", "edge", now, readings_per_s=3.0)], now)

    devices = queries.device_activity(store, ["shop1"], nodes, now).set_index("device")

    assert devices["reporting"].to_dict() == {"fresh": True, "quiet": False, "windowed": True}
    summary = queries.site_summary(["shop1", "farm"], nodes, devices.reset_index())
    assert summary.to_dict("records") == [
        {"site": "shop1", "edge": "online", "nodes_online": "1/1", "devices_reporting": 2,
         "devices_known": 3, "readings_per_s": 3.0},
        {"site": "farm", "edge": "no health yet", "nodes_online": "0/0", "devices_reporting": 0,
         "devices_known": 0, "readings_per_s": 0.0},
    ]  # fmt: skip


def test_reporting_follows_the_sites_event_time_while_its_edge_is_online(store: Store) -> None:
    """``edgepipe sim --speed 60`` stamps readings far from the wall clock: the store's
    newest evidence of a live site, not "now", says which devices keep up."""
    now = T0 + 30 * 24 * HOUR  # the wall clock, a month after the simulated readings
    window = queries.REPORTING_WINDOW_MS
    store.write_readings("shop1", [fridge_reading(T0, 4.0, "fresh")])
    store.write_readings("shop1", [fridge_reading(T0 - window + MIN, 4.0, "keeping_up")])
    store.write_readings("shop1", [fridge_reading(T0 - window - MIN, 4.0, "lagging")])
    store.write_readings("shop2", [fridge_reading(T0, 4.0, "edge_gone")])
    store.write_readings("shop3", [fridge_reading(now - MIN, 4.0, "no_health")])
    reports = [health("shop1", "edge1", now), health("shop2", "edge2", now, status="offline")]
    nodes = queries.node_status(reports, now)

    devices = queries.device_activity(store, ["shop1", "shop2", "shop3"], nodes, now)

    assert devices.set_index("device")["reporting"].to_dict() == {
        "fresh": True, "keeping_up": True, "lagging": False,  # against the site's newest
        "edge_gone": False,  # no live edge vouches for event time: the wall clock decides
        "no_health": True,
    }  # fmt: skip
    assert devices.set_index("device").loc["lagging", "behind_s"] == (window + MIN) / 1000
    summary = queries.site_summary(["shop1"], nodes, devices).iloc[0]
    assert (summary["devices_reporting"], summary["devices_known"]) == (2, 3)


def test_pages_open_on_the_device_with_the_newest_data(store: Store) -> None:
    store.write_health(health("city", "edge-city", T0))  # a site with no series at all
    store.write_readings("farm", [fridge_reading(T0, 4.0, "older")])
    store.write_readings("farm", [fridge_reading(T0 + MIN, 4.0, "newest")])
    store.write_readings("shop", [fridge_reading(T0 + 10, 4.0, "middle")])

    assert store.sites()[0] == "city"
    assert queries.default_series(store, store.sites()) == ("farm", "newest")
    assert queries.default_series(store, ["city"]) is None


# -- alerts ---------------------------------------------------------------------------------


def test_an_alert_is_open_while_its_latest_state_is_raised(store: Store) -> None:
    store.write_alerts(
        [
            alert("still-open", T0, severity="critical"),
            alert("closed", T0 + 1, severity="critical"),
            alert("closed", T0 + 5, "cleared", severity="critical"),
            alert("same-instant", T0 + 7, severity="info"),
            alert("same-instant", T0 + 7, "cleared", severity="info"),
            alert("newest", T0 + 9),
        ]
    )

    found = queries.open_alerts(store)

    assert list(found["alert_id"]) == ["newest", "still-open"]
    assert queries.count_by_severity(found) == {"critical": 1, "warning": 1, "info": 0}


def test_live_alerts_filter_by_severity_and_kind_and_link_to_the_explorer(store: Store) -> None:
    store.write_alerts(
        [
            alert("a1", T0, severity="critical"),
            alert("a2", T0 + 1, severity="info", device="shelf1", kind="smart_shelf"),
            alert("a1", T0 + 2, "cleared", severity="critical"),
            alert("a3", T0 + 3, severity="critical", site="shop2"),
        ]
    )

    def ids(**filters: object) -> list[tuple[str, str]]:
        args: dict[str, object] = {"site": None, "severities": [], "kinds": [], "since_ms": 0}
        page = queries.live_alerts(store, **{**args, **filters})  # type: ignore[arg-type]
        return list(zip(page.frame["alert_id"], page.frame["state"], strict=True))

    assert ids() == [("a3", "raised"), ("a1", "cleared"), ("a2", "raised"), ("a1", "raised")]
    assert ids(severities=["critical"], site="shop1") == [("a1", "cleared"), ("a1", "raised")]
    assert ids(kinds=["smart_shelf"]) == [("a2", "raised")]
    frame = queries.live_alerts(store, site="shop1", severities=[], kinds=[], since_ms=0).frame
    assert list(frame["open"]) == [False, True, False]  # a1 was cleared, a2 is open
    assert frame["explorer"].iloc[1] == f"explorer?site=shop1&device=shelf1&metric=temp&at={T0 + 1}"


def test_live_alerts_say_how_many_match_beyond_the_rows_shown(store: Store) -> None:
    flood = [alert(f"w{i}", T0 + 10 + i) for i in range(2100)]  # newer than the rare one
    store.write_alerts([alert("rare", T0, severity="critical"), *flood])
    args: dict[str, object] = {"site": None, "kinds": [], "since_ms": 0}

    page = queries.live_alerts(store, severities=[], limit=200, **args)  # type: ignore[arg-type]
    rare = queries.live_alerts(store, severities=["critical"], **args)  # type: ignore[arg-type]

    assert (len(page.frame), page.total, page.capped) == (200, 2101, True)
    assert page.frame["alert_id"].iloc[0] == "w2099"
    assert list(rare.frame["alert_id"]) == ["rare"]  # found under 2,100 newer warnings
    assert (rare.total, rare.capped) == (1, False)


@pytest.mark.parametrize(
    "filters",
    [
        {"site": "shop1' OR '1'='1"},
        {"severities": ["critical", "x y"]},
        {"kinds": ["fridge\nfake"]},
    ],
)
def test_an_invalid_filter_is_refused_before_any_query(filters: dict[str, object]) -> None:
    args: dict[str, object] = {"site": None, "severities": [], "kinds": [], "since_ms": 0}
    with pytest.raises(ValueError, match="invalid"):
        queries.live_alerts(NoQueries(), **{**args, **filters})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid"):
        queries.series_view(NoQueries(), "shop1", "bad device", "temp", 0, 1)  # type: ignore[arg-type]


# -- device explorer ------------------------------------------------------------------------


def test_bucket_width_is_raw_for_short_spans_and_round_beyond() -> None:
    assert queries.bucket_ms(10 * MIN) is None
    assert queries.bucket_ms(HOUR) == 10_000  # 6 s wanted: the next round width
    assert queries.bucket_ms(7 * 24 * HOUR) == 1_800_000
    assert queries.bucket_ms(400 * 24 * HOUR) == 86_400_000


def test_a_day_at_one_hertz_is_downsampled_by_the_database(store: Store) -> None:
    # 86,400 readings (a sine around 4 °C) and one 60-s aggregate per minute.
    readings = [
        fridge_reading(T0 + i * 1000, round(4 + math.sin(i / 600), 1)) for i in range(86_400)
    ]
    store.write_readings("shop1", readings)
    store.write_aggregates([aggregate("fridge1", T0 + m * MIN) for m in range(1440)])
    store.write_alerts([alert("a1", T0 + HOUR)])
    store.write_labels(
        [Label(v=1, site="shop1", device="fridge1", metrics=["temp"], anomaly="drift",
               start=T0 + 2 * HOUR, end=T0 + 3 * HOUR),
         Label(v=1, site="shop1", device="fridge1", metrics=["door"], anomaly="stuck",
               start=T0, end=T0 + HOUR)]
    )  # fmt: skip

    view = queries.series_view(store, "shop1", "fridge1", "temp", T0, T0 + 24 * HOUR)

    assert view.every_ms == 300_000
    assert len(view.readings) == 288
    assert view.readings["count"].sum() == 86_400
    assert view.readings["min"].min() == pytest.approx(3.0)
    assert view.readings["max"].max() == pytest.approx(5.0)
    assert len(view.aggregates) == 288  # 1440 windows merged five by five, in the database
    widths = queries.to_ms(view.aggregates["end"]) - queries.to_ms(view.aggregates["start"])
    assert widths.eq(300_000).all()
    assert view.aggregates["count"].sum() == 1440 * 60
    assert list(view.alerts["alert_id"]) == ["a1"]
    assert list(view.labels["anomaly"]) == ["drift"]  # the door label is another metric's
    assert queries.to_ms(view.readings["time"]).iloc[1] == T0 + 300_000


def test_a_short_span_shows_raw_points_unless_there_are_too_many(store: Store) -> None:
    # 10 Hz for 10 minutes: 6,000 points, more than a chart (or InfluxDB's row limit) wants.
    store.write_readings("shop1", [fridge_reading(T0 + i * 100, 4.0) for i in range(6000)])
    store.write_readings("shop1", [fridge_reading(T0 + i * 1000, 4.0, "calm") for i in range(600)])

    busy = queries.series_view(store, "shop1", "fridge1", "temp", T0, T0 + 10 * MIN)
    calm = queries.series_view(store, "shop1", "calm", "temp", T0, T0 + 10 * MIN)

    assert (busy.every_ms, len(busy.readings), busy.readings["count"].sum()) == (1000, 600, 6000)
    assert (calm.every_ms, len(calm.readings)) == (None, 600)


def test_the_explorer_chart_has_real_axes_and_every_layer(store: Store) -> None:
    store.write_readings("shop1", [fridge_reading(T0 + i * 1000, 4 + i / 10) for i in range(30)])
    store.write_aggregates([aggregate("fridge1", T0)])
    store.write_alerts([alert("a1", T0 + 10_000)])
    store.write_labels(
        [Label(v=1, site="shop1", device="fridge1", metrics=["temp"], anomaly="spike",
               start=T0 + 5_000, end=T0 + 8_000)]
    )  # fmt: skip
    view = queries.series_view(store, "shop1", "fridge1", "temp", T0, T0 + 10 * MIN)

    spec = charts.series_chart(view, "temp", "°C").to_dict()

    text = json.dumps(spec, ensure_ascii=False)
    for layer in (charts.READINGS, charts.BAND, charts.ALERT, charts.LABEL):
        assert layer in text
    assert '"zero": false' in text
    assert '"type": "utc"' in text
    assert charts.time_extent(view) == (T0, T0 + MIN)  # zoomed to the data, not the range


def test_the_explorer_chart_draws_the_peer_band_behind_the_devices_own_layers(store: Store) -> None:
    store.write_readings("shop1", [fridge_reading(T0 + i * 1000, 4 + i / 10) for i in range(30)])
    store.write_aggregates([aggregate("fridge1", T0), aggregate("fridge2", T0, lo=2.0, hi=4.0),
                            aggregate("fridge3", T0, lo=4.0, hi=6.0)])  # fmt: skip
    view = queries.series_view(store, "shop1", "fridge1", "temp", T0, T0 + 10 * MIN, kind="fridge")

    spec = charts.series_chart(view, "temp", "°C").to_dict()

    whats = [spec["datasets"][layer["data"]["name"]][0]["what"] for layer in spec["layer"]]
    assert view.peers.iloc[0][["low", "median", "high", "peers"]].tolist() == [3.5, 4.0, 4.5, 2]
    assert whats[:2] == [charts.PEER_BAND, charts.PEER_MEDIAN]  # drawn first: behind the rest
    assert whats[2:] == [charts.BAND, charts.READINGS]
    legend = spec["layer"][0]["encoding"]["color"]["scale"]["domain"]
    assert charts.PEER_BAND in legend and charts.PEER_MEDIAN in legend  # named for the reader


# -- data reduction and edge health ---------------------------------------------------------


def test_reduction_compares_aggregate_counts_with_stored_points(store: Store) -> None:
    store.write_aggregates([aggregate("fridge1", T0, count=100), aggregate("fridge1", T0 + MIN)])
    store.write_readings("shop1", [fridge_reading(T0 + i * 10_000, 4.0) for i in range(8)])

    table = queries.reduction_table(store, ["shop1"], *queries.ALL_TIME)

    row = table.iloc[0].to_dict()
    assert (row["metric"], row["unit"], row["points_in"], row["points_stored"]) == (
        "temp", "°C", 160, 8
    )  # fmt: skip
    assert row["shipped_pct"] == pytest.approx(5.0)
    assert row["reduction_x"] == pytest.approx(20.0)
    assert row["codec_bound"] == pytest.approx(0.05)  # fridge temp resolution 0.1
    assert queries.points_totals(table) == (160, 8)


def test_units_and_codec_bounds_come_from_the_sites_own_catalogue(store: Store) -> None:
    from pipeline.protocol.catalog import KINDS, Catalog, DeviceKind, Metric

    fahrenheit = DeviceKind("fridge", "retail", {"temp": Metric("temp", "°F", 0.2, -40.0, 120.0)})
    store.write_catalogs([Catalog({**KINDS, "fridge": fahrenheit}).to_message("shop1")])
    store.write_aggregates([aggregate("fridge1", T0, count=100)])
    store.write_readings("shop1", [fridge_reading(T0 + i * 10_000, 4.0) for i in range(8)])

    row = queries.reduction_table(store, ["shop1"], *queries.ALL_TIME).iloc[0].to_dict()
    assert (row["unit"], row["codec_bound"]) == ("°F", pytest.approx(0.1))
    catalog = queries.site_catalog(store, "shop1")
    assert queries.unit_of("fridge", "temp", catalog) == "°F"
    assert queries.unit_of("fridge", "temp", queries.site_catalog(store, "elsewhere")) == "°C"


def test_edge_health_keeps_missing_gauges_missing_and_counts_dead_letters_by_reason() -> None:
    live = Health(
        v=1, site="farm", node="edge-farm", ts=T0, status="online",
        counters={"accepted": 10, "dead_letters.bad_json": 2, "dead_letters.too_large": 0},
        gauges={"cpu_s": 1.5, "rss_mb": 60.0, "selection_scale": 1.0, "load_shedding": 0.0,
                "selection_ratio.moisture": 0.25},
    )  # fmt: skip
    will = Health(v=1, site="shop", node="edge-shop", ts=T0, status="offline")

    table = queries.edge_health([live, will], T0 + 1000).set_index("node")
    reasons = queries.dead_letters_by_reason([live, will])
    totals, ratios = queries.node_reduction([live, will])

    assert table.loc["edge-farm", "load_shedding"] == "no"
    assert table.loc["edge-shop", "load_shedding"] == "unknown"
    assert math.isnan(table.loc["edge-shop", "rss_mb"])
    assert reasons.to_dict("records") == [
        {"site": "farm", "node": "edge-farm", "reason": "bad_json", "count": 2}
    ]
    assert ratios.to_dict("records") == [
        {"site": "farm", "node": "edge-farm", "metric": "moisture", "shipped_pct": 25.0}
    ]
    assert list(totals["readings_accepted"]) == [10, 0]


# -- history --------------------------------------------------------------------------------


def test_readings_per_second_per_site_sum_the_nodes_up_to_the_newest_report(store: Store) -> None:
    for i in range(6):  # an hour of reports every 10 minutes, two farm nodes and one city node
        ts = T0 + i * 10 * MIN
        store.write_health(health("farm", "edge-a", ts, readings_per_s=10.0 + i))
        store.write_health(health("farm", "edge-b", ts, readings_per_s=5.0))
        store.write_health(health("city", "edge-c", ts, readings_per_s=2.5))
    store.write_health(health("cloud", "worker-1", T0, readings_per_s=999.0))  # not an edge

    rates = queries.site_rates(store, HOUR)

    farm = rates[rates["site"] == "farm"]
    assert list(farm["readings_per_s"]) == [15.0 + i for i in range(6)]
    assert set(rates["site"]) == {"farm", "city"}
    assert queries.to_ms(rates["time"]).max() == T0 + 50 * MIN  # ends on the newest report
    assert queries.to_ms(rates["time"]).min() >= T0 + 50 * MIN - HOUR


def test_node_history_has_one_row_per_time_node_and_gauge(store: Store) -> None:
    store.write_health(health("farm", "edge-a", T0, readings_per_s=10.0, queue_items=3.0))
    store.write_health(health("farm", "edge-a", T0 + 10_000, readings_per_s=20.0))

    history = queries.node_history(store, HOUR, ["readings_per_s", "queue_items"])

    every = queries.history_window(T0, HOUR)[2]
    assert every == 30_000
    assert history[["node", "gauge", "value"]].to_dict("records") == [
        {"node": "edge-a", "gauge": "readings_per_s", "value": 15.0},  # two reports, one bucket
        {"node": "edge-a", "gauge": "queue_items", "value": 3.0},
    ]


def test_open_alerts_over_time_end_on_the_open_count_the_page_shows(store: Store) -> None:
    store.write_alerts(
        [
            alert("c1", T0, severity="critical"),
            alert("w1", T0 + 5 * MIN),
            alert("w2", T0 + 10 * MIN),
            alert("w1", T0 + 20 * MIN, "cleared"),
            alert("s2", T0 + 30 * MIN, site="shop2"),
        ]
    )
    open_now = queries.count_by_severity(queries.open_alerts(store))

    history = queries.alert_history(store, HOUR, open_now)

    last = history.open[history.open["time"] == history.open["time"].max()]
    assert dict(zip(last["severity"], last["open"], strict=True)) == open_now
    warning = history.open[history.open["severity"] == "warning"].set_index("time")["open"]
    at = {queries.to_ms(pd.Series([t])).iloc[0]: n for t, n in warning.items()}
    every = history.every_ms
    assert at[T0 + 10 * MIN + every] == 2  # w1 and w2 open
    assert at[T0 + 20 * MIN + every] == 1  # w1 cleared, s2 not yet raised
    assert at[T0 + 30 * MIN + every] == 2  # s2 raised
    assert at[T0 + every] == 0
    raised = history.raised.groupby("site")["raised"].sum().to_dict()
    assert raised == {"shop1": 3, "shop2": 1}
