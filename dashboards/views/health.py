"""Edge health: per node the gauges and counters of its latest health report.

CPU, memory, the disk outbox (depth, age of the oldest item, drops), dead letters by reason
and the load governor's state; above the tables, each node's gauges over the last hour or
day from the store's health history (``Store.health_history``).
"""

from __future__ import annotations

import streamlit as st

from dashboards import charts, common, queries
from pipeline.cloud.store import Store


def render(store: Store, sites: list[str]) -> None:
    health = queries.split_health(store.latest_health())[0]
    if not health:
        st.info(
            "No edge node has reported its health yet (an edge sends it every "
            f"{common.view_settings().health_interval_s:g} s)."
        )
    else:
        interval = common.view_settings().health_interval_s
        table = queries.edge_health(health, common.now_ms(), interval)
        shedding = table[table["load_shedding"] == "yes"]
        cols = st.columns(4)
        cols[0].metric("Nodes online", f"{int((table['status'] == 'online').sum())} / {len(table)}")
        cols[1].metric(
            "Load shedding", len(shedding), help="nodes whose selection_scale is above 1"
        )
        cols[2].metric("Queued uplink items", int(table["queue_items"].fillna(0).sum()))
        cols[3].metric("Dead letters", int(table["dead_lettered"].fillna(0).sum()))
        trends(store)
        key = ["site", "node"]
        st.markdown("**Process and load governor**")
        st.dataframe(
            table[[*key, "status", "age_s", "cpu_s", "rss_mb", "connected", "selection_scale",
                   "load_shedding"]],
            hide_index=True,
            column_config={
                "age_s": st.column_config.NumberColumn("report age (s)", format="%.0f"),
                "cpu_s": st.column_config.NumberColumn(
                    "CPU (s)", format="%.1f", help="CPU seconds used since the process started"
                ),
                "rss_mb": st.column_config.NumberColumn("RSS (MB)", format="%.1f"),
                "connected": st.column_config.NumberColumn(
                    "MQTT connected", help="1 while connected"
                ),
                "selection_scale": st.column_config.NumberColumn(
                    "selection scale", format="%.2f", help="1 = normal; above 1 = shedding load"
                ),
                "load_shedding": "load shedding",
            },
        )  # fmt: skip
        st.markdown("**Uplink queue (disk outbox)**")
        st.dataframe(
            table[[*key, "queue_items", "queue_bytes", "queue_oldest_age_s", "queue_inflight",
                   "queue_dropped", "journal_items", "backlog"]],
            hide_index=True,
            column_config={
                "queue_items": "items",
                "queue_bytes": "bytes",
                "queue_oldest_age_s": st.column_config.NumberColumn(
                    "oldest item (s)", format="%.1f"
                ),
                "queue_inflight": "in flight",
                "queue_dropped": st.column_config.NumberColumn(
                    "dropped", help="items dropped by the overflow policy, over the file's life"
                ),
                "journal_items": "journal items",
                "backlog": st.column_config.NumberColumn(
                    "backlog", help="messages received and not yet handled"
                ),
            },
        )  # fmt: skip
        st.markdown("**Counters**")
        st.dataframe(table[[*key, *queries.HEALTH_COUNTERS]], hide_index=True)
        st.caption(
            "Gauges are the node's state at its last report; counters run over the process's "
            "life. `None` marks a value the report did not carry (the last will carries "
            "counters only)."
        )

        st.subheader("Dead letters by reason")
        reasons = queries.dead_letters_by_reason(health)
        if reasons.empty:
            st.write("No dead letters counted by any node.")
        else:
            by_reason = reasons.assign(node=reasons["site"] + " / " + reasons["node"])
            st.altair_chart(
                charts.grouped_bars(
                    by_reason.pivot_table(
                        index="reason", columns="node", values="count", fill_value=0
                    ).reset_index(),
                    "reason",
                    {n: n for n in sorted(by_reason["node"].unique())},
                    "dead letters (counter dead_letters.<reason>)",
                ),
                width="stretch",
            )
            st.dataframe(reasons, hide_index=True)

    st.subheader("Newest dead letters stored")
    letters = queries.recent_dead_letters(store, limit=50)
    if letters.empty:
        st.write("None stored.")
    else:
        st.dataframe(
            letters,
            hide_index=True,
            column_config={"time": st.column_config.DatetimeColumn("time (UTC)")},
        )


def trends(store: Store) -> None:
    """Each node's main gauges over time, one small chart per gauge, one line per node."""
    header, picker = st.columns([3, 1])
    header.subheader("Trends per node")
    span_name = picker.segmented_control(
        "Range", list(queries.HISTORY_SPANS_MS), default="last hour", key="health-span"
    )
    history = queries.node_history(store, queries.HISTORY_SPANS_MS[span_name or "last hour"])
    if history.empty:
        st.caption("No health history yet.")
        return
    history = history.assign(node=history["site"] + " / " + history["node"])
    cols = st.columns(2)
    for i, (gauge, title) in enumerate(queries.NODE_HISTORY_GAUGES.items()):
        one = history[history["gauge"] == gauge]
        with cols[i % 2]:
            st.markdown(f"**{title}** (`{gauge}`)")
            if one.empty:
                st.caption("Not in the reports of this range.")
            else:
                st.altair_chart(
                    charts.history_lines(one, "value", "node", title, 180, axis_title=False),
                    width="stretch",
                )
    st.caption("Mean of each node's reports per bucket, in report time (the node's clock).")


common.page("Edge health", render)
