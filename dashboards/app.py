"""edgepipe dashboard (Streamlit). Run with ``edgepipe dashboard --store URL``.

It reads only through the store interface, never from MQTT. An empty store or an
unreachable database gives a message on the page, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

import msgspec
import streamlit as st

from pipeline.cloud.store import open_store
from pipeline.errors import EdgepipeError


def _store_url() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="sqlite:///edgepipe.db")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return str(args.store)


@st.cache_resource
def _store(url: str):  # type: ignore[no-untyped-def]
    return open_store(url)


def overview(url: str) -> None:
    st.title("edgepipe: fleet overview")
    st.caption(f"store: {url}")
    try:
        store = _store(url)
        sites = store.sites()
    except (EdgepipeError, OSError) as exc:
        st.error(f"The store is not reachable: {exc}")
        return
    if not sites:
        st.info("The store is empty: run `edgepipe demo` or start the simulators and an edge node.")
        return
    now_ms = int(time.time() * 1000)
    health = {h.site: h for h in store.latest_health()}
    rows = []
    for site in sites:
        h = health.get(site)
        rows.append(
            {
                "site": site,
                "edge": "unknown" if h is None else h.status,
                "devices": len(store.devices(site)),
                "readings stored": store.count_readings(site),
                "last health (s ago)": None if h is None else round((now_ms - h.ts) / 1000, 1),
            }
        )
    st.dataframe(rows, hide_index=True)
    alerts = store.query_alerts(None, since_ms=now_ms - 86_400_000, limit=50)
    st.subheader("Recent alerts")
    if alerts:
        st.dataframe([msgspec.structs.asdict(a) for a in alerts], hide_index=True)
    else:
        st.write("No alerts in the last 24 hours.")


def main() -> None:
    st.set_page_config(page_title="edgepipe", layout="wide")
    overview(_store_url())


main()
