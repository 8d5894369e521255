"""Live alerts: newest first, filtered by site, severity, device kind and source (edge or
cloud), refreshing itself.

The table is an ``st.fragment`` with ``run_every``, so only it reruns every few seconds;
the filters stay put. Each row links to its device in the explorer, centred on the alert.
"""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from dashboards import common, queries
from pipeline.cloud.store import Store
from pipeline.errors import EdgepipeError

RANGES_MS = {
    "last hour": 3_600_000,
    "last 24 hours": 86_400_000,
    "last 7 days": 7 * 86_400_000,
    "all time": None,
}
ALL_SITES = "all sites"
REFRESH_S = common.view_settings().refresh_s
TABLE_HEIGHT_PX = 35 * 20 + 38  # about 20 rows, then the table scrolls
REASON_WIDTH_PX = 520  # wide enough for a detector's reason; the cell shows the rest on hover
# What a reader scans first on the left (the reason within the first screen width); the
# ids that only link and filter on the right.
COLUMN_ORDER = ["time", "site", "device", "metric", "severity", "state", "open", "source", "reason",
                "score", "value", "kind", "model_version", "explorer"]  # fmt: skip


def render(store: Store, sites: list[str]) -> None:
    kinds = sorted({kind for site in sites for _, kind in store.devices(site)})
    cols = st.columns([1, 2, 2, 1, 1, 1])
    site = cols[0].selectbox("Site", [ALL_SITES, *sites])
    severities = cols[1].multiselect(
        "Severity", list(queries.SEVERITIES), default=list(queries.SEVERITIES)
    )
    chosen_kinds = cols[2].multiselect("Device kind", kinds, placeholder="all kinds")
    sources = cols[3].multiselect(
        "Source", list(queries.ALERT_SOURCES), placeholder="edge and cloud",
        help="edge: raised by the site's node; cloud: by the fleet analyst",
    )  # fmt: skip
    range_name = cols[4].selectbox("Time", list(RANGES_MS), index=len(RANGES_MS) - 1)
    rows = cols[5].selectbox(
        "Rows", queries.LIVE_ALERT_ROWS, format_func=lambda n: f"newest {n:,}",
        help="how many of the matching records the table shows (5,000 at most)",
    )  # fmt: skip
    if not severities:
        st.info("Pick at least one severity.")
        return
    live_table(
        None if site == ALL_SITES else site, severities, chosen_kinds, RANGES_MS[range_name], rows,
        sources,
    )  # fmt: skip


@st.fragment(run_every=REFRESH_S)
def live_table(
    site: str | None,
    severities: list[str],
    kinds: list[str],
    range_ms: int | None,
    rows: int,
    sources: list[str] | None = None,
) -> None:
    """The alert table; reruns by itself, so it catches a store outage itself too."""
    try:
        connected = common.connect()
        if connected is None:
            return
        store, _ = connected
        since = 0 if range_ms is None else common.now_ms() - range_ms
        found = queries.live_alerts(
            store, site=site, severities=severities, kinds=kinds, since_ms=since, limit=rows,
            sources=sources or (),
        )  # fmt: skip
    except (EdgepipeError, OSError) as exc:
        common.report_store_error(exc)
        return
    refreshed = datetime.now(UTC).strftime("%H:%M:%S UTC")
    frame = found.frame
    if frame.empty:
        st.info(
            "No alert matches these filters. New alerts appear here within seconds "
            f"(checked {refreshed})."
        )
        return
    shown = (
        f"Showing the newest {len(frame):,} of {found.total:,} matching alert records"
        if found.capped
        else f"All {found.total:,} matching alert records"
    )
    st.markdown(f"**{shown}**, newest first.")
    st.dataframe(
        frame,
        hide_index=True,
        height=TABLE_HEIGHT_PX,
        column_order=COLUMN_ORDER,
        column_config={
            "time": st.column_config.DatetimeColumn(
                "time (UTC)", format="YYYY-MM-DD HH:mm:ss", width="medium"
            ),
            "open": st.column_config.CheckboxColumn("open", width="small"),
            "state": st.column_config.TextColumn("state", width="small"),
            "severity": st.column_config.TextColumn("severity", width="small"),
            "source": st.column_config.TextColumn("source", width="small", help="edge: the site's node; cloud: the fleet analyst"),
            "score": st.column_config.NumberColumn(format="%.4f", width="small"),
            "value": st.column_config.NumberColumn(width="small"),
            "reason": st.column_config.TextColumn("reason", width=REASON_WIDTH_PX),
            "model_version": st.column_config.TextColumn("model", width="small"),
            "explorer": st.column_config.LinkColumn("explorer", display_text="open in explorer"),
        },
    )
    st.caption(
        ("Raise **Rows** or narrow **Time** to see more. " if found.capped else "")
        + f"Refreshed every {REFRESH_S:g} s (last {refreshed}). `open`: raised and not "
        "cleared since."
    )


common.page("Live alerts", render)
