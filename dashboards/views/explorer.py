"""Device explorer: one device's metric over time, with everything the store knows about it.

Stored readings (downsampled in the database for long ranges), the aggregate min–max band
(which covers every reading, shipped or not), alerts marked, the simulator's ground-truth
windows shaded, and behind them the peer band: the spread of the other devices of its kind
at its site in the same windows. A link from an alert (``?site=&device=&metric=&at=``) presets the choice;
without one the page opens on the device with the newest stored data.
"""

from __future__ import annotations

import streamlit as st

from dashboards import charts, common, queries
from pipeline.cloud.store import Store
from pipeline.protocol.topics import is_valid_id

RANGES_MS = {
    "5 minutes": 5 * 60_000,
    "15 minutes": 15 * 60_000,
    "1 hour": 3_600_000,
    "6 hours": 6 * 3_600_000,
    "24 hours": 86_400_000,
    "7 days": 7 * 86_400_000,
}
AROUND_ALERT = "10 minutes around the alert"


def _is_ms(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 15


def _index(options: list[str], wanted: str | None) -> int:
    return options.index(wanted) if wanted in options else 0


def render(store: Store, sites: list[str]) -> None:
    want_site = common.valid_param("site", is_valid_id)
    want_device = common.valid_param("device", is_valid_id)
    want_metric = common.valid_param("metric", is_valid_id)
    at_text = common.valid_param("at", _is_ms)
    at_ms = int(at_text) if at_text else None

    # Without a link, open on the device with the newest data (the first site in order may
    # hold only health or alerts).
    default_site = (queries.default_series(store, sites) or (sites[0], ""))[0]
    cols = st.columns([1, 2, 1, 1])
    site = cols[0].selectbox("Site", sites, index=_index(sites, want_site or default_site))
    site = queries.require_id("site", site)
    seen = {device: (kind, ts) for device, kind, ts in store.last_seen(site)}
    devices = sorted(seen)
    if want_device not in seen and seen:  # the site's device with the newest data
        want_device = (queries.default_series(store, [site]) or ("", ""))[1]
    if not devices:
        st.info(f"Site {site} has no device with stored readings or aggregates yet.")
        return
    device = cols[1].selectbox(
        "Device",
        devices,
        index=_index(devices, want_device),
        format_func=lambda d: f"{d} ({seen[d][0]})",
        key=f"device-{site}",
    )
    device = queries.require_id("device", device)
    kind, last_ts = seen[device]
    catalog = queries.site_catalog(store, site)  # the site's own kinds and units (issue 17)
    metrics = queries.metrics_of(kind, catalog)
    if not metrics:
        st.warning(f"Device kind {kind!r} is not in this edgepipe's catalogue: no metric to show.")
        return
    metric = cols[2].selectbox(
        "Metric", metrics, index=_index(metrics, want_metric), key=f"metric-{site}-{device}"
    )
    metric = queries.require_id("metric", metric)
    ranges = ([AROUND_ALERT] if at_ms is not None else []) + list(RANGES_MS)
    range_name = cols[3].selectbox("Time range", ranges, index=0 if at_ms is not None else 2)

    if range_name == AROUND_ALERT and at_ms is not None:
        start_ms, end_ms = at_ms - 5 * 60_000, at_ms + 5 * 60_000
        anchor = "centred on the alert"
    else:
        end_ms = last_ts + 1
        start_ms = end_ms - RANGES_MS[range_name]
        anchor = "ending at the device's newest stored data"
    view = queries.series_view(store, site, device, metric, start_ms, end_ms, kind=kind)
    unit = queries.unit_of(kind, metric, catalog)
    stamp = "%Y-%m-%d %H:%M:%S"
    st.caption(
        f"{queries.to_time(start_ms):{stamp}} to {queries.to_time(end_ms):{stamp}} UTC, "
        f"{anchor}. "
        + (
            f"Stored points as they are ({len(view.readings)})."
            if view.every_ms is None
            else "Stored points averaged in the database per "
            f"{queries.duration_text(view.every_ms)} bucket (hover for min, max and count)."
        )
    )
    if view.empty:
        st.info(
            f"Nothing stored for {device} {metric} in this range. Try a longer range; the "
            "edge ships a point at least every selection heartbeat (5 minutes by default)."
        )
        return
    st.altair_chart(charts.series_chart(view, metric, unit), width="stretch")
    if view.peers_refused:
        st.caption(f"No peer band: the store refused its query ({view.peers_refused[:200]}).")
    elif not view.peers.empty:
        st.caption(
            f"Grey band: the middle half (25–75 %) of the window means of the other {kind} "
            f"devices at {site} (up to {int(view.peers['peers'].max())}), dashed: their median; "
            "the fleet analyst judges each device against the same peers (docs/analyst.md)."
        )
    if (view.aggregates["anomalies"] > 0).any():
        st.markdown("**Anomalous readings per window** (the edge detector's count)")
        st.altair_chart(charts.anomaly_chart(view), width="stretch")
    st.caption(
        "The store keeps no per-reading anomaly score: scores are shown for alerts (hover "
        "a red marker), and the edge counts anomalous readings per aggregate window."
        + ("" if not view.labels.empty else " No ground-truth window in this range.")
    )
    if not view.alerts.empty:
        st.markdown(f"**Alerts on {metric}** ({len(view.alerts)})")
        st.dataframe(
            view.alerts[["time", "state", "severity", "score", "value", "reason", "alert_id"]],
            hide_index=True,
            column_config={"time": st.column_config.DatetimeColumn("time (UTC)")},
        )
    if not view.labels.empty:
        st.markdown(f"**Ground-truth windows** ({len(view.labels)})")
        st.dataframe(view.labels, hide_index=True)


common.page("Device explorer", render)
