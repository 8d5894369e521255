"""EscalationPicker: the windows the edge was unsure about, for the cloud's second opinion.

A window of a (device, metric) is *uncertain* when its highest score reached the alert
policy's ``clear_score`` but not its ``raise_score``, and the edge raised nothing on that
series in it: the edge saw something and could not decide. Its raw points go to the fleet
analyst, which judges them with the fleet's context (the device's peers in the same window)
at a lower bar than a window nobody flagged. What is shipped is bounded by a byte budget per
hour of event time, counted as the points' encoded size (``POINT_BYTES`` each plus
``HEADER_BYTES`` per window); windows over the budget are counted, not shipped.

Pure: points in (with the node's scores), ``Escalation`` messages out; no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.edge.stages import Point
from pipeline.protocol import SCHEMA_VERSION
from pipeline.protocol.messages import Escalation

POINT_BYTES = 16  # one (ts, value) pair: an int64 and a float64
HEADER_BYTES = 96  # site, device, kind, metric, window bounds, score, version
HOUR_MS = 3_600_000


@dataclass
class _Window:
    kind: str
    peak: float = 0.0
    raised: bool = False
    ts: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


class EscalationPicker:
    """Collects each (device, metric) window's points and peak score; ``flush`` picks the uncertain.

    >>> picker = EscalationPicker("farm", window_ms=1000, budget_bytes_per_hour=10_000)
    >>> for ts, score in [(0, 0.1), (500, 0.6), (1000, 0.2)]:
    ...     picker.add_one(Point("d1", "soil_probe", "moisture", ts, ts, 30.0, score))
    >>> [(e.device, e.start, e.score, e.ts) for e in picker.flush(before_ms=1000)]
    [('d1', 0, 0.6, [0, 500])]
    """

    def __init__(
        self,
        site: str,
        *,
        window_ms: int = 60_000,
        clear_score: float = 0.5,
        raise_score: float = 0.8,
        budget_bytes_per_hour: int = 200_000,
    ) -> None:
        if window_ms <= 0 or not 0 < clear_score < raise_score or budget_bytes_per_hour < 0:
            raise ValueError("window_ms > 0, 0 < clear_score < raise_score, budget_bytes_per_hour >= 0")
        self.site = site
        self.window_ms = window_ms
        self.clear_score, self.raise_score = clear_score, raise_score
        self.budget_bytes_per_hour = budget_bytes_per_hour
        self._open: dict[tuple[str, str, int], _Window] = {}
        self._spent: dict[int, int] = {}  # hour of event time -> bytes shipped in it
        self.shipped_bytes = 0
        self.over_budget: Counter[str] = Counter()  # windows not shipped, by metric

    def __repr__(self) -> str:
        return (
            f"EscalationPicker(window_ms={self.window_ms}, clear_score={self.clear_score}, "
            f"raise_score={self.raise_score}, budget_bytes_per_hour={self.budget_bytes_per_hour})"
        )

    def add_one(self, point: Point, raised: bool = False) -> None:
        """One scored point; ``raised``: the policy raised (or escalated) an alert on it."""
        start = point.ts - point.ts % self.window_ms
        key = (point.device, point.metric, start)
        w = self._open.get(key)
        if w is None:
            w = self._open[key] = _Window(point.kind)
        w.peak = max(w.peak, point.score)
        w.raised = w.raised or raised
        w.ts.append(point.ts)
        w.values.append(point.value)

    def flush(self, before_ms: int) -> list[Escalation]:
        """Close the windows that end at or before ``before_ms``; the uncertain ones within budget."""
        out = []
        for key in sorted(k for k in self._open if k[2] + self.window_ms <= before_ms):
            w = self._open.pop(key)
            device, metric, start = key
            if w.raised or not self.clear_score <= w.peak < self.raise_score:
                continue
            size = HEADER_BYTES + POINT_BYTES * len(w.ts)
            hour = start // HOUR_MS
            if self._spent.get(hour, 0) + size > self.budget_bytes_per_hour:
                self.over_budget[metric] += 1
                continue
            self._spent[hour] = self._spent.get(hour, 0) + size
            for old in [h for h in self._spent if h < hour - 1]:
                del self._spent[old]
            self.shipped_bytes += size
            out.append(
                Escalation(
                    v=SCHEMA_VERSION, site=self.site, device=device, kind=w.kind, metric=metric,
                    start=start, end=start + self.window_ms, score=w.peak, ts=w.ts, values=w.values,
                )  # fmt: skip
            )
        return out
