"""Alerts against ground-truth labels: which alerts fall in a labelled anomaly's window.

One set of rules for everything that compares alerts with the simulators' labels: the
quality bench (``pipeline.bench.quality``, ``pipeline.bench.rates``, ``pipeline.bench.analyst``)
and ``edgepipe demo``'s ``alerts_matching_labels``. Pure: labels and alerts in, counts out.

* an alert of a device inside one of its label windows ``[start, end + grace]`` on a labelled
  metric (a dropout alert, metric ``_device``, matches any) detects that event;
* an event with no such alert is a miss; an alert outside every window is a false alarm;
* ``grace_ms(interval_ms)``: two minutes where the rate allows, at least two readings at slow
  rates (the first chance to see an anomaly is the next reading).
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.protocol.causes import DEVICE_METRIC

GRACE_S = 120.0  # an alert within two minutes after a window still detects it
GRACE_INTERVALS = 2  # ... and at slow rates, within the next two readings


def grace_ms(interval_ms: float) -> float:
    """How long after a window's end an alert still detects it, for a series' interval."""
    return max(GRACE_S * 1000, GRACE_INTERVALS * interval_ms)


@dataclass(frozen=True, slots=True)
class Event:
    """One labelled anomaly: device, metrics, kind and window (ms, inclusive)."""

    device: str
    metrics: tuple[str, ...]
    anomaly: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Raised:
    """One alert as users see it: its first raise."""

    device: str
    metric: str
    ts: int
    cause: str


@dataclass
class Matched:
    """The outcome of matching alerts to events."""

    events: int = 0
    detected: int = 0
    false_alarms: int = 0
    delays: list[int] = field(default_factory=list)
    by_anomaly: dict[str, list[int]] = field(default_factory=dict)  # anomaly -> [events, detected]
    false_by_cause: dict[str, int] = field(default_factory=dict)

    def figures(self, device_days: float) -> dict[str, float | None]:
        precision = self.detected / (self.detected + self.false_alarms) if self.detected + self.false_alarms else 0.0
        recall = self.detected / self.events if self.events else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "f1": f1,
            "precision": precision,
            "recall": recall,
            "median_delay_readings": statistics.median(self.delays) if self.delays else None,
            "false_alarms_per_device_day": self.false_alarms / device_days if device_days else None,
        }


def match_alerts(
    events: Sequence[Event],
    alerts: Iterable[Raised],
    interval_ms: float,
    grace_readings: int,
    grace_ms: float | None = None,
) -> Matched:
    """Match alerts to label windows (the rules in the module docstring).

    ``grace_ms``, when given, replaces ``grace_readings`` intervals (plans that compare
    reporting rates state their grace in time, not in readings).

    >>> e = [Event("d", ("t",), "spike", 1000, 2000), Event("d", ("t",), "dip", 9000, 9000)]
    >>> m = match_alerts(e, [Raised("d", "t", 1500, "anomaly"), Raised("d", "t", 5000, "anomaly")], 100, 2)
    >>> m.detected, m.events, m.false_alarms, m.delays
    (1, 2, 1, [5])
    """
    grace = grace_readings * interval_ms if grace_ms is None else grace_ms
    by_device: dict[str, list[Event]] = {}
    for e in sorted(events, key=lambda e: e.start):
        by_device.setdefault(e.device, []).append(e)
    starts = {d: [e.start for e in es] for d, es in by_device.items()}
    first: dict[int, int] = {}  # id(event) -> ts of its first alert
    result = Matched(events=len(events))
    for a in sorted(alerts, key=lambda a: a.ts):
        candidates = by_device.get(a.device, [])
        hit = False
        for e in candidates[: bisect.bisect_right(starts.get(a.device, []), a.ts)]:
            if a.ts <= e.end + grace and (a.metric == DEVICE_METRIC or a.metric in e.metrics):
                hit = True
                first.setdefault(id(e), a.ts)
        if not hit:
            result.false_alarms += 1
            result.false_by_cause[a.cause] = result.false_by_cause.get(a.cause, 0) + 1
    for e in events:
        counts = result.by_anomaly.setdefault(e.anomaly, [0, 0])
        counts[0] += 1
        if id(e) in first:
            counts[1] += 1
            result.detected += 1
            result.delays.append(round((first[id(e)] - e.start) / interval_ms))
    return result


