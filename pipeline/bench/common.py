"""Small helpers shared by the benchmark parts: statistics, deadlines, memory.

Why a module of its own: the parts run in several processes (publisher, consumer, the bench
itself), and each needs the same honest summary (median, min, max of repeated runs) and the
same bounded waiting, so no loop of the bench can run forever.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements, and the runs themselves.

    The median, not the mean: one run disturbed by another program on a 2-core machine
    must not move the figure.

    >>> summarise([3.0, 1.0, 2.0])["median"]
    2.0
    """
    if not values:
        raise ValueError("no measurement to summarise")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": [round(v, 3) for v in values],
    }


def median_of(stats: dict[str, Any] | float | None) -> float | None:
    """The central figure of a result, whether a summary dict or a plain number."""
    if isinstance(stats, dict):
        value = stats.get("median")
        return float(value) if isinstance(value, int | float) else None
    return float(stats) if isinstance(stats, int | float) else None


def ratio(numerator: dict[str, Any] | float | None, denominator: dict[str, Any] | float | None) -> float | None:
    """Ratio of two medians, None when either is missing or the denominator is 0."""
    top, bottom = median_of(numerator), median_of(denominator)
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


class Deadline:
    """A monotonic deadline: every wait of the bench is bounded by one."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = Deadline(timeout)
    while not condition():
        if deadline.expired:
            return False
        time.sleep(interval)
    return True


def rss_mb() -> float:
    """Resident memory of this process now (``/proc/self/statm``), in MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
