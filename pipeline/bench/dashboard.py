"""``dashboard.render_s_1m_points``: the device explorer over a million stored points.

What is timed is what a user waits for: the explorer page, through Streamlit's own test
runner (``AppTest``: the script runs as in a browser session, without the websocket),
switched to a 7-day range, over a SQLite store holding 1,000,000 readings of one fridge
and their 1-minute aggregates. The baseline, measured in the same run, is the same page
over the same series cut to 10,000 points: the difference is what the million costs, which
database-side downsampling should keep small.
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
    return {
        "dashboard.render_s_1m_points": big_s,
        "dashboard.render_s_10k_points": small_s,
        "dashboard.render_ratio_1m_to_10k": big_s["median"] / small_s["median"],
        "dashboard.details": {"store": "sqlite", "points": points, "page": "explorer, 7 days"},
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
