"""Overview: is every site up, are devices reporting, what is open right now.

Sources: latest health per node (status, age, ``readings_per_s``), the store's last-seen
time per device, the open alerts (latest state ``raised``) and the store's point totals;
below them trend charts from the health history and the alert records (last hour or day).
"""

from __future__ import annotations

import streamlit as st

from dashboards import charts, common, queries
from pipeline.cloud.store import Store


def render(store: Store, sites: list[str]) -> None:
    now = common.now_ms()
    interval = common.view_settings().health_interval_s
    edge_health, cloud_health = queries.split_health(store.latest_health())
    nodes = queries.node_status(edge_health, now, interval)
    devices = queries.device_activity(store, sites, nodes, now)
    summary = queries.site_summary(sites, nodes, devices)
    open_alerts = queries.open_alerts(store)
    severity = queries.count_by_severity(open_alerts)
    online_nodes = nodes[nodes["status"] == "online"]

    cols = st.columns(5)
    cols[0].metric("Sites online", f"{int((summary['edge'] == 'online').sum())} / {len(sites)}")
    cols[1].metric("Edge nodes online", f"{len(online_nodes)} / {len(nodes)}")
    cols[2].metric(
        "Devices reporting",
        f"{int(devices['reporting'].sum())} / {len(devices)}",
        help=f"stored data within {queries.REPORTING_WINDOW_MS // 60_000} minutes of the "
        "site's newest stored data while its edge is online (event time: a replay or a fast "
        "simulation runs far from the wall clock), else of now",
    )
    cols[3].metric(
        "Readings/s",
        f"{online_nodes['readings_per_s'].fillna(0).sum():.1f}",
        help="sum of the health gauge readings_per_s of the online edge nodes",
    )
    cols[4].metric(
        "Open alerts",
        len(open_alerts),
        help=", ".join(f"{s}: {n}" for s, n in severity.items()),
    )

    trends(store, severity)

    st.subheader("Sites")
    st.dataframe(
        summary,
        hide_index=True,
        column_config={
            "readings_per_s": st.column_config.NumberColumn("readings/s", format="%.1f"),
            "nodes_online": "edge nodes online",
            "devices_reporting": "devices reporting",
            "devices_known": "devices known",
        },
    )
    st.subheader("Edge nodes")
    if nodes.empty:
        st.info("No edge node has reported its health yet.")
    else:
        st.dataframe(
            nodes,
            hide_index=True,
            column_config={
                "last_health": st.column_config.DatetimeColumn("last health (UTC)"),
                "age_s": st.column_config.NumberColumn("age (s)", format="%.0f"),
                "readings_per_s": st.column_config.NumberColumn(
                    "readings/s (last report)", format="%.1f"
                ),
            },
        )
        st.caption(
            f"A node is offline when its last health says so (last will or clean stop) or "
            f"when it has been silent for more than {queries.OFFLINE_AFTER_INTERVALS} × "
            f"{interval:g} s."
        )

    st.subheader("Open alerts by severity")
    sev_cols = st.columns(len(severity))
    for col, (name, n) in zip(sev_cols, severity.items(), strict=True):
        col.metric(name, n)
    if not open_alerts.empty:
        for row in open_alerts.head(10).itertuples():
            st.page_link(
                "views/explorer.py",
                label=f"{row.severity}: {row.site} / {row.device} / {row.metric} — {row.reason}",
                icon=":material/open_in_new:",
                query_params={
                    "site": row.site,
                    "device": row.device,
                    "metric": row.metric,
                    "at": str(row.reading_ts),
                },
            )

    if cloud_health:
        st.subheader("Cloud workers")
        st.dataframe(
            queries.node_status(cloud_health, now, interval).drop(columns=["site", "readings_per_s"]),
            hide_index=True,
            column_config={
                "last_health": st.column_config.DatetimeColumn("last health (UTC)"),
                "age_s": st.column_config.NumberColumn("age (s)", format="%.0f"),
            },
        )

    st.subheader("Uplink savings")
    totals, _ = queries.node_reduction(edge_health)
    json_in = int(totals["json_bytes_in"].sum()) if not totals.empty else 0
    shipped = int(totals["bytes_shipped"].sum()) if not totals.empty else 0
    reduction = queries.reduction_table(store, sites, *queries.ALL_TIME)
    points_in, points_stored = queries.points_totals(reduction)
    savings = st.columns(2)
    if shipped:
        savings[0].metric(
            "Uplink bytes saved",
            f"{100 * (1 - shipped / json_in):.1f} %" if json_in else "–",
            help="1 − (batch + aggregate bytes shipped) ÷ (the devices' JSON bytes), from the "
            "edges' health counters over each node's life",
        )
    if points_in:
        savings[1].metric(
            "Points shipped per point in",
            f"{100 * points_stored / points_in:.1f} %",
            help="raw points stored ÷ points counted in the aggregates, all sites, all time",
        )
    st.caption(
        f"Bytes: {json_in:,} as the devices' JSON, {shipped:,} shipped (details on the Data "
        "reduction page)."
    )


def trends(store: Store, open_now: dict[str, int]) -> None:
    """Readings/s and alerts per site, and open alerts by severity, over an hour or a day."""
    header, picker = st.columns([3, 1])
    header.subheader("Trends")
    span_name = picker.segmented_control(
        "Range", list(queries.HISTORY_SPANS_MS), default="last hour", key="overview-span"
    )
    span = queries.HISTORY_SPANS_MS[span_name or "last hour"]
    rates = queries.site_rates(store, span)
    history = queries.alert_history(store, span, open_now)
    cols = st.columns(3)
    with cols[0]:
        st.markdown("**Readings/s per site**")
        if rates.empty:
            st.caption("No health history yet.")
        else:
            st.altair_chart(
                charts.history_lines(rates, "readings_per_s", "site", "readings/s"),
                width="stretch",
            )
            st.caption("Sum of the nodes' `readings_per_s` gauge per bucket, report time.")
    with cols[1]:
        st.markdown("**Alerts raised per site**")
        if history.raised.empty:
            st.caption("No alert raised in this range.")
        else:
            st.altair_chart(
                charts.stacked_bars(history.raised, "raised", "site", "alerts raised",
                                    history.every_ms),
                width="stretch",
            )  # fmt: skip
            st.caption(
                f"Per {queries.duration_text(history.every_ms)}, event time (the readings' "
                "clock), ending at the newest alert."
            )
    with cols[2]:
        st.markdown("**Open alerts by severity**")
        if not history.open["open"].any():
            st.caption("No alert open in this range.")
        else:
            st.altair_chart(charts.open_by_severity(history.open), width="stretch")
            st.caption(
                "Open now, walked back through the raises and clears recorded since; "
                "event time."
            )


common.page("Overview", render)
