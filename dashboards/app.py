"""edgepipe dashboard (Streamlit). Run with ``edgepipe dashboard --store URL``.

The entry point only routes: ``st.navigation`` over one file per view in ``views/`` (not
``pages/``, which Streamlit would treat as its older automatic multipage folder). Every
view reads only through the store interface, never from MQTT, and shows a clear message
instead of a traceback when the store is empty or unreachable. docs/dashboard.md says what
each page shows and where its numbers come from.
"""

from __future__ import annotations

import streamlit as st

from dashboards.common import masked, store_url

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page(
        "views/alerts.py", title="Live alerts", icon=":material/notifications:", url_path="alerts"
    ),
    st.Page(
        "views/explorer.py",
        title="Device explorer",
        icon=":material/monitoring:",
        url_path="explorer",
    ),
    st.Page(
        "views/reduction.py",
        title="Data reduction",
        icon=":material/compress:",
        url_path="reduction",
    ),
    st.Page("views/models.py", title="Model sync", icon=":material/sync:", url_path="models"),
    st.Page("views/health.py", title="Edge health", icon=":material/memory:", url_path="health"),
]


def main() -> None:
    st.set_page_config(page_title="edgepipe", page_icon=":material/sensors:", layout="wide")
    page = st.navigation(PAGES)
    st.sidebar.caption(f"Store: `{masked(store_url())}`")
    page.run()


main()
