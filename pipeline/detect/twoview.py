"""Two views of one stream: each reading, and the mean of the last few readings.

``TwoViewDetector`` is ``edgepipe detect``'s detector (``default_detector()``, NAB issue 5).
The **reading view** is the ``SeasonalResidualDetector`` of ``pipeline/detect/seasonal.py``
(residual of the best of three online predictors over the largest residuals seen). The
**mean view** is a second ``SeasonalResidualDetector`` fed the mean of the last
``mean_window`` readings, without timestamps: its evidence is the change of that mean from
one reading to the next (``(x_t - x_{t-m}) / m``) and a mean outside every mean learned so
far. A rising density of spikes, each one ordinary, moves the mean where no single reading
goes. The mean view counts only when it is extreme (its score times ``mean_weight``), so it
adds few false alarms. docs/detection.md has the NAB numbers and what lost.
"""

from __future__ import annotations

import math

from pipeline.detect.base import ValueDetector
from pipeline.detect.seasonal import SeasonalResidualDetector


class TwoViewDetector(ValueDetector):
    """The larger of a reading's score and a damped score of the recent mean.

    Score in [0, 1): ``max(s_reading, mean_weight * s_mean)``, where each view's score is
    ``s = r**2 / (1 + r**2)`` and ``r`` is that view's evidence over the ``top_k``-th
    largest it has seen (``SeasonalResidualDetector``): ``s = 0.5`` is "as unusual as the
    8th most unusual so far", ``s = 0.8`` twice that. With ``mean_weight = 0.6`` the mean
    view reaches 0.59 (the reading view's alert level) only at ``s_mean >= 0.98``, about
    7.6 times its own 8th largest change. No score (0.0) during the first ``warmup``
    readings. Without timestamps (``ts_ms=None``) the reading view uses the previous value
    only. Non-finite readings are scored by the reading view alone and not averaged.

    Parameters
    ----------
    warmup
        Readings learned by both views before scores are given (>= 2).
    mean_window
        Readings averaged by the mean view (>= 1).
    mean_weight
        Multiplier of the mean view's score, in [0, 1]; 0 turns the mean view off.

    Examples
    --------
    >>> d = TwoViewDetector(warmup=20)
    >>> for i in range(300):
    ...     x = 10.0 + (i % 5) * 0.1
    ...     _ = d.score_one({"value": x})
    ...     d.learn_one({"value": x})
    >>> round(d.score_value(10.0), 2)  # the next value: as unusual as the usual largest jump
    0.5
    >>> d.score_value(30.0) > 0.999
    True
    """

    def __init__(self, warmup: int = 150, mean_window: int = 4, mean_weight: float = 0.6) -> None:
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2, got {warmup}")
        if mean_window < 1:
            raise ValueError(f"mean_window must be at least 1, got {mean_window}")
        if not 0.0 <= mean_weight <= 1.0:
            raise ValueError(f"mean_weight must be in [0, 1], got {mean_weight}")
        self.warmup = warmup
        self.mean_window = mean_window
        self.mean_weight = mean_weight
        self._reading_view = SeasonalResidualDetector(warmup=warmup)
        self._mean_view = SeasonalResidualDetector(warmup=warmup)
        self._recent: list[float] = []  # the last mean_window - 1 finite readings

    def _mean_with(self, x: float) -> float:
        """Mean of the last ``mean_window`` finite readings, ``x`` included."""
        return (sum(self._recent) + x) / (len(self._recent) + 1)

    def score_value(self, value: float, ts_ms: int | None = None) -> float:
        """Score in [0, 1) of a reading not learned yet (0.0 during warm-up)."""
        x = value
        score = self._reading_view.score_value(x, ts_ms)
        if self.mean_weight > 0.0 and math.isfinite(x):
            score = max(score, self.mean_weight * self._mean_view.score_value(self._mean_with(x)))
        return score

    def learn_value(self, value: float, ts_ms: int | None = None) -> None:
        """Learn the reading in both views (non-finite readings: the reading view only)."""
        x = value
        self._reading_view.learn_value(x, ts_ms)
        if not math.isfinite(x):
            return
        self._mean_view.learn_value(self._mean_with(x))
        if self.mean_window > 1:
            self._recent.append(x)
            if len(self._recent) >= self.mean_window:
                del self._recent[0]
