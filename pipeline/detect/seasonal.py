"""``SeasonalResidualDetector``: the residual of the best online predictor over the largest residuals seen.

It scores 68.9 on the NAB development subset (standard profile) against 31 for the z-score;
docs/detection.md records what was tried. ``default_detector()`` (``edgepipe detect``,
``pipeline.detect.registry``) wraps it in ``TwoViewDetector`` (70.3); the edge node runs its
subclass ``EdgeResidualDetector``. Uses time: ``x["ts_ms"]`` feeds the time-of-day and
day-of-week profiles (without it, only the previous value predicts).
"""

from __future__ import annotations

import math
from array import array
from typing import TYPE_CHECKING

from pipeline.detect.base import ValueDetector
from pipeline.detect.residual_memory import ResidualMemory
from pipeline.learn.periods import DAY_S, MS_PER_S, WEEK_S
from pipeline.learn.scores import ratio_score

if TYPE_CHECKING:
    from pipeline.learn.sync_stats import DetectorPrior

NO_REFERENCE_RATIO = 1e6  # the ratio of a non-zero residual while no residual is remembered
SATURATED_RATIO = 1e150  # from this ratio the score is 1.0 (r**2 would lose all precision)


class SeasonalResidualDetector(ValueDetector):
    """Residual from the best online predictor, scored against the largest residuals seen.

    Why this shape: most anomalies in real streams are either a jump the recent past does not
    explain (spikes, level shifts, drops) or a break of the daily/weekly rhythm (a missing
    peak). Three cheap predictors cover both: the previous value, a time-of-day profile and
    a day-of-week profile (each an exponentially weighted mean per time bin). Whichever has
    the lowest running mean absolute error predicts; its absolute residual is the evidence.

    Calibration without a distributional assumption: the residual is divided by the
    ``top_k``-th largest residual learned so far (slowly forgotten, ``forget`` per reading),
    giving the ratio ``r``. A value outside the range of everything learned after half the
    warm-up gets ``r >= 1 + excess / (range_margin * range)`` too (a never-seen level).

    Score: ``s = r**2 / (1 + r**2)`` in [0, 1). ``s = 0.5`` means "as unusual as the
    ``top_k``-th most unusual reading so far"; ``1 - s`` falls with the square of the ratio
    above that. After a reading reaches ``r >= alert_ratio`` (``s >= 0.59`` by default), the
    next ``cooldown`` scores are multiplied by ``cooldown_factor``: the episode has already
    been flagged, and a long anomaly should raise one alert, not hundreds. No score (0.0)
    during the first ``warmup`` readings.

    Without timestamps (``ts_ms=None``) only the previous-value predictor is used.

    Parameters
    ----------
    warmup
        Readings learned before scores are given (>= 2).
    top_k
        The residual is compared with the ``top_k``-th largest residual seen (>= 1).
    forget
        Per-reading decay of the remembered residuals, in [0, 1): 1e-4 halves them in
        about 7 000 readings, so an old outburst stops masking new ones.
    error_alpha
        Weight of the newest error in each predictor's running mean absolute error, (0, 1].
    season_alpha
        Weight of the newest value in a time bin's profile, (0, 1].
    day_bin_s, week_bin_s
        Width of the time-of-day and day-of-week bins in seconds (dividing a day, a week).
    range_margin
        Fraction of the learned range a value must exceed it by to score ``r = 2``, > 0.
    alert_ratio
        Ratio from which a reading counts as an alert and starts the cooldown, > 0.
    cooldown
        Readings damped after an alert, >= 0.
    cooldown_factor
        Multiplier of the scores during the cooldown, in [0, 1].
    residual
        ``"best"``: the residual of the predictor with the lowest running error (the NAB
        winner). ``"closest"``: the smallest residual of any predictor that has one, so a
        reading is ordinary if either the recent past or the usual time of day explains it
        (the edge's choice: fewer false alarms when a young day profile is wrong at one bin,
        and a smaller, more sensitive residual memory; docs/detection.md).

    Examples
    --------
    >>> d = SeasonalResidualDetector(warmup=20)
    >>> for i in range(200):
    ...     x = {"value": 10.0 + (i % 5) * 0.1}
    ...     _ = d.score_one(x)
    ...     d.learn_one(x)
    >>> d.score_one({"value": 10.2}) < 0.5
    True
    >>> d.score_value(30.0) > 0.999
    True
    """

    # The time-of-day bin of the last reading learned (-1: none). A class default, so that a
    # detector restored from a snapshot written before it existed reads "none".
    _previous_day_bin = -1
    # Day bins still holding a kind prior's value (0) or the series' own (1); None: all own.
    _prior_bins: bytearray | None = None

    def __init__(
        self,
        warmup: int = 100,
        top_k: int = 8,
        forget: float = 1e-4,
        error_alpha: float = 0.01,
        season_alpha: float = 0.1,
        day_bin_s: int = 900,
        week_bin_s: int = 1800,
        range_margin: float = 0.1,
        alert_ratio: float = 1.2,
        cooldown: int = 30,
        cooldown_factor: float = 0.5,
        residual: str = "best",
    ) -> None:
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2, got {warmup}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if not 0.0 <= forget < 1.0:
            raise ValueError(f"forget must be in [0, 1), got {forget}")
        for name, alpha in (("error_alpha", error_alpha), ("season_alpha", season_alpha)):
            if not 0.0 < alpha <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {alpha}")
        for name, width, period in (
            ("day_bin_s", day_bin_s, DAY_S),
            ("week_bin_s", week_bin_s, WEEK_S),
        ):
            if width < 1 or period % width:
                raise ValueError(f"{name} must be a positive divisor of {period}, got {width}")
        if range_margin <= 0.0:
            raise ValueError(f"range_margin must be positive, got {range_margin}")
        if alert_ratio <= 0.0:
            raise ValueError(f"alert_ratio must be positive, got {alert_ratio}")
        if cooldown < 0:
            raise ValueError(f"cooldown must be at least 0, got {cooldown}")
        if not 0.0 <= cooldown_factor <= 1.0:
            raise ValueError(f"cooldown_factor must be in [0, 1], got {cooldown_factor}")
        if residual not in ("best", "closest"):
            raise ValueError(f"residual must be 'best' or 'closest', got {residual!r}")
        self.warmup = warmup
        self._warmup = warmup  # lowered by warm_start (the parameter stays as given)
        self.top_k = top_k
        self.forget = forget
        self.error_alpha = error_alpha
        self.season_alpha = season_alpha
        self.day_bin_s = day_bin_s
        self.week_bin_s = week_bin_s
        self.range_margin = range_margin
        self.alert_ratio = alert_ratio
        self.cooldown = cooldown
        self.cooldown_factor = cooldown_factor
        self.residual = residual
        self._closest = residual == "closest"
        self._neighbours = 0  # time-of-day bins either side that also predict (closest residual)
        self._memory_from = warmup // 2  # residuals (and range) remembered after this
        self._n: float = 0  # readings learned (with a reference interval: intervals covered)
        self._previous: float | None = None
        # Running mean absolute error of each predictor: previous value, day, week (None: no
        # prediction made yet).
        self._errors: list[float | None] = [None, None, None]
        # Profiles (float32, 1.7 KB together) are allocated on the first timestamp: a caller
        # without timestamps pays nothing for them.
        self._day: array[float] | None = None
        self._week: array[float] | None = None
        # The largest residuals remembered, which turn a residual into a ratio (a component:
        # EdgeResidualDetector plugs in its own).
        self._residual_memory: ResidualMemory = ResidualMemory(top_k, forget)
        self._rise = True  # the sign of the last residual computed (closest residual)
        self._low = math.inf
        self._high = -math.inf
        self._cooling = 0
        self._cache: tuple[float, int | None, float, float] | None = None

    @property
    def active_warmup(self) -> int:
        """Readings learned before scores are given now: ``warmup``, or a prior's shorter one."""
        return self._warmup

    def warm_start(self, prior: DetectorPrior) -> None:
        """Start from a device kind's merged model instead of from nothing (model sync).

        Call on a fresh detector, before its first reading. It takes the kind's day profile
        (when its bins are the kind model's 15 minutes), the expected errors of the
        previous-value and day predictors, residuals standing for the largest of many
        readings (so scores are calibrated at once), the kind's range, and the prior's
        shorter warm-up. Without this call nothing changes.
        """
        self._warmup = max(2, min(self.warmup, prior.warmup))
        self._memory_from = 0
        self._errors[0] = prior.previous_error
        if len(prior.day_profile) * self.day_bin_s == DAY_S:
            self._day = array("f", prior.day_profile)
            self._prior_bins = bytearray(len(prior.day_profile))  # the series' own first value replaces each
            self._week = array("f", [math.nan]) * (WEEK_S // self.week_bin_s)
            self._errors[1] = prior.day_error
        self._residual_memory.warm_start([r for r in prior.residual_top[: self.top_k] if r > 0.0])
        self._low, self._high = prior.low, prior.high

    def _own_first(self, day_bin: int) -> bool:
        """True for the series' first value in a day bin that holds a kind prior's value.

        Why: the prior's profile is the kind's mean, only a guess for this device; blended at
        ``season_alpha`` per visit, a 15-minute series (one visit a bin a day) would carry it
        for weeks (learned F1 0.86 -> 0.77 with priors at 15 minutes). A cold series takes its
        first value; so does a primed one, bin by bin, once it has its own.
        """
        bins = self._prior_bins
        if bins is None or bins[day_bin]:
            return False
        bins[day_bin] = 1
        if 0 not in bins:
            self._prior_bins = None
        return True

    def _bins(self, ts_ms: int) -> tuple[int, int]:
        seconds = ts_ms // MS_PER_S
        return seconds % DAY_S // self.day_bin_s, seconds % WEEK_S // self.week_bin_s

    def _residual(self, x: float, ts_ms: int | None) -> float:
        """|x - prediction| of the predictor with the lowest running error (0.0: none yet)."""
        if self._closest:
            return self._closest_residual(x, ts_ms)
        errors = self._errors
        best_error = errors[0]
        prediction = self._previous
        if best_error is None:
            prediction = None
        if ts_ms is not None and self._day is not None and self._week is not None:
            day_bin, week_bin = self._bins(ts_ms)
            for error, profile in (
                (errors[1], self._day[day_bin]),
                (errors[2], self._week[week_bin]),
            ):
                if (
                    error is not None
                    and profile == profile
                    and (best_error is None or error < best_error)
                ):
                    best_error, prediction = error, profile
        return 0.0 if prediction is None else abs(x - prediction)

    def _closest_residual(self, x: float, ts_ms: int | None) -> float:
        """The smallest |x - prediction| (previous value, day profile's own and ``_neighbours`` bins either side, week profile); its sign in ``_rise``."""
        errors = self._errors
        previous = self._previous
        if errors[0] is not None and previous is not None:
            best, closest = abs(x - previous), previous
        else:
            best, closest = math.inf, x
        day, week = self._day, self._week
        if ts_ms is not None and day is not None and week is not None:
            day_bin, week_bin = self._bins(ts_ms)
            if errors[1] is not None:
                bins = len(day)
                for j in range(day_bin - self._neighbours, day_bin + self._neighbours + 1):
                    p = day[j % bins]
                    if p == p and abs(x - p) < best:
                        best, closest = abs(x - p), p
                last_bin = self._previous_day_bin
                if previous is not None and last_bin >= 0 and last_bin != day_bin:
                    # the day's usual step between the two readings' bins, from today's level
                    p = previous + day[day_bin] - day[last_bin]
                    if p == p and abs(x - p) < best:
                        best, closest = abs(x - p), p
            if errors[2] is not None:
                p = week[week_bin]
                if p == p and abs(x - p) < best:
                    best, closest = abs(x - p), p
        self._rise = x >= closest
        return 0.0 if best == math.inf else best

    def _ratio(self, x: float, ts_ms: int | None) -> tuple[float, float]:
        """(residual, ratio r) for x, cached until learn_value consumes it."""
        cache = self._cache
        if cache is not None and cache[0] == x and cache[1] == ts_ms:
            return cache[2], cache[3]
        residual = self._residual(x, ts_ms)
        memory = self._residual_memory
        reference = memory.reference(self._rise)
        if reference > 0.0:
            ratio = residual / reference
        elif residual == 0.0 or memory.unchanged():  # a first change: one step of the sensor
            ratio = 0.0
        else:
            ratio = NO_REFERENCE_RATIO
        span = self._high - self._low
        excess = max(x - self._high, self._low - x)
        if excess > 0.0 and span > 0.0 and memory.covered():
            ratio = max(ratio, 1.0 + excess / (self.range_margin * span))
        ratio = memory.calibrate(ratio)
        self._cache = (x, ts_ms, residual, ratio)
        return residual, ratio

    def score_value(self, value: float, ts_ms: int | None = None) -> float:
        """Score in [0, 1) of a reading not learned yet (0.0 during warm-up)."""
        x = value
        if self._n < self._warmup or x != x:
            return 0.0
        ratio = self._ratio(x, ts_ms)[1]
        score = ratio_score(ratio) if ratio < SATURATED_RATIO else 1.0
        return score * self.cooldown_factor if self._cooling else score

    def learn_value(self, value: float, ts_ms: int | None = None) -> None:
        """Update predictors, their errors, the residual memory, the range and the cooldown.

        A reading stands for as many readings as its residual memory says (``observe``: the
        edge's counts event time), so a slow series warms up over time, not only readings.
        """
        x = value
        steps = self._residual_memory.observe(x, self._previous, ts_ms)
        if x != x or x in (math.inf, -math.inf):
            if steps > 1.0 and x == x:  # infinite: it still counts for the time it covers
                self._n += steps - 1.0
            return
        scored = self._n >= self._warmup  # score_value gave this reading a real score
        self._n += 1
        if self._n == 1:
            self._previous = x
        residual, ratio = self._ratio(x, ts_ms)
        self._cache = None
        if scored:
            if self._cooling:
                self._cooling -= 1
            elif ratio >= self.alert_ratio:
                self._cooling = self.cooldown
        if self._n > self._memory_from:
            self._residual_memory.remember(residual, self._rise)
            if x > self._high:
                self._high = x
            if x < self._low:
                self._low = x
        self._update_predictors(x, ts_ms)
        if steps > 1.0:  # a slow series warms up over event time, not only readings
            self._n += steps - 1.0

    def _update_predictors(self, x: float, ts_ms: int | None) -> None:
        alpha = self.error_alpha
        errors = self._errors
        if self._previous is not None:
            error = abs(x - self._previous)
            errors[0] = error if errors[0] is None else errors[0] + alpha * (error - errors[0])
        self._previous = x
        if ts_ms is None:
            return
        if self._day is None or self._week is None:
            self._day = array("f", [math.nan]) * (DAY_S // self.day_bin_s)
            self._week = array("f", [math.nan]) * (WEEK_S // self.week_bin_s)
        day_bin, week_bin = self._bins(ts_ms)
        self._previous_day_bin = day_bin
        for k, profile, index in ((1, self._day, day_bin), (2, self._week, week_bin)):
            predicted = profile[index]
            if predicted != predicted or (k == 1 and self._own_first(index)):  # first value of this bin
                profile[index] = x
                continue
            error = abs(x - predicted)
            previous_error = errors[k]
            errors[k] = (
                error
                if previous_error is None
                else previous_error + alpha * (error - previous_error)
            )
            profile[index] = predicted + self.season_alpha * (x - predicted)
