"""``ZScoreDetector``: the baseline every edgepipe detector is measured against.

A z-score against an exponentially weighted mean and variance (river's ``EWMean``/``EWVar``).
Does not use time (``x["ts_ms"]`` is ignored).
"""

from __future__ import annotations

import math

from river import stats

from pipeline.detect.base import ValueDetector


class ZScoreDetector(ValueDetector):
    """Streaming z-score turned into a score in [0, 1] (the baseline).

    The score is ``erf(z / sqrt(2))``: the probability that a Gaussian deviation is smaller
    than this one, so 0.997 means "a 3-sigma event". No score (0.0) during the first
    ``warmup`` values, because the statistics mean nothing yet. ``ts_ms`` is ignored.

    Parameters
    ----------
    fading_factor
        Weight of the newest value in the running mean and variance (0 < f < 1).
    warmup
        Values learned before scores are given.

    Examples
    --------
    >>> d = ZScoreDetector(fading_factor=0.1, warmup=5)
    >>> for x in [10.0, 10.2, 9.8, 10.1, 9.9, 10.0]:
    ...     d.learn_one({"value": x})
    >>> d.score_one({"value": 10.0}) < 0.1
    True
    >>> d.score_value(20.0) > 0.999
    True
    """

    def __init__(self, fading_factor: float = 0.02, warmup: int = 30) -> None:
        if not 0.0 < fading_factor < 1.0:
            raise ValueError(f"fading_factor must be in (0, 1), got {fading_factor}")
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2, got {warmup}")
        self.fading_factor = fading_factor
        self.warmup = warmup
        self._mean = stats.EWMean(fading_factor)
        self._var = stats.EWVar(fading_factor)
        self._n = 0

    def score_value(self, value: float, ts_ms: int | None = None) -> float:
        x = value
        if self._n < self.warmup:
            return 0.0
        std = math.sqrt(max(self._var.get(), 0.0))
        deviation = abs(x - self._mean.get())
        if std == 0.0:
            return 0.0 if deviation == 0.0 else 1.0
        z = deviation / std
        if z != z:  # the statistics overflowed (values near 1e308): no evidence, not NaN
            return 0.0
        return math.erf(z / math.sqrt(2.0))

    def learn_value(self, value: float, ts_ms: int | None = None) -> None:
        self._mean.update(value)
        self._var.update(value)
        self._n += 1
