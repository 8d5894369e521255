"""Data reduction: how much of what the devices measured the edges actually shipped.

Two honest sources, side by side: the store (points counted by the aggregates against raw
points stored, per site and metric) and the edges' own health counters: ratios, and bytes
in as JSON against bytes shipped.
"""

from __future__ import annotations

import streamlit as st

from dashboards import charts, common, queries
from pipeline.cloud.store import Store

RANGES_MS = {
    "all time": None,
    "last hour": 3_600_000,
    "last 24 hours": 86_400_000,
    "last 7 days": 7 * 86_400_000,
}


def render(store: Store, sites: list[str]) -> None:
    range_name = st.columns([1, 3])[0].selectbox("Time", list(RANGES_MS))
    span = RANGES_MS[range_name]
    if span is None:
        start_ms, end_ms = queries.ALL_TIME
    else:
        end_ms = common.now_ms() + 1
        start_ms = end_ms - span
    table = queries.reduction_table(store, sites, start_ms, end_ms)

    st.subheader("Per site and metric (from the store)")
    if table.empty:
        st.info("No aggregates or readings stored in this time range.")
    else:
        points_in, points_stored = queries.points_totals(table)
        cols = st.columns(3)
        cols[0].metric("Points in", f"{points_in:,}")
        cols[1].metric("Points shipped and stored", f"{points_stored:,}")
        cols[2].metric(
            "Shipped share", f"{100 * points_stored / points_in:.1f} %" if points_in else "–"
        )
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "points_in": st.column_config.NumberColumn(
                    "points in", help="sum of the aggregates' counts: every accepted value"
                ),
                "points_stored": st.column_config.NumberColumn(
                    "points stored", help="raw values the edge shipped and the store holds"
                ),
                "shipped_pct": st.column_config.NumberColumn("shipped %", format="%.1f"),
                "reduction_x": st.column_config.NumberColumn("reduction ×", format="%.1f"),
                "codec_bound": st.column_config.NumberColumn(
                    "codec error bound ±", help="resolution / 2 of the catalogue (batch codec 2)"
                ),
            },
        )
        bars = table.assign(series=table["site"] + " / " + table["metric"])
        st.altair_chart(
            charts.grouped_bars(
                bars,
                "series",
                {"points_in": "points in", "points_stored": "points stored"},
                "points",
            ),
            width="stretch",
        )
        st.caption(
            "Aggregates count by window start and points by their own time, so a range edge "
            "can split one window from its points. Error bound of a stored value: the codec's "
            "± resolution/2 shown here plus the edge's selection tolerance "
            "(`select.tolerance_resolutions` × resolution, or `select.tolerances`; an edge "
            "setting the store does not hold), widened by the node's `selection_scale` below."
        )

    st.subheader("Per edge node (from its health counters)")
    totals, ratios = queries.node_reduction(queries.split_health(store.latest_health())[0])
    if totals.empty:
        st.info("No edge node has reported its health yet.")
    else:
        counts = ["site", "node", "readings_accepted", "points_shipped", "batches_shipped",
                  "aggregates_shipped", "selection_scale"]  # fmt: skip
        st.dataframe(
            totals[counts],  # bytes: their own section below
            hide_index=True,
            column_config={
                "readings_accepted": "readings accepted",
                "batches_shipped": "batches shipped",
                "aggregates_shipped": "aggregates shipped",
                "points_shipped": st.column_config.NumberColumn(
                    "points shipped", help="health counter readings_shipped (one per metric value)"
                ),
                "selection_scale": st.column_config.NumberColumn("selection scale", format="%.2f"),
            },
        )
        if not ratios.empty:
            by_metric = (
                ratios.pivot_table(index=["site", "node"], columns="metric", values="shipped_pct")
                .round(1)
                .reset_index()
            )
            by_metric.columns.name = None
            st.markdown("**Shipped % by metric** (gauges `selection_ratio.<metric>`)")
            st.dataframe(by_metric, hide_index=True)
        st.caption(
            "Counters and `selection_ratio.<metric>` gauges cover each edge process's life "
            "and restart at zero with it."
        )

    st.subheader("Bytes")
    if totals.empty or not totals["json_bytes_in"].any():
        st.info("No edge node has reported byte counters yet.")
    else:
        json_in, shipped = int(totals["json_bytes_in"].sum()), int(totals["bytes_shipped"].sum())
        cols = st.columns(3)
        cols[0].metric("Devices' JSON", _size(json_in))
        cols[1].metric("Shipped (batches + aggregates)", _size(shipped))
        cols[2].metric("Reduction", f"{json_in / shipped:,.0f} ×" if shipped else "–")
        st.dataframe(
            totals[["site", "node", "json_bytes_in", "bytes_shipped", "bytes_reduction_x"]],
            hide_index=True,
            column_config={
                "json_bytes_in": st.column_config.NumberColumn(
                    "JSON bytes in", help="health counter json_bytes_in: accepted readings as sent"
                ),
                "bytes_shipped": st.column_config.NumberColumn(
                    "bytes shipped", help="uplink_bytes.batch + uplink_bytes.aggregate, as queued"
                ),
                "bytes_reduction_x": st.column_config.NumberColumn("reduction ×", format="%.1f"),
            },
        )
        st.caption(
            "Shipped bytes are counted once, when the node queues a message; resends after a "
            "lost connection are not counted again. Error bound of shipped values: ± resolution/2 "
            "(batches and aggregates alike)."
        )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


common.page("Data reduction", render)
