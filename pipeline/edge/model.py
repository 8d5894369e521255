"""Kind-level models: learn mergeable statistics per (device kind, metric), merge them, warm-start.

Every edge node learns, next to its per-device detectors, one small model per (kind, metric)
of its site: count, mean and M2 of the values, their range, the same per 15-minute
time-of-day bin, and a histogram of the absolute change from each device's previous value
(:class:`~pipeline.protocol.model_codec.MetricStats`). All of it is *sufficient statistics*:
two summaries merge exactly (Chan et al.'s parallel variance for mean and M2, sums for counts
and histograms, min/max for the range), so ``merge(learn(A), learn(B)) == learn(A + B)`` up
to floating point, and a delta (what was learned since the last one) merges like any summary.

:class:`ModelSync` is what the edge node uses: ``learn_one`` per reading, ``take_deltas``
every ``edge.model_interval_s`` (signed, quantised), ``on_merged`` for the cloud's merged
model, and ``prior`` to warm-start a new device's detector from it
(:meth:`~pipeline.edge.detect.SeasonalResidualDetector.warm_start`).

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
from dataclasses import dataclass, field

from pipeline.errors import ProtocolError
from pipeline.protocol.messages import SCHEMA_VERSION
from pipeline.protocol.model_codec import (
    DAY_BIN_MS,
    DAY_BINS,
    RES_BINS,
    MergedModel,
    MetricStats,
    ModelDelta,
    decode_merged,
    quantise_stats,
    residual_bin,
    residual_bin_value,
    sign,
    verify,
)
from pipeline.protocol.reasons import Reason

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
        b = ts_ms % 86_400_000 // DAY_BIN_MS
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


def prior_from_stats(s: MetricStats, version: int, top_k: int = 8) -> DetectorPrior | None:
    """A :class:`DetectorPrior` from a merged model's metric, or None if it saw too little."""
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
        residual_quantile(s.res, 1.0 - (i + 1) / PRIOR_EFFECTIVE_N) for i in range(top_k)
    ]
    return DetectorPrior(version, profile, day_error, previous_error, top, s.low, s.high)


@dataclass
class ModelSync:
    """The edge side of model sync: learn per kind, ship signed deltas, keep verified priors.

    ``key`` signs this site's deltas (empty: no deltas are shipped); ``cloud_key`` verifies
    merged models (empty: none is used). Counters say what was refused and why.
    """

    site: str
    node: str
    key: bytes
    cloud_key: bytes
    interval_ms: int
    accumulators: dict[tuple[str, str], StatsAccumulator] = field(default_factory=dict)
    previous: dict[tuple[str, str], float] = field(default_factory=dict)
    merged: dict[str, MergedModel] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    deltas_shipped: int = 0
    warm_started: int = 0
    next_due_ms: int = 0

    @property
    def shipping(self) -> bool:
        return bool(self.key)

    def learn_one(self, device: str, kind: str, metric: str, value: float, ts_ms: int) -> None:
        if not self.shipping:
            return
        acc = self.accumulators.get((kind, metric))
        if acc is None:
            acc = self.accumulators[(kind, metric)] = StatsAccumulator()
        key = (device, metric)
        acc.learn_one(value, ts_ms, self.previous.get(key))
        self.previous[key] = value

    def due(self, now_ms: int) -> bool:
        if not self.shipping or now_ms < self.next_due_ms:
            return False
        if self.next_due_ms == 0:  # the first interval starts now
            self.next_due_ms = now_ms + self.interval_ms
            return False
        return True

    def take_deltas(self, now_ms: int) -> dict[str, dict[str, MetricStats]]:
        """What was learned since the last call, per kind and metric (quantised); reset."""
        self.next_due_ms = now_ms + self.interval_ms
        out: dict[str, dict[str, MetricStats]] = {}
        for (kind, metric), acc in sorted(self.accumulators.items()):
            if acc.n:
                out.setdefault(kind, {})[metric] = quantise_stats(acc.to_stats())
        self.accumulators.clear()
        return out

    def delta(self, kind: str, metrics: dict[str, MetricStats], seq: int, now_ms: int) -> ModelDelta:
        """The signed delta of ``kind`` with uplink ``seq``."""
        base = self.merged[kind].version if kind in self.merged else 0
        unsigned = ModelDelta(
            v=SCHEMA_VERSION,
            site=self.site,
            node=self.node,
            kind=kind,
            seq=seq,
            base_version=base,
            created_ms=now_ms,
            metrics=dict(sorted(metrics.items())),
        )
        self.deltas_shipped += 1
        return sign(unsigned, self.key)

    def on_merged(self, kind: str, payload: bytes) -> MergedModel | None:
        """Verify and keep a merged model from ``cloud/model/{kind}``; None if refused."""
        try:
            model = decode_merged(payload)
            if model.kind != kind:
                raise ProtocolError(Reason.TOPIC_MISMATCH, f"kind {model.kind} on {kind}")
            if not model.sig:
                raise ProtocolError(Reason.UNSIGNED)
            if not self.cloud_key or not verify(model, self.cloud_key):
                raise ProtocolError(Reason.BAD_SIGNATURE)
            known = self.merged.get(kind)
            if known is not None and model.version <= known.version:
                raise ProtocolError(Reason.REPLAYED, f"version {model.version}")
        except ProtocolError as exc:
            self.refused[exc.reason.value] = self.refused.get(exc.reason.value, 0) + 1
            return None
        self.merged[kind] = model
        return model

    def prior(self, kind: str, metric: str, top_k: int = 8) -> DetectorPrior | None:
        model = self.merged.get(kind)
        if model is None or metric not in model.metrics:
            return None
        return prior_from_stats(model.metrics[metric], model.version, top_k)
