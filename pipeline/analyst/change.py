"""Small shared pieces of the analyst's detectors: exponentially weighted statistics and CUSUM.

A window aggregate is one point of a slow series (one a minute by default), so the
analyst's detectors accumulate evidence over windows instead of judging one window: a
two-sided CUSUM (Page 1954) on a standardised residual raises a drift of half a standard
deviation per window within a few windows and ignores isolated noise. The CUSUM statistic
is mapped to the ``[0, 1]`` score the edge's ``AlertPolicy`` expects so that the cloud's
alerts go through the same hysteresis as the edge's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCORE_AT_THRESHOLD = 0.8  # the score of a CUSUM statistic equal to its threshold (the alert default raise_score)
DIRECTIONS = ("both", "up", "down")


def cusum_score(statistic: float, threshold: float) -> float:
    """Map a CUSUM statistic to ``[0, 1)``: ``threshold`` gives 0.8, zero gives 0, monotone.

    >>> round(cusum_score(5.0, 5.0), 3), cusum_score(0.0, 5.0), round(cusum_score(2.15, 5.0), 2)
    (0.8, 0.0, 0.5)
    """
    return 1.0 - (1.0 - SCORE_AT_THRESHOLD) ** (max(0.0, statistic) / threshold)


@dataclass(slots=True)
class EwStats:
    """Exponentially weighted mean and variance (West 1979) with a warm-up count.

    ``alpha`` is the weight of the newest value; ``count`` says how many were learned.
    """

    alpha: float
    count: int = 0
    mean: float = 0.0
    var: float = 0.0

    def learn_one(self, x: float) -> None:
        self.count += 1
        if self.count == 1:
            self.mean, self.var = x, 0.0
            return
        # the first values weigh as a plain average until 1/alpha of them were seen
        a = max(self.alpha, 1.0 / self.count)
        delta = x - self.mean
        self.mean += a * delta
        self.var = (1.0 - a) * (self.var + a * delta * delta)

    @property
    def std(self) -> float:
        return math.sqrt(self.var)


@dataclass(slots=True)
class Cusum:
    """Two-sided CUSUM on a standardised residual ``z``; ``direction`` keeps one side only.

    ``slack`` (k) is the residual per step ignored as noise, in standard deviations; the
    statistic is capped at ``cap`` so that it falls back below the clear threshold in a
    bounded number of quiet steps after a long anomaly.

    >>> c = Cusum(slack=0.5, cap=10.0)
    >>> [round(c.update(z), 1) for z in (0.3, 2.0, 2.0, -1.0)]
    [0.0, 1.5, 3.0, 1.5]
    """

    slack: float
    cap: float
    direction: str = "both"
    high: float = 0.0
    low: float = 0.0

    def update(self, z: float) -> float:
        if self.direction != "down":
            self.high = min(self.cap, max(0.0, self.high + z - self.slack))
        if self.direction != "up":
            self.low = min(self.cap, max(0.0, self.low - z - self.slack))
        return max(self.high, self.low)

    @property
    def sign(self) -> int:
        """+1 if the upper side leads, -1 the lower, 0 if neither holds evidence."""
        if self.high == self.low == 0.0:
            return 0
        return 1 if self.high >= self.low else -1

    def reset(self) -> None:
        self.high = self.low = 0.0


@dataclass(slots=True)
class SmoothedShift:
    """A persistent shift of a standardised residual, judged against the series' own smoothing.

    The residual is smoothed (exponential mean over about ``span`` windows) and the smoothed
    value is compared with its own learned spread. Sensor series are autocorrelated (a
    thermostat's cycle, a field drying between irrigations): a CUSUM tuned for white noise
    reads a half cycle as a shift, while the spread of the *smoothed* residual grows with
    exactly that autocorrelation, so each series gets the threshold its own history allows.
    ``update`` returns the shift in units of that spread (signed); ``learn`` teaches it.

    >>> s = SmoothedShift(span=5, alpha=0.01)
    >>> import random; rng = random.Random(1)
    >>> for _ in range(2000):
    ...     s.learn(s.update(rng.gauss(0, 1)))
    >>> [round(s.update(3.0)) for _ in range(4)][-1] > 4  # a steady 3 sd shift stands out
    True
    """

    span: float
    alpha: float
    min_sd: float = 0.3
    direction: str = "both"
    level: float = 0.0
    spread: EwStats | None = None

    def update(self, z: float) -> float:
        a = 2.0 / (self.span + 1.0)
        self.level += a * (z - self.level)
        sd = max(self.spread.std if self.spread is not None else 0.0, self.min_sd)
        shift = self.level / sd
        if self.direction == "up":
            return max(0.0, shift)
        if self.direction == "down":
            return min(0.0, shift)
        return shift

    def learn(self, shift: float, clip: float = 4.0) -> None:
        """Learn the current smoothed level (winsorised at ``clip`` spreads)."""
        if self.spread is None:
            self.spread = EwStats(self.alpha)
        sd = max(self.spread.std, self.min_sd)
        self.spread.learn_one(max(-clip * sd, min(clip * sd, self.level)))

    def reset(self) -> None:
        self.level = 0.0


def shift_score(shift: float, threshold: float) -> float:
    """A shift of ``threshold`` spreads scores 0.8 (raise), 0.43 of it 0.5 (clear)."""
    return cusum_score(abs(shift), threshold)
