"""Tumbling-window aggregates per device and metric, on event time.

A window ``[start, start + window_ms)`` of a device closes once that device's event time
(the newest ``ts`` seen from it) passes ``end + lateness_ms``, or once the device is quiet:
other devices' points kept arriving for ``idle_ms`` after its last one (or nothing at all
arrived for ``10 * idle_ms``). Quiet is relative to the node's input, so when the whole input
stops (a broker outage) no window is cut short, and the backlog delivered afterwards still
closes its windows by event time. A point for a window already
closed is *late*: it is counted, never silently lost, and never changes a shipped aggregate.

Fields are a pure function of the points in the window (count, min, max, mean, population
std, last by ts, count of points scored anomalous), so a replay computes the same aggregate
and the store's overwrite by (series, window start) keeps counts exact.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from pipeline.edge.stages import Point
from pipeline.protocol import SCHEMA_VERSION, Aggregate


@dataclass(slots=True)
class _Window:
    kind: str
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  # Welford's sum of squared deviations
    min: float = math.inf
    max: float = -math.inf
    last_ts: int = -(2**62)
    last: float = 0.0
    anomalies: int = 0

    def add(self, p: Point, anomalous: bool) -> None:
        self.count += 1
        delta = p.value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (p.value - self.mean)
        self.min = min(self.min, p.value)
        self.max = max(self.max, p.value)
        if p.ts >= self.last_ts:
            self.last_ts, self.last = p.ts, p.value
        self.anomalies += anomalous


class WindowAggregator:
    """Per (device, metric) tumbling windows; ``add_one`` then ``flush(now)``.

    >>> agg = WindowAggregator("farm", window_ms=1000, lateness_ms=0)
    >>> for ts, v in [(0, 1.0), (500, 3.0), (1000, 9.0)]:
    ...     agg.add_one(Point("d1", "fridge", "temp", ts, ts, v))
    True
    True
    True
    >>> [(a.start, a.count, a.mean, a.last) for a in agg.flush(now_ms=0)]
    [(0, 2, 2.0, 3.0)]
    """

    def __init__(
        self,
        site: str,
        *,
        window_ms: int = 60_000,
        lateness_ms: int = 5_000,
        idle_ms: int = 30_000,
        anomaly_score: float = 0.99,
        closed_until: dict[tuple[str, str], int] | None = None,
    ) -> None:
        if window_ms <= 0 or lateness_ms < 0 or idle_ms < 0:
            raise ValueError("window_ms must be positive; lateness_ms and idle_ms not negative")
        self.site = site
        self.window_ms = window_ms
        self.lateness_ms = lateness_ms
        self.idle_ms = idle_ms
        self.anomaly_score = anomaly_score
        self._open: dict[tuple[str, str, int], _Window] = {}
        self._event_time: dict[str, int] = {}  # device -> newest ts seen
        self._arrived: dict[str, int] = {}  # device -> node clock when its last point arrived
        self._last_arrival = -(2**62)  # node clock of the newest arrival from any device
        self.closed_until: dict[tuple[str, str], int] = dict(closed_until or {})
        self.late: Counter[str] = Counter()  # by metric

    def __repr__(self) -> str:
        return (
            f"WindowAggregator(site={self.site!r}, window_ms={self.window_ms}, "
            f"lateness_ms={self.lateness_ms}, idle_ms={self.idle_ms})"
        )

    @property
    def open_windows(self) -> int:
        return len(self._open)

    def window_start(self, ts: int) -> int:
        return ts - ts % self.window_ms

    def add_one(self, point: Point, now_ms: int | None = None) -> bool:
        """Add a point; ``now_ms`` is when it arrived (for the quiet-device rule)."""
        if now_ms is not None:
            self._arrived[point.device] = now_ms
            self._last_arrival = max(self._last_arrival, now_ms)
        start = self.window_start(point.ts)
        if start < self.closed_until.get((point.device, point.metric), -(2**62)):
            self.late[point.metric] += 1
            return False
        key = (point.device, point.metric, start)
        window = self._open.get(key)
        if window is None:
            window = self._open[key] = _Window(point.kind)
        window.add(point, point.score >= self.anomaly_score)
        if point.ts > self._event_time.get(point.device, -(2**62)):
            self._event_time[point.device] = point.ts
        return True

    def flush(self, now_ms: int, everything: bool = False) -> list[Aggregate]:
        """Close and return the windows that are due (all of them with ``everything``)."""
        due = []
        for key, window in self._open.items():
            device, metric, start = key
            closes_at = start + self.window_ms + self.lateness_ms
            event_time = self._event_time.get(device, -(2**62))
            arrived = self._arrived.get(device)
            quiet = arrived is not None and (
                self._last_arrival - arrived >= self.idle_ms or now_ms - arrived >= 10 * self.idle_ms
            )
            if everything or event_time >= closes_at or quiet:
                due.append((key, window))
        out = []
        for key, window in sorted(due, key=lambda kv: kv[0]):
            del self._open[key]
            device, metric, start = key
            end = start + self.window_ms
            series = (device, metric)
            self.closed_until[series] = max(self.closed_until.get(series, end), end)
            out.append(self._aggregate(device, metric, start, window))
        return out

    def _aggregate(self, device: str, metric: str, start: int, w: _Window) -> Aggregate:
        return Aggregate(
            v=SCHEMA_VERSION,
            site=self.site,
            device=device,
            kind=w.kind,
            metric=metric,
            start=start,
            end=start + self.window_ms,
            count=w.count,
            min=w.min,
            max=w.max,
            mean=w.mean,
            std=math.sqrt(w.m2 / w.count),
            last=w.last,
            anomalies=w.anomalies,
        )
