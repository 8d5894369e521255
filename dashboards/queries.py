"""What the dashboard shows, as pure functions: a Store in, pandas DataFrames or plain values out.

Why a module of its own: the views only lay things out, so every number on a page can be
tested against a real store without Streamlit, and every query goes through the
:class:`~pipeline.cloud.store.Store` protocol (InfluxDB or SQLite alike, never MQTT).

Rules kept here:

* Every filter value (site, device, metric, kind, severity) is checked with
  :func:`pipeline.protocol.topics.is_valid_id` before any query is built (``ValueError``
  otherwise), even though the store checks again: a bad URL parameter must never reach it.
* Time series are downsampled by the database (``every_ms``), so a chart over a million
  stored points moves at most about :data:`MAX_CHART_POINTS` rows.
* "Now" is a parameter, so the online/offline and "reporting" rules are testable.
* Times are Unix ms in and tz-aware UTC ``Timestamp`` columns out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pandas as pd

from pipeline.cloud.store import DeviceBucket, Store
from pipeline.cloud.store.base import CLOUD_SITE, StoreConfigError, StoreUnavailable
from pipeline.errors import StoreError
from pipeline.protocol.catalog import Catalog
from pipeline.protocol.messages import AlertData, Health
from pipeline.protocol.topics import is_valid_id

SEVERITIES = ("critical", "warning", "info")
HEALTH_INTERVAL_S = 10.0  # edge.health_interval_s default
OFFLINE_AFTER_INTERVALS = 3  # a node silent for 3 health intervals is offline
REPORTING_WINDOW_MS = 10 * 60_000  # two selection heartbeats (select.heartbeat_s = 300 s)
# InfluxDB 1.x answers at most 10,000 rows per query by default (http.max-row-limit), so no
# query here asks for more than half of that.
ALERT_SCAN_LIMIT = 5000  # newest alert records read to find the open ones
MAX_CHART_POINTS = 600  # buckets per chart
RAW_SPAN_MS = 10 * 60_000  # up to this span a chart shows the stored points themselves...
MAX_RAW_POINTS = 5000  # ...unless there are more of them than this
WINDOW_BUCKET_MS = 60_000  # from this bucket width on, aggregate windows are merged too
ALL_TIME = (0, 2**62)  # [start, end) that holds every record

# Bucket widths a chart may use: round numbers, so buckets line up with clock time.
_NICE_MS = [
    s * 1000 for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
] + [43_200_000, 86_400_000]


def require_id(field: str, value: object) -> str:
    """``value`` if it is a valid id (``^[A-Za-z0-9_-]{1,64}$``), else ``ValueError``."""
    if isinstance(value, str) and is_valid_id(value):
        return value
    raise ValueError(f"invalid {field} {str(value)[:80]!r}: expected ^[A-Za-z0-9_-]{{1,64}}$")


def to_time(ms: int | float | Sequence[int] | pd.Series) -> pd.Timestamp | pd.Series:
    """Unix ms → tz-aware UTC timestamps (one value or a column)."""
    if isinstance(ms, int | float):
        return pd.Timestamp(int(ms), unit="ms", tz="UTC")
    return pd.to_datetime(pd.Series(ms, dtype="int64"), unit="ms", utc=True)


def to_ms(times: pd.Series) -> pd.Series:
    """tz-aware timestamps → Unix ms as int64, whatever unit pandas chose to store them in."""
    return (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")


# -- fleet: nodes, sites, devices --------------------------------------------------------------


def split_health(health: Sequence[Health]) -> tuple[list[Health], list[Health]]:
    """(edge nodes, cloud workers): workers report under the reserved site ``cloud``."""
    edges = [h for h in health if h.site != CLOUD_SITE]
    return edges, [h for h in health if h.site == CLOUD_SITE]


def node_status(
    health: Sequence[Health], now_ms: int, health_interval_s: float = HEALTH_INTERVAL_S
) -> pd.DataFrame:
    """One row per edge node from its latest health report: online or offline, and why.

    A node is offline when its last report says so (its last will, or a clean stop) or when
    it has been silent for more than :data:`OFFLINE_AFTER_INTERVALS` health intervals: a
    node that lost its network cannot send its will in time, so silence must count too.
    """
    limit_s = OFFLINE_AFTER_INTERVALS * health_interval_s
    rows = []
    for h in health:
        age_s = max(0.0, (now_ms - h.ts) / 1000)
        if h.status != "online":
            status, why = "offline", f"reported {h.status} (last will or clean stop)"
        elif age_s > limit_s:
            status, why = "offline", f"silent for {age_s:.0f} s (> {limit_s:g} s)"
        else:
            status, why = "online", ""
        rows.append(
            {
                "site": h.site,
                "node": h.node,
                "status": status,
                "why": why,
                "last_health": to_time(h.ts),
                "age_s": round(age_s, 1),
                "readings_per_s": float(h.gauges.get("readings_per_s", math.nan)),
            }
        )
    columns = ["site", "node", "status", "why", "last_health", "age_s", "readings_per_s"]
    return pd.DataFrame(rows, columns=columns)


def device_activity(
    store: Store,
    sites: Iterable[str],
    nodes: pd.DataFrame,
    now_ms: int,
    window_ms: int = REPORTING_WINDOW_MS,
) -> pd.DataFrame:
    """One row per known device: its newest stored evidence and whether it is reporting.

    Reporting means a stored reading or aggregate window within ``window_ms`` of the
    site's reference time (the edge ships every metric at least once per selection
    heartbeat, so a live device is never silent in the store for long). Devices stamp
    readings with event time, which a replay or ``edgepipe sim --speed 60`` runs far from
    the wall clock, so while one of the site's edge nodes is online (``nodes``, from
    :func:`node_status`) the reference is the site's newest stored evidence: the edge's own
    view of event time. With no node online, or no health at all, nothing vouches for
    event time and the reference is ``now_ms``.
    """
    online = set(nodes.loc[nodes["status"] == "online", "site"]) if not nodes.empty else set()
    rows = []
    for site in sites:
        seen = store.last_seen(require_id("site", site))
        reference = max(ts for _, _, ts in seen) if seen and site in online else now_ms
        for device, kind, ts in seen:
            rows.append(
                {
                    "site": site,
                    "device": device,
                    "kind": kind,
                    "last_seen": to_time(ts),
                    "behind_s": round((reference - ts) / 1000, 1),
                    "reporting": reference - ts <= window_ms,
                }
            )
    columns = ["site", "device", "kind", "last_seen", "behind_s", "reporting"]
    return pd.DataFrame(rows, columns=columns)


def default_series(store: Store, sites: Sequence[str]) -> tuple[str, str] | None:
    """The (site, device) a page opens on: the device with the newest stored data.

    Sites list anything with a record (health, alerts), so the alphabetically first one
    may hold no series at all. Ties go to the first site and device in order.
    """
    best: tuple[int, str, str] | None = None
    for site in sites:
        for device, _, ts in store.last_seen(require_id("site", site)):
            if best is None or ts > best[0]:
                best = (ts, site, device)
    return None if best is None else (best[1], best[2])


def site_summary(sites: Sequence[str], nodes: pd.DataFrame, devices: pd.DataFrame) -> pd.DataFrame:
    """Per site: edge state (online if any of its nodes is), nodes and devices reporting."""
    rows = []
    for site in sites:
        mine = nodes[nodes["site"] == site]
        online = mine[mine["status"] == "online"]
        devs = devices[devices["site"] == site]
        if mine.empty:
            edge = "no health yet"
        else:
            edge = "online" if len(online) else "offline"
        rows.append(
            {
                "site": site,
                "edge": edge,
                "nodes_online": f"{len(online)}/{len(mine)}",
                "devices_reporting": int(devs["reporting"].sum()),
                "devices_known": len(devs),
                "readings_per_s": float(online["readings_per_s"].fillna(0).sum()),
            }
        )
    columns = [
        "site",
        "edge",
        "nodes_online",
        "devices_reporting",
        "devices_known",
        "readings_per_s",
    ]
    return pd.DataFrame(rows, columns=columns)


# -- alerts -------------------------------------------------------------------------------------

ALERT_COLUMNS = [
    "time",
    "site",
    "device",
    "kind",
    "metric",
    "state",
    "severity",
    "source",
    "score",
    "value",
    "reason",
    "model_version",
    "alert_id",
    "reading_ts",
]


def alerts_frame(alerts: Sequence[AlertData]) -> pd.DataFrame:
    """Alert records as a table, in the order given."""
    rows = [
        {
            "time": to_time(a.reading_ts),
            "site": a.site,
            "device": a.device,
            "kind": a.kind,
            "metric": a.metric,
            "state": a.state,
            "severity": a.severity,
            "source": a.source,
            "score": a.score,
            "value": a.value,
            "reason": a.reason,
            "model_version": a.model_version,
            "alert_id": a.alert_id,
            "reading_ts": a.reading_ts,
        }
        for a in alerts
    ]
    return pd.DataFrame(rows, columns=ALERT_COLUMNS)


def latest_states(alerts: Sequence[AlertData]) -> dict[tuple[str, str], AlertData]:
    """The latest record of each ``(site, alert_id)``; at one instant a clear beats a raise."""
    rank = {"raised": 0, "cleared": 1}
    latest: dict[tuple[str, str], AlertData] = {}
    for a in sorted(alerts, key=lambda a: (a.reading_ts, rank.get(a.state, 2))):
        latest[(a.site, a.alert_id)] = a
    return latest


def open_alerts(store: Store, limit: int = ALERT_SCAN_LIMIT) -> pd.DataFrame:
    """Alerts whose latest state is ``raised``, newest first.

    Read from the newest ``limit`` alert records: a clear is never older than its raise,
    so every raise read here has its clear read too.
    """
    records = store.query_alerts(None, since_ms=0, limit=limit)
    raised = [a for a in latest_states(records).values() if a.state == "raised"]
    raised.sort(key=lambda a: (-a.reading_ts, a.site, a.alert_id))
    return alerts_frame(raised)


def count_by_severity(alerts: pd.DataFrame) -> dict[str, int]:
    """Alerts per severity, the known ones first (zero included), then any other."""
    counts = {s: 0 for s in SEVERITIES}
    for severity, n in alerts["severity"].value_counts().items():
        counts[str(severity)] = int(n)
    return counts


def explorer_link(site: str, device: str, metric: str, at_ms: int | None = None) -> str:
    """The device explorer's address (relative to any page) preset to one series."""
    params: dict[str, str | int] = {"site": site, "device": device, "metric": metric}
    if at_ms is not None:
        params["at"] = int(at_ms)
    return "explorer?" + urlencode(params)


ALERT_SOURCES = ("edge", "cloud")  # who raised an alert: the site's node, the fleet analyst
LIVE_ALERT_ROWS = (200, 1000, 5000)  # rows the live table may show; 5,000: InfluxDB's budget


@dataclass(frozen=True)
class AlertPage:
    """The newest alert records that match the filters, and how many match in all."""

    frame: pd.DataFrame  # ALERT_COLUMNS with ``open`` and ``explorer``, newest first
    total: int  # records matching the filters in the store, however many are shown
    limit: int

    @property
    def capped(self) -> bool:
        return self.total > len(self.frame)


def live_alerts(
    store: Store,
    *,
    site: str | None,
    severities: Sequence[str],
    kinds: Sequence[str],
    since_ms: int,
    limit: int = LIVE_ALERT_ROWS[0],
    sources: Sequence[str] = (),
) -> AlertPage:
    """Alert records newest first, filtered in the database, with ``open`` and a link per row.

    ``sources`` (empty: any): ``edge`` (the site's node) or ``cloud`` (the fleet analyst).

    ``open``: a raise whose alert has no clear among the records shown; a clear is never
    older than its raise and sorts before it at one instant, so when a raise is shown its
    clear is too. ``total`` counts every matching record, so the page can say what it cut.
    """
    if site is not None:
        require_id("site", site)
    wanted_severities = sorted({require_id("severity", s) for s in severities})
    wanted_kinds = sorted({require_id("kind", k) for k in kinds})
    wanted_sources = sorted({require_id("source", s) for s in sources})
    records = store.query_alerts(site, since_ms, limit, wanted_severities, wanted_kinds, wanted_sources)
    total = store.count_alerts(site, since_ms, wanted_severities, wanted_kinds, wanted_sources)
    latest = latest_states(records)
    frame = alerts_frame(records)
    frame.insert(
        6,
        "open",
        [a.state == "raised" and latest[(a.site, a.alert_id)].state == "raised" for a in records],
    )
    frame["explorer"] = [explorer_link(a.site, a.device, a.metric, a.reading_ts) for a in records]
    return AlertPage(frame, max(total, len(records)), limit)


# -- history: readings/s, alerts and node gauges over time ------------------------------------

HISTORY_SPANS_MS = {"last hour": 3_600_000, "last day": 86_400_000}
HISTORY_POINTS = 120  # buckets per history chart: sites x severities x states stay < 5,000 rows
NODE_HISTORY_GAUGES = {
    "readings_per_s": "readings/s",
    "queue_items": "uplink queue (items)",
    "queue_oldest_age_s": "oldest queued item (s)",
    "backlog": "MQTT backlog (messages)",
    "selection_scale": "selection scale",
    "rss_mb": "memory (RSS, MB)",
}


def history_window(newest_ms: int | None, span_ms: int) -> tuple[int, int, int]:
    """``(start, end, every)``: ``span_ms`` ending just after ``newest_ms`` (the data's own
    newest time, so a replay or a fast simulation is charted where its data is)."""
    every = nice_bucket_ms(span_ms, HISTORY_POINTS)
    end = (newest_ms if newest_ms is not None else 0) + 1
    end += -end % every  # whole buckets: the newest one is not cut short
    return end - span_ms, end, every


def site_rates(store: Store, span_ms: int) -> pd.DataFrame:
    """Readings/s per edge site over ``span_ms`` up to its newest health report.

    Per node the mean ``readings_per_s`` gauge per bucket, summed over the site's nodes.
    Health reports carry the node's clock (wall time), so this axis is report time.
    """
    edges = split_health(store.latest_health())[0]
    newest = max((h.ts for h in edges), default=None)
    columns = ["time", "site", "readings_per_s"]
    if newest is None:
        return pd.DataFrame(columns=columns)
    start, end, every = history_window(newest, span_ms)
    points = [
        p
        for p in store.health_history(start, end, every, ["readings_per_s"])
        if p.site != CLOUD_SITE and "readings_per_s" in p.gauges
    ]
    frame = pd.DataFrame(
        [(p.ts, p.site, p.gauges["readings_per_s"]) for p in points],
        columns=["ts", "site", "readings_per_s"],
    )
    frame = frame.groupby(["ts", "site"], as_index=False)["readings_per_s"].sum()
    frame.insert(0, "time", to_time(frame["ts"]))
    return frame[columns]


def node_history(
    store: Store, span_ms: int, gauges: Sequence[str] = tuple(NODE_HISTORY_GAUGES)
) -> pd.DataFrame:
    """Each edge node's gauges over ``span_ms`` up to the newest report: one row per
    (time, node, gauge), the mean of the bucket's reports."""
    edges = split_health(store.latest_health())[0]
    newest = max((h.ts for h in edges), default=None)
    columns = ["time", "site", "node", "gauge", "value"]
    if newest is None:
        return pd.DataFrame(columns=columns)
    start, end, every = history_window(newest, span_ms)
    rows = [
        (p.ts, p.site, p.node, gauge, value)
        for p in store.health_history(start, end, every, list(gauges))
        if p.site != CLOUD_SITE
        for gauge, value in p.gauges.items()
    ]
    frame = pd.DataFrame(rows, columns=["ts", "site", "node", "gauge", "value"])
    frame.insert(0, "time", to_time(frame["ts"]))
    return frame[columns]


@dataclass(frozen=True)
class AlertHistory:
    """Alerts over time, in event time (the readings' clock), ending at the newest alert."""

    raised: pd.DataFrame  # time, site, raised: raise records per bucket
    open: pd.DataFrame  # time, severity, open: open alerts at the end of each bucket
    every_ms: int


def alert_history(store: Store, span_ms: int, open_now: dict[str, int]) -> AlertHistory:
    """Raised alerts per site and bucket, and the open alerts per severity over time.

    The open count is anchored at ``open_now`` (the page's own open-alert figures, see
    :func:`open_alerts`) and walked back bucket by bucket: open at a bucket's end is the
    count now minus the raises, plus the clears, recorded after it. So the chart ends on
    the number the page shows; it is clipped at zero where older history is incomplete.
    """
    newest = store.query_alerts(None, 0, limit=1)
    start, end, every = history_window(newest[0].reading_ts if newest else None, span_ms)
    counts = store.alert_counts(start, end, every) if newest else []
    raised = pd.DataFrame(
        [(c.ts, c.site, c.count) for c in counts if c.state == "raised"],
        columns=["ts", "site", "raised"],
    ).astype({"ts": "int64", "raised": "int64"})
    raised = raised.groupby(["ts", "site"], as_index=False)["raised"].sum()
    raised.insert(0, "time", to_time(raised["ts"]))

    buckets = list(range(start, end, every))
    rows = []
    for severity in [*SEVERITIES, *sorted(set(open_now) - set(SEVERITIES))]:
        net = dict.fromkeys(buckets, 0)
        for c in counts:
            if c.severity == severity and c.ts in net:
                net[c.ts] += c.count if c.state == "raised" else -c.count
        level = open_now.get(severity, 0)
        for ts in reversed(buckets):
            rows.append((ts + every, severity, max(0, level)))  # at the bucket's end
            level -= net[ts]
    open_frame = pd.DataFrame(rows, columns=["ts", "severity", "open"]).sort_values(
        ["ts", "severity"], ignore_index=True
    )
    open_frame.insert(0, "time", to_time(open_frame["ts"]))
    return AlertHistory(
        raised[["time", "site", "raised"]], open_frame[["time", "severity", "open"]], every
    )


# -- device explorer ----------------------------------------------------------------------------


def duration_text(ms: int) -> str:
    """A bucket width as people say it: ``5 s``, ``30 min``, ``2 h``, ``1 d``."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms} ms"


def site_catalog(store: Store, site: str) -> Catalog:
    """The site's catalogue as its edge published it (stored by the cloud), else the built-ins.

    Why per site: two sites may define a kind of the same name differently (issue 17); each
    site's units come from its own edge.
    """
    message = store.latest_catalogs().get(site)
    return Catalog.from_message(message) if message is not None else Catalog.builtin()


def metrics_of(kind: str, catalog: Catalog | None = None) -> list[str]:
    """The catalogue's metrics of a device kind (empty for a kind it does not know)."""
    found = (catalog or Catalog.builtin()).kinds.get(kind)
    return list(found.metrics) if found else []


def unit_of(kind: str, metric: str, catalog: Catalog | None = None) -> str:
    found = (catalog or Catalog.builtin()).metric(kind, metric)
    return found.unit if found is not None else ""


def bucket_ms(span_ms: int, max_points: int = MAX_CHART_POINTS) -> int | None:
    """The bucket width for a chart over ``span_ms``: None (raw points) for short spans.

    Otherwise the smallest round width that gives at most ``max_points`` buckets.
    """
    if span_ms <= RAW_SPAN_MS:
        return None
    return nice_bucket_ms(span_ms, max_points)


def nice_bucket_ms(span_ms: int, max_points: int = MAX_CHART_POINTS) -> int:
    """The smallest round bucket width (1 s at least) giving at most ``max_points`` buckets."""
    wanted = math.ceil(span_ms / max_points)
    for width in _NICE_MS:
        if width >= wanted:
            return width
    return int(math.ceil(wanted / 86_400_000) * 86_400_000)


@dataclass(frozen=True)
class SeriesView:
    """Everything the explorer chart draws for one (site, device, metric) and time range."""

    readings: pd.DataFrame  # time, value, min, max, count (mean per bucket when every_ms)
    aggregates: pd.DataFrame  # start, end, min, max, mean, count, anomalies
    alerts: pd.DataFrame  # ALERT_COLUMNS, newest first
    labels: pd.DataFrame  # start, end, anomaly, metrics
    every_ms: int | None
    start_ms: int
    end_ms: int
    peers: pd.DataFrame = field(default_factory=lambda: empty_peer_band())  # PEER_BAND_COLUMNS
    peers_refused: str = ""  # why the store would not give the band (the rest is drawn)

    @property
    def empty(self) -> bool:
        return self.readings.empty and self.aggregates.empty and self.alerts.empty


PEER_BAND_COLUMNS = ["start", "end", "low", "median", "high", "peers"]
PEER_QUANTILES = (0.25, 0.5, 0.75)  # the band: the peers' interquartile range, and their median
MIN_PEERS = 2  # fewer peers in a bucket than this: no band there (one device is no spread)


def empty_peer_band() -> pd.DataFrame:
    return pd.DataFrame(
        {name: pd.Series(dtype="float64") for name in PEER_BAND_COLUMNS}
    ).astype({"start": "datetime64[ns, UTC]", "end": "datetime64[ns, UTC]", "peers": "int64"})


def peer_band_of(
    buckets: Sequence[DeviceBucket], device: str, every_ms: int, min_peers: int = MIN_PEERS
) -> pd.DataFrame:
    """Per bucket, the spread of the other devices' means: quartiles and median, and how many.

    ``device`` itself is left out, so its own line is drawn against its peers, not against a
    band it helps to make (the analyst compares each device with the others the same way).
    Buckets with fewer than ``min_peers`` finite peer means have no band.
    """
    frame = pd.DataFrame(
        {"ts": [b.ts for b in buckets if b.device != device],
         "mean": [b.mean for b in buckets if b.device != device]},
        columns=["ts", "mean"],
    ).astype({"ts": "int64", "mean": "float64"}).dropna()  # fmt: skip
    if frame.empty:
        return empty_peer_band()
    grouped = frame.groupby("ts")["mean"]
    quantiles = grouped.quantile(list(PEER_QUANTILES)).unstack()
    counts = grouped.count()
    kept = counts[counts >= min_peers].index
    if kept.empty:
        return empty_peer_band()
    quantiles, counts = quantiles.loc[kept], counts.loc[kept]
    low, median, high = (quantiles[q].to_numpy() for q in PEER_QUANTILES)
    starts = kept.to_numpy()
    return pd.DataFrame(
        {"start": to_time(starts), "end": to_time(starts + every_ms), "low": low,
         "median": median, "high": high, "peers": counts.to_numpy().astype("int64")}
    )  # fmt: skip


def peer_band(
    store: Store, site: str, kind: str, metric: str, device: str, start_ms: int, end_ms: int, every_ms: int
) -> pd.DataFrame:
    """The peer band of ``device``: its kind's other devices at its site, per bucket, in one
    query (the store merges each device's windows per bucket; quartiles are taken here)."""
    site, kind = require_id("site", site), require_id("kind", kind)
    metric, device = require_id("metric", metric), require_id("device", device)
    buckets = store.query_kind_buckets(site, kind, metric, start_ms, end_ms, every_ms)
    return peer_band_of(buckets, device, every_ms)


def series_view(
    store: Store,
    site: str,
    device: str,
    metric: str,
    start_ms: int,
    end_ms: int,
    max_points: int = MAX_CHART_POINTS,
    kind: str | None = None,
) -> SeriesView:
    """Stored readings (downsampled in the database), aggregate band, alerts and labels; with
    ``kind``, the peer band too, in the same windows as the device's aggregates."""
    site, device = require_id("site", site), require_id("device", device)
    metric = require_id("metric", metric)
    every = bucket_ms(end_ms - start_ms, max_points)
    if every is None:  # a short span: raw points, unless a burst makes them too many
        probe = store.query_readings(
            site, device, metric, start_ms, end_ms, every_ms=max(1, end_ms - start_ms)
        )
        if sum(r.count for r in probe) > MAX_RAW_POINTS:
            every = nice_bucket_ms(end_ms - start_ms, max_points)
    rows = store.query_readings(site, device, metric, start_ms, end_ms, every_ms=every)
    readings = pd.DataFrame(
        {
            "time": to_time([r.ts for r in rows]),
            "value": pd.Series([r.value for r in rows], dtype="float64"),
            "min": pd.Series([r.min for r in rows], dtype="float64"),
            "max": pd.Series([r.max for r in rows], dtype="float64"),
            "count": pd.Series([r.count for r in rows], dtype="int64"),
        }
    )
    if every is not None and every >= WINDOW_BUCKET_MS:
        # Long ranges: the database merges windows per bucket (a week of 1-minute windows
        # would be 10,080 rectangles, and past InfluxDB's row limit).
        buckets = store.query_aggregate_buckets(site, device, metric, start_ms, end_ms, every)
        windows = [
            (b.ts, b.ts + every, b.min, b.max, b.mean, b.count, b.anomalies) for b in buckets
        ]
    else:
        aggs = store.query_aggregates(site, device, metric, start_ms, end_ms)
        windows = [(a.start, a.end, a.min, a.max, a.mean, a.count, a.anomalies) for a in aggs]
    columns = ["start", "end", "min", "max", "mean", "count", "anomalies"]
    aggregates = pd.DataFrame(windows, columns=columns).astype(
        {"start": "int64", "end": "int64", "min": "float64", "max": "float64",
         "mean": "float64", "count": "int64", "anomalies": "int64"}
    )  # fmt: skip
    aggregates["start"] = to_time(aggregates["start"])
    aggregates["end"] = to_time(aggregates["end"])

    records = store.query_alerts(site, since_ms=start_ms, limit=ALERT_SCAN_LIMIT)
    alerts = alerts_frame(
        [a for a in records if a.device == device and a.metric == metric and a.reading_ts < end_ms]
    )
    labels = [
        lab
        for lab in store.query_labels(site, device, start_ms, end_ms)
        if not lab.metrics or metric in lab.metrics
    ]
    label_frame = pd.DataFrame(
        {
            "start": to_time([lab.start for lab in labels]),
            "end": to_time([lab.end for lab in labels]),
            "anomaly": pd.Series([lab.anomaly for lab in labels], dtype="object"),
            "metrics": pd.Series([",".join(lab.metrics) for lab in labels], dtype="object"),
        }
    )
    peers, refused = empty_peer_band(), ""
    if kind is not None and windows:
        # the aggregate windows' own width, or the buckets they were merged into
        width = every if every is not None and every >= WINDOW_BUCKET_MS else windows[0][1] - windows[0][0]
        if width > 0:
            try:
                peers = peer_band(store, site, kind, metric, device, start_ms, end_ms, width)
            except (StoreUnavailable, StoreConfigError):
                raise
            except StoreError as exc:  # e.g. an InfluxDB max-row-limit under a huge kind: the
                refused = str(exc)  # device's own series is still worth drawing
    return SeriesView(readings, aggregates, alerts, label_frame, every, start_ms, end_ms, peers, refused)


# -- data reduction -----------------------------------------------------------------------------


def reduction_table(store: Store, sites: Sequence[str], start_ms: int, end_ms: int) -> pd.DataFrame:
    """Per site and metric: points in (aggregate counts) against points stored (shipped).

    ``codec_bound`` is the largest ``resolution / 2`` among the site's kinds that have the
    metric: the batch codec's proven error bound (docs/protocol.md). Selection adds its own
    tolerance, an edge setting the store does not hold.
    """
    rows = []
    for site in sites:
        require_id("site", site)
        kinds = {kind for _, kind in store.devices(site)}
        catalog = site_catalog(store, site).kinds
        for t in store.metric_totals(site, start_ms, end_ms):
            steps = [
                catalog[k].metrics[t.metric]
                for k in kinds
                if k in catalog and t.metric in catalog[k].metrics
            ]
            rows.append(
                {
                    "site": site,
                    "metric": t.metric,
                    "unit": steps[0].unit if steps else "",
                    "points_in": t.readings_in,
                    "points_stored": t.points_stored,
                    "shipped_pct": 100 * t.points_stored / t.readings_in
                    if t.readings_in
                    else math.nan,
                    "reduction_x": t.readings_in / t.points_stored if t.points_stored else math.nan,
                    "anomalies": t.anomalies,
                    "codec_bound": max(m.resolution for m in steps) / 2 if steps else math.nan,
                }
            )
    columns = [
        "site",
        "metric",
        "unit",
        "points_in",
        "points_stored",
        "shipped_pct",
        "reduction_x",
        "anomalies",
        "codec_bound",
    ]
    return pd.DataFrame(rows, columns=columns)


def node_reduction(health: Sequence[Health]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From the edges' own counters: (per node totals, per node and metric selection ratio).

    Counters and ratios are over each edge process's life, so a restart starts them again.
    """
    totals = pd.DataFrame(
        [
            {
                "site": h.site,
                "node": h.node,
                "readings_accepted": h.counters.get("accepted", 0),
                "points_shipped": h.counters.get("readings_shipped", 0),
                "batches_shipped": h.counters.get("batches_shipped", 0),
                "aggregates_shipped": h.counters.get("aggregates", 0),
                "selection_scale": h.gauges.get("selection_scale", math.nan),
                **_bytes_of(h),
            }
            for h in health
        ],
        columns=[
            "site",
            "node",
            "readings_accepted",
            "points_shipped",
            "batches_shipped",
            "aggregates_shipped",
            "selection_scale",
            "json_bytes_in",
            "bytes_shipped",
            "bytes_reduction_x",
        ],
    )
    prefix = "selection_ratio."
    ratios = pd.DataFrame(
        [
            {"site": h.site, "node": h.node, "metric": k[len(prefix) :], "shipped_pct": 100 * v}
            for h in health
            for k, v in sorted(h.gauges.items())
            if k.startswith(prefix)
        ],
        columns=["site", "node", "metric", "shipped_pct"],
    )
    return totals, ratios


def _bytes_of(h: Health) -> dict[str, float]:
    """Bytes the devices sent as JSON against batch and aggregate bytes the node queued."""
    json_in = h.counters.get("json_bytes_in", 0)
    shipped = h.counters.get("uplink_bytes.batch", 0) + h.counters.get("uplink_bytes.aggregate", 0)
    return {
        "json_bytes_in": json_in,
        "bytes_shipped": shipped,
        "bytes_reduction_x": json_in / shipped if shipped else math.nan,
    }


def points_totals(reduction: pd.DataFrame) -> tuple[int, int]:
    """(points in, points stored) over a reduction table."""
    return int(reduction["points_in"].sum()), int(reduction["points_stored"].sum())


# -- edge health --------------------------------------------------------------------------------

HEALTH_GAUGES = [
    "cpu_s",
    "rss_mb",
    "queue_items",
    "queue_bytes",
    "queue_oldest_age_s",
    "queue_inflight",
    "queue_dropped",
    "journal_items",
    "backlog",
    "selection_scale",
    "load_shedding",
    "connected",
]
HEALTH_COUNTERS = ["received", "accepted", "duplicates", "dead_lettered", "late", "uplink_requeued"]


def edge_health(
    health: Sequence[Health], now_ms: int, health_interval_s: float = HEALTH_INTERVAL_S
) -> pd.DataFrame:
    """Per node: state, the health gauges and the main counters of its latest report.

    A gauge the report does not carry is NaN (an old edge, or the last will, which carries
    counters only), never a made-up zero.
    """
    status = node_status(health, now_ms, health_interval_s)
    rows = []
    for h, (_, state) in zip(health, status.iterrows(), strict=True):
        row: dict[str, object] = {
            "site": h.site,
            "node": h.node,
            "status": state["status"],
            "age_s": state["age_s"],
        }
        row.update({g: float(h.gauges.get(g, math.nan)) for g in HEALTH_GAUGES})
        row.update({c: h.counters.get(c) for c in HEALTH_COUNTERS})
        shedding = h.gauges.get("load_shedding")
        row["load_shedding"] = "unknown" if shedding is None else ("yes" if shedding else "no")
        rows.append(row)
    columns = ["site", "node", "status", "age_s", *HEALTH_GAUGES, *HEALTH_COUNTERS]
    return pd.DataFrame(rows, columns=columns)


def dead_letters_by_reason(health: Sequence[Health]) -> pd.DataFrame:
    """Per node and reason, from the ``dead_letters.<reason>`` counters of the latest report."""
    prefix = "dead_letters."
    rows = [
        {"site": h.site, "node": h.node, "reason": k[len(prefix) :], "count": int(v)}
        for h in health
        for k, v in sorted(h.counters.items())
        if k.startswith(prefix) and v
    ]
    return pd.DataFrame(rows, columns=["site", "node", "reason", "count"])


def recent_dead_letters(store: Store, limit: int = 50) -> pd.DataFrame:
    """The newest stored dead letters (every site), for a look at what was refused."""
    letters = store.query_dead_letters(None, since_ms=0, limit=limit)
    return pd.DataFrame(
        [
            {
                "time": to_time(d.ts),
                "site": d.site,
                "reason": d.reason,
                "detail": d.detail,
                "topic": d.topic,
                "size": d.size,
                "payload": d.payload,
            }
            for d in letters
        ],
        columns=["time", "site", "reason", "detail", "topic", "size", "payload"],
    )
