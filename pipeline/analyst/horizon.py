"""Long horizon: each device's windows against its own previous days at the same hour.

The edge's detectors remember hours; a change that builds over a morning, or a device that
reads at ten what it read at noon yesterday, escapes them. The cloud has days of aggregates:
for every window the reference is the median, over the device's previous days (up to
``days``), of its mean in the same hour of the day. The residual from that reference is
standardised by the device's usual day-to-day residual, smoothed and judged against its own
usual spread (``change.SmoothedShift``), as the peer detector does. Windows of an anomaly (held, or beyond
``clip_sd``) are kept out of the profile, so an anomaly does not become tomorrow's normal.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from pipeline.analyst.change import EwStats, SmoothedShift, shift_score
from pipeline.protocol import Aggregate

HOUR_MS = 3_600_000
HOURS_PER_DAY = 24
VARIANCE_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class HorizonScore:
    score: float
    z: float
    expected: float
    days: int

    @property
    def detail(self) -> str:
        return f"{self.z:+.1f} sd from the same hour of the previous {self.days} day(s) (expected {self.expected:.4g})"


class HorizonDetector:
    """One device's metric against its own previous days, hour of day by hour of day.

    >>> import random; rng = random.Random(2)
    >>> det = HorizonDetector(step=0.1)
    >>> def agg(minute, value):
    ...     t = minute * 60_000
    ...     return Aggregate(1, "s", "d", "k", "m", t, t + 60_000, 1, value, value, value, 0, value, 0)
    >>> daily = lambda minute: 10.0 + (minute // 60) % 24 + rng.gauss(0, 0.2)  # hour by hour, every day
    >>> scores = [det.update_one(agg(m, daily(m))) for m in range(3 * 1440)]
    >>> max(s.score for s in scores if s is not None) < 0.8
    True
    >>> late = [det.update_one(agg(m, daily(m) + 3.0)) for m in range(3 * 1440, 3 * 1440 + 20)]
    >>> late[-1].score > 0.8  # three units above its own previous days at this hour
    True
    """

    def __init__(
        self,
        *,
        step: float = 0.0,
        days: int = 7,
        min_days: int = 1,
        half_life_windows: float = 1440.0,
        warmup_windows: int = 120,
        span_windows: float = 6.0,
        threshold_sd: float = 8.0,
        clip_sd: float = 4.0,
    ) -> None:
        if days < 1 or not 1 <= min_days <= days or half_life_windows <= 0 or warmup_windows < 0 or step < 0:
            raise ValueError("need days >= min_days >= 1, half_life_windows > 0, warmup_windows >= 0, step >= 0")
        if span_windows < 1 or threshold_sd <= 0 or clip_sd <= 0:
            raise ValueError("span_windows >= 1, threshold_sd > 0, clip_sd > 0")
        self.step = step
        self.days, self.min_days = days, min_days
        self.warmup_windows = warmup_windows
        self.threshold_sd, self.clip_sd = threshold_sd, clip_sd
        alpha = 1.0 - 0.5 ** (1.0 / half_life_windows)
        self.residual = EwStats(alpha)
        self.shift = SmoothedShift(span_windows, alpha)
        self._hours: dict[int, list[float]] = {}  # hour since epoch -> [sum, count]

    def __repr__(self) -> str:
        return f"HorizonDetector(days={self.days}, min_days={self.min_days}, threshold_sd={self.threshold_sd})"

    def reference(self, start_ms: int) -> tuple[float, int] | None:
        """The median of the previous days' means at this hour of the day, and how many days."""
        hour = start_ms // HOUR_MS
        means = []
        for back in range(1, self.days + 1):
            bucket = self._hours.get(hour - back * HOURS_PER_DAY)
            if bucket is not None and bucket[1] > 0:
                means.append(bucket[0] / bucket[1])
        if len(means) < self.min_days:
            return None
        return statistics.median(means), len(means)

    def update_one(self, agg: Aggregate, held: bool = False) -> HorizonScore | None:
        """Score then learn one window; None until a previous day's same hour is known."""
        x = agg.mean
        if not math.isfinite(x):
            return None
        ref = self.reference(agg.start)
        out = None
        learn = not held
        if ref is not None:
            expected, days = ref
            residual = x - expected
            scale = max(self.residual.std, self.step, VARIANCE_EPS)
            z = (residual - self.residual.mean) / scale if self.residual.count else 0.0
            score = 0.0
            if held:
                self.shift.reset()
            else:
                shift = self.shift.update(z)
                if self.residual.count >= self.warmup_windows:
                    score = shift_score(shift, self.threshold_sd)
                    learn = abs(z) < self.clip_sd and abs(shift) < self.clip_sd
                if learn or self.residual.count < self.warmup_windows:
                    self.shift.learn(shift, self.clip_sd)
            out = HorizonScore(score, z, expected, days)
            if learn:
                self.residual.learn_one(residual)
        if learn:
            hour = agg.start // HOUR_MS
            bucket = self._hours.get(hour)
            if bucket is None:  # a new hour: forget the hours no reference will reach again
                for old in [h for h in self._hours if h < hour - self.days * HOURS_PER_DAY]:
                    del self._hours[old]
                bucket = self._hours[hour] = [0.0, 0]
            bucket[0] += x
            bucket[1] += 1
        return out
