"""``dashboard.render_s_1m_points``: the device explorer over a million stored points.

What is timed is what a user waits for: the explorer page, through Streamlit's own test
runner (``AppTest``: the script runs as in a browser session, without the websocket),
switched to a 7-day range, over a SQLite store holding 1,000,000 readings of one fridge
and their 1-minute aggregates. The baseline, measured in the same run, is the same page
over the same series cut to 10,000 points: the difference is what the million costs, which
database-side downsampling should keep small.

``dashboard.peer_band_ratio``: what the explorer's peer band costs, on a big site. The
explorer's queries for one fridge over 7 days (``series_view``) with the peer band of its
200 peers (one ``query_kind_buckets``, quartiles in pandas) against the same queries without
it, interleaved in the same run, over a SQLite store holding a day of 1-minute windows of
each fridge.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.cloud.store import open_store
from pipeline.protocol.messages import Aggregate, Reading

APP = Path(__file__).resolve().parents[2] / "dashboards" / "app.py"
T0 = 1_790_000_000_000
SITE, DEVICE, KIND, METRIC = "shop1", "fridge1", "fridge", "temp"
CHUNK = 50_000


def fill(url: str, points: int) -> None:
    """One fridge at 1 Hz (``points`` readings, 11.6 days for a million) and 1-minute aggregates."""
    store = open_store(url)
    try:
        for start in range(0, points, CHUNK):
            store.write_readings(
                SITE,
                [
                    Reading(v=1, device=DEVICE, kind=KIND, ts=T0 + i * 1000, seq=i,
                            metrics={METRIC: round(4 + math.sin(i / 600), 1)})
                    for i in range(start, min(points, start + CHUNK))
                ],
            )  # fmt: skip
        store.write_aggregates(
            [
                Aggregate(v=1, site=SITE, device=DEVICE, kind=KIND, metric=METRIC,
                          start=T0 + m * 60_000, end=T0 + (m + 1) * 60_000, count=60, min=3.0,
                          max=5.0, mean=4.0, std=0.5, last=4.0, anomalies=0)
                for m in range(points // 60)
            ]
        )  # fmt: skip
    finally:
        store.close()


def render_explorer(url: str) -> float:
    """Seconds to open the app on the explorer page and show a 7-day range."""
    from streamlit.testing.v1 import AppTest

    argv = sys.argv
    sys.argv = [str(APP), "--store", url]
    try:
        started = time.perf_counter()
        app = AppTest.from_file(str(APP), default_timeout=60)
        app.run()
        app.switch_page("views/explorer.py").run()
        box = next(b for b in app.selectbox if b.label == "Time range")
        box.set_value("7 days").run()
        seconds = time.perf_counter() - started
    finally:
        sys.argv = argv
    if app.exception:
        raise RuntimeError(f"the explorer raised: {[e.value for e in app.exception]}")
    if not app.get("vega_lite_chart"):
        raise RuntimeError("the explorer drew no chart")
    return seconds


def bench_dashboard(workdir: Path, repeats: int, echo: Callable[[str], object], points: int = 1_000_000) -> dict[str, Any]:
    big, small = workdir / "dashboard-1m.db", workdir / "dashboard-10k.db"
    started = time.perf_counter()
    fill(f"sqlite:///{big}", points)
    fill(f"sqlite:///{small}", 10_000)
    echo(f"  filled {points:,} and 10,000 points in {time.perf_counter() - started:.1f} s")
    runs: dict[str, list[float]] = {"big": [], "small": []}
    for _ in range(repeats):  # interleaved, so that a noisy moment hits both
        runs["big"].append(render_explorer(f"sqlite:///{big}"))
        runs["small"].append(render_explorer(f"sqlite:///{small}"))
    big_s, small_s = _summary(runs["big"]), _summary(runs["small"])
    echo(f"  explorer, 7 days: {big_s['median']:.2f} s over {points:,} points, {small_s['median']:.2f} s over 10,000")
    small_plan = points < 1_000_000  # the tiny plan: every path, few rows
    band = bench_peer_band(workdir, repeats, echo, *((5, 60) if small_plan else (PEERS, PEER_WINDOWS)))
    return {
        "dashboard.render_s_1m_points": big_s,
        "dashboard.render_s_10k_points": small_s,
        "dashboard.render_ratio_1m_to_10k": big_s["median"] / small_s["median"],
        "dashboard.details": {"store": "sqlite", "points": points, "page": "explorer, 7 days"},
        **band,
    }


PEERS = 200
PEER_WINDOWS = 1440  # a day of 1-minute windows each


def fill_peers(url: str, peers: int, windows: int) -> None:
    """``peers`` fridges at one site, ``windows`` 1-minute aggregates each."""
    store = open_store(url)
    try:
        for d in range(peers):
            store.write_aggregates(
                [
                    Aggregate(v=1, site=SITE, device=f"fridge{d}", kind=KIND, metric=METRIC,
                              start=T0 + m * 60_000, end=T0 + (m + 1) * 60_000, count=60,
                              min=3.0, max=5.0, mean=4.0 + d / peers, std=0.5, last=4.0, anomalies=0)
                    for m in range(windows)
                ]
            )  # fmt: skip
    finally:
        store.close()


def bench_peer_band(
    workdir: Path, repeats: int, echo: Callable[[str], object], peers: int = PEERS, windows: int = PEER_WINDOWS
) -> dict[str, Any]:
    from dashboards.queries import series_view

    url = f"sqlite:///{workdir / 'dashboard-peers.db'}"
    started = time.perf_counter()
    fill_peers(url, peers, windows)
    echo(f"  filled {peers} fridges x {windows} windows in {time.perf_counter() - started:.1f} s")
    store = open_store(url)
    end = T0 + 7 * 86_400_000  # the explorer's 7-day range
    runs: dict[str, list[float]] = {"with": [], "without": []}
    bands = 0
    try:
        for _ in range(repeats):  # interleaved
            t = time.perf_counter()
            view = series_view(store, SITE, "fridge0", METRIC, T0, end, kind=KIND)
            runs["with"].append(time.perf_counter() - t)
            bands = len(view.peers)
            t = time.perf_counter()
            series_view(store, SITE, "fridge0", METRIC, T0, end)
            runs["without"].append(time.perf_counter() - t)
    finally:
        store.close()
    if not bands:
        raise RuntimeError("the peer band came back empty")
    with_s, without_s = _summary(runs["with"]), _summary(runs["without"])
    echo(f"  explorer queries, 7 days: {with_s['median']:.3f} s with the band of {peers - 1} peers, "
         f"{without_s['median']:.3f} s without")  # fmt: skip
    return {
        "dashboard.peer_band_s": with_s,
        "dashboard.peer_band_baseline_s": without_s,
        "dashboard.peer_band_ratio": with_s["median"] / without_s["median"],
        "dashboard.peer_band_details": {"store": "sqlite", "peers": peers, "windows_each": windows,
                                        "buckets": bands, "range": "7 days"},  # fmt: skip
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
