"""Model-sync statistics: mergeable per (device kind, metric), shared by the edge and the cloud.

Every edge node learns, next to its per-device detectors, one small model per (kind, metric)
of its site: count, mean and M2 of the values, their range, the same per 15-minute
time-of-day bin, and a histogram of the absolute change from each device's previous value
(:class:`~pipeline.protocol.model_codec.MetricStats`). All of it is *sufficient statistics*:
two summaries merge exactly (Chan et al.'s parallel variance for mean and M2, sums for counts
and histograms, min/max for the range), so ``merge(learn(A), learn(B)) == learn(A + B)`` up
to floating point, and a delta (what was learned since the last one) merges like any summary.

:class:`~pipeline.edge.model_sync.ModelSync` is what the edge node uses (learn, ship signed
deltas, keep verified merged models); the cloud merges with :func:`merge_stats`
(``pipeline.cloud.models``); :func:`prior_from_stats` turns a merged model into the
:class:`DetectorPrior` a new detector warm-starts from
(:meth:`~pipeline.detect.seasonal.SeasonalResidualDetector.warm_start`).

Why not river's ``stats.Var`` (whose ``+`` merges two summaries the same way): it keeps
its mean as a ``stats.Mean`` whose merge computes ``n_a * mean_a + n_b * mean_b`` over
``n`` (not ``mean_a + delta * n_b / n``) and its own M2 update, so merged figures would
differ in the last bits from today's, the quantised wire format (``MetricStats``: n, mean,
M2 per bin) would need converting both ways, and 96 time-of-day bins would be 96 objects
per metric instead of three lists. The arithmetic here is Chan et al.'s, as in river.

Examples
--------
>>> a, b, both = StatsAccumulator(), StatsAccumulator(), StatsAccumulator()
>>> for i, x in enumerate([1.0, 2.0, 4.0, 8.0]):
...     (a if i < 2 else b).learn_one(x, i * 1000, None)
...     both.learn_one(x, i * 1000, None)
>>> merged = merge_stats(a.to_stats(), b.to_stats())
>>> (merged.n, merged.mean, merged.m2) == (both.n, both.mean, both.m2)
True
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from pipeline.learn.periods import DAY_MS
from pipeline.protocol.model_codec import (
    DAY_BIN_MS,
    DAY_BINS,
    RES_BINS,
    MetricStats,
    residual_bin,
    residual_bin_value,
)

PRIOR_WARMUP = 10  # readings before a warm-started detector scores (a cold one waits 100)
PRIOR_EFFECTIVE_N = 1000  # the prior's residual memory stands for this many readings
MIN_PRIOR_READINGS = 200  # a merged model that saw fewer readings of a metric is not used


class StatsAccumulator:
    """Mutable :class:`MetricStats` in float64: ``learn_one`` per value, ``to_stats`` to ship."""

    __slots__ = ("n", "mean", "m2", "low", "high", "day_n", "day_mean", "day_m2", "res")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.day_n = [0] * DAY_BINS
        self.day_mean = [0.0] * DAY_BINS
        self.day_m2 = [0.0] * DAY_BINS
        self.res = [0] * RES_BINS

    def learn_one(self, x: float, ts_ms: int, previous: float | None) -> None:
        """Add value ``x`` at ``ts_ms``; ``previous`` is the same device's previous value."""
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)
        self.low = min(self.low, x)
        self.high = max(self.high, x)
        b = ts_ms % DAY_MS // DAY_BIN_MS
        self.day_n[b] += 1
        d = x - self.day_mean[b]
        self.day_mean[b] += d / self.day_n[b]
        self.day_m2[b] += d * (x - self.day_mean[b])
        if previous is not None:
            self.res[residual_bin(abs(x - previous))] += 1

    def to_stats(self) -> MetricStats:
        empty = self.n == 0
        return MetricStats(
            n=self.n,
            mean=self.mean,
            m2=self.m2,
            low=0.0 if empty else self.low,
            high=0.0 if empty else self.high,
            day_n=list(self.day_n),
            day_mean=list(self.day_mean),
            day_m2=list(self.day_m2),
            res=list(self.res),
        )


def _chan(n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float) -> tuple[float, float]:
    """Mean and M2 of two merged samples (Chan, Golub and LeVeque's pairwise update)."""
    n = n_a + n_b
    if n_b == 0:
        return mean_a, m2_a
    if n_a == 0:
        return mean_b, m2_b
    delta = mean_b - mean_a
    return mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


def merge_stats(a: MetricStats, b: MetricStats) -> MetricStats:
    """The statistics of both samples together (exact up to floating point)."""
    mean, m2 = _chan(a.n, a.mean, a.m2, b.n, b.mean, b.m2)
    day = [
        _chan(na, ma, sa, nb, mb, sb)
        for na, ma, sa, nb, mb, sb in zip(
            a.day_n, a.day_mean, a.day_m2, b.day_n, b.day_mean, b.day_m2, strict=True
        )
    ]
    if a.n == 0 or b.n == 0:
        low, high = (b.low, b.high) if a.n == 0 else (a.low, a.high)
    else:
        low, high = min(a.low, b.low), max(a.high, b.high)
    return MetricStats(
        n=a.n + b.n,
        mean=mean,
        m2=m2,
        low=low,
        high=high,
        day_n=[x + y for x, y in zip(a.day_n, b.day_n, strict=True)],
        day_mean=[m for m, _ in day],
        day_m2=[s for _, s in day],
        res=[x + y for x, y in zip(a.res, b.res, strict=True)],
    )


def empty_stats() -> MetricStats:
    return StatsAccumulator().to_stats()


def residual_quantile(res: list[int], q: float) -> float:
    """The ``q`` quantile of the residual histogram (a bin's geometric middle)."""
    cumulative, total = [], 0
    for count in res:
        total += count
        cumulative.append(total)
    if total == 0:
        return 0.0
    i = bisect.bisect_left(cumulative, q * total)
    return residual_bin_value(min(i, len(res) - 1))


@dataclass(frozen=True)
class DetectorPrior:
    """What a new device's detector takes from its kind's merged model.

    ``day_profile``: the kind's mean per 15-minute bin (NaN where nothing was seen);
    ``day_error`` and ``previous_error``: expected absolute error of the day-profile and the
    previous-value predictors; ``residual_top``: residuals standing for the largest of
    :data:`PRIOR_EFFECTIVE_N` readings; ``low``, ``high``: the kind's range; ``warmup``:
    readings the warm detector waits before scoring.
    """

    version: int
    day_profile: list[float]
    day_error: float | None
    previous_error: float
    residual_top: list[float]
    low: float
    high: float
    warmup: int = PRIOR_WARMUP


def prior_from_stats(
    s: MetricStats, version: int, top_k: int = 8, effective_n: int = PRIOR_EFFECTIVE_N
) -> DetectorPrior | None:
    """A :class:`DetectorPrior` from a merged model's metric, or None if it saw too little.

    ``residual_top`` holds the largest of ``effective_n`` readings: the readings the warm
    memory stands for (``PRIOR_EFFECTIVE_N`` of a memory counting readings; more at fast rates
    for one counting time, ``pipeline.bench.priors``).
    """
    if s.n < MIN_PRIOR_READINGS or sum(s.res) < MIN_PRIOR_READINGS:
        return None
    profile = [m if n > 0 else math.nan for n, m in zip(s.day_n, s.day_mean, strict=True)]
    spread_n = sum(n - 1 for n in s.day_n if n > 1)
    day_error = (
        math.sqrt(2.0 / math.pi) * math.sqrt(sum(s.day_m2) / spread_n) if spread_n > 0 else None
    )
    total = sum(s.res)
    previous_error = sum(c * residual_bin_value(i) for i, c in enumerate(s.res)) / total
    top = [
        residual_quantile(s.res, 1.0 - (i + 1) / effective_n) for i in range(top_k)
    ]
    return DetectorPrior(version, profile, day_error, previous_error, top, s.low, s.high)
