"""Streamlit plumbing the views share: the store, a few settings, and the page guard.

Why one guard for every page: an empty store or an unreachable database must give a clear
message, never a traceback, and each page must say so the same way. Queries themselves
live in :mod:`dashboards.queries`.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from pipeline.cloud.store import Store, open_store
from pipeline.errors import ConfigError, EdgepipeError

DEFAULT_STORE = "sqlite:///edgepipe.db"
EMPTY_MESSAGE = (
    "The store is empty: no site has sent anything yet. Run `edgepipe demo`, or start the "
    "simulators, an edge node and the cloud worker, then reload this page."
)


def store_url() -> str:
    """The ``--store URL`` given after ``--`` on the ``streamlit run`` command line."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--store", default=DEFAULT_STORE)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return str(args.store)


def masked(url: str) -> str:
    """``url`` with any password or token replaced by ``***``: it is shown on the page."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"([?&]token=)[^&#]*", r"\1***", url)


@st.cache_resource(show_spinner=False)
def _open(url: str) -> Store:
    # One store per URL for the whole server: SQLiteStore and InfluxStore are thread-safe.
    return open_store(url)


@dataclass(frozen=True)
class ViewSettings:
    """The few settings a view needs; the edge's own values when the dashboard shares them."""

    health_interval_s: float = 10.0
    refresh_s: float = 5.0


@st.cache_resource(show_spinner=False)
def view_settings() -> ViewSettings:
    """From ``$EDGEPIPE_CONFIG`` and ``EDGEPIPE_*`` like every command; defaults if invalid."""
    from pipeline.config import load_settings

    try:
        settings = load_settings()
    except ConfigError:
        return ViewSettings()
    return ViewSettings(settings.edge.health_interval_s, settings.dashboard.refresh_s)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def connect() -> tuple[Store, list[str]] | None:
    """The store and its sites, or None after telling the reader why there is nothing."""
    url = store_url()
    try:
        store = _open(url)
        sites = store.sites()
    except (EdgepipeError, OSError) as exc:
        st.error(
            f"The store is not reachable: {exc}\n\n"
            f"Store: `{masked(url)}`. Check that the database is running and that "
            "`--store` names it; this page shows data as soon as it answers."
        )
        return None
    if not sites:
        st.info(EMPTY_MESSAGE)
        return None
    return store, sites


def report_store_error(exc: Exception) -> None:
    """A store failure in the middle of a page, said plainly (the page stays usable)."""
    st.error(f"The store is not reachable: {exc}")


def page(title: str, render: Callable[[Store, list[str]], None]) -> None:
    """Title, then ``render(store, sites)`` only when the store answers and holds data."""
    st.title(title)
    connected = connect()
    if connected is None:
        return
    try:
        render(*connected)
    except (EdgepipeError, OSError) as exc:
        report_store_error(exc)


def valid_param(name: str, is_valid: Callable[[str], bool]) -> str | None:
    """A query parameter of the page's URL if present and valid; a warning if invalid."""
    value = st.query_params.get(name)
    if value is None or value == "":
        return None
    if not is_valid(value):
        st.warning(f"Ignoring the link's invalid `{name}` parameter: {value[:80]!r}")
        return None
    return value
