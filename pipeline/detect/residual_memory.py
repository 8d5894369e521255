"""How a residual detector turns a residual into a ratio: its memory of large residuals.

``SeasonalResidualDetector`` owns one of these as a component (composition, not overriding):

* ``ResidualMemory``: the ``top_k`` largest residuals, forgotten per reading; the ratio is
  the residual over the ``top_k``-th largest (``SeasonalResidualDetector``, NAB).
* ``EdgeResidualMemory``: the edge's (``EdgeResidualDetector``): rises and drops remembered
  apart, a resolution floor, young-memory calibration, bounded teaching, and forgetting by
  event time. Why each: ``pipeline/detect/edge_residual.py``.

The detector calls, per reading: ``observe`` at the start of learning (returns how many
reference intervals the reading stands for), ``reference(rise)`` and ``calibrate(ratio)``
when it scores, ``remember(residual, rise)`` when it learns; ``warm_start`` from a prior.
"""

from __future__ import annotations

import functools
import heapq
import math
from array import array

from pipeline.learn.memory import DecayingTopK
from pipeline.learn.periods import DAY_S, MS_PER_S
from pipeline.learn.sync_stats import PRIOR_EFFECTIVE_N

_TABLE_MAX = 1 << 17  # longest divisor table kept (1 MB of doubles)
MAX_STEPS_PER_READING = 1440.0  # a gap forgets at most a day of reference intervals at once
FIRST_DAY_MAX_RATIO = 7.0  # score 0.98: below the default critical_score (0.99), WARNING at most
USUAL_ALPHA = 0.05  # weight of the newest gap in a series' usual reporting interval


class ResidualMemory:
    """The ``top_k`` largest residuals, forgotten at rate ``forget`` per reading; unsigned."""

    __slots__ = ("_growth", "rises", "signed")

    def __init__(self, top_k: int, forget: float) -> None:
        self._growth = 1.0 / (1.0 - forget)
        self.rises = DecayingTopK(top_k)  # every residual (with ``signed``: the rises)
        self.signed = False

    def observe(self, x: float, previous: float | None, ts_ms: int | None) -> float:
        """A reading is about to be learned: the readings it stands for (always 1 here)."""
        return 1.0

    def reference(self, rise: bool) -> float:
        """The residual a ratio of 1 stands for (0.0: none remembered)."""
        memory = self.rises
        return memory.heap[0] / memory.scale if memory.heap else 0.0

    def calibrate(self, ratio: float) -> float:
        """The ratio after any correction for a young memory (none here)."""
        return ratio

    def unchanged(self) -> bool:
        """True while the series has never changed between two readings (never, here: NAB as it was)."""
        return False

    def covered(self) -> bool:
        """True once every time of day has been seen (always, for a memory counted in readings)."""
        return True

    def remember(self, residual: float, rise: bool) -> None:
        memory = self.rises
        memory.decay(self._growth)
        memory.add(residual)

    def warm_start(self, residuals: list[float]) -> None:
        """Start from a kind's residuals (at scale 1), standing for many readings."""
        self.rises.reset(residuals)


@functools.lru_cache(maxsize=8)
def _young_table(forget: float, top_k: int) -> array[float]:
    """``young_divisor`` for every memory size below the horizon, computed once per setting."""
    horizon = min(math.ceil(1.0 / forget), _TABLE_MAX)
    return array("d", (_young_divisor(n, forget, top_k) for n in range(horizon)))


def _young_divisor(n: int, forget: float, top_k: int) -> float:
    mature = math.log(1.0 / (forget * top_k))
    young = math.log(max(n, math.e * top_k) / top_k)
    return max(1.0, mature / young)


def _readings_divisor(readings: int, forget_per_reading: float, top_k: int) -> float:
    """``young_divisor`` with the horizon in readings at the series' own rate.

    Why readings, not reference intervals: the ``top_k``-th largest of ``n`` residuals is the
    ``1 - top_k/n`` quantile of the *readings* remembered: ten hours at 1 Hz are 36,000
    residuals (a high quantile already), at 15 minutes forty. Counting minutes (600 either
    way) over-tempered 1 Hz and under-tempered 15-minute series (docs/detection.md, eighth round).
    """
    horizon = 1.0 / forget_per_reading
    return max(1.0, math.log(horizon / top_k) / math.log(max(readings, math.e * top_k) / top_k))


def young_divisor(n: int, forget: float, top_k: int) -> float:
    """``log(H / k) / log(n / k)``, at least 1: how much a memory of ``n`` readings understates its horizon's quantile.

    ``H = 1 / forget`` (the memory's horizon), ``k = top_k``, ``n`` at least ``e * k``.
    Read from a table (the detector asks once per reading while its memory is young).

    >>> round(young_divisor(50, 1e-4, 8), 2), round(young_divisor(1440, 1e-4, 8), 2), young_divisor(10_000, 1e-4, 8)
    (3.89, 1.37, 1.0)
    """
    if forget <= 0.0:
        return 1.0
    table = _young_table(forget, top_k)
    return table[n] if n < len(table) else _young_divisor(n, forget, top_k)


class EdgeResidualMemory(ResidualMemory):
    """Rises and drops apart, resolution floor, young calibration, bounded teaching, event time.

    Parameters are ``EdgeResidualDetector``'s of the same names.
    """

    __slots__ = (
        "_covered",
        "_growth_steps",
        "_last_ts",
        "_pending",
        "_pending_steps",
        "_quantum",
        "_rank",
        "_readings",
        "_usual_steps",
        "_steps",
        "clamp_after",
        "drops",
        "forget",
        "memory_clamp",
        "memory_n",
        "reference_interval_s",
        "resolution_floor",
        "top_k",
        "young_calibration",
    )

    def __init__(
        self,
        top_k: int,
        forget: float,
        signed: bool,
        resolution_floor: float,
        young_calibration: bool,
        memory_clamp: float,
        clamp_after: int,
        reference_interval_s: float | None,
    ) -> None:
        super().__init__(top_k, forget)
        self.top_k, self.forget = top_k, forget
        self.signed = signed
        self.resolution_floor = resolution_floor
        self.young_calibration = young_calibration
        self.memory_clamp = memory_clamp
        self.clamp_after = clamp_after
        self.reference_interval_s = reference_interval_s
        # With ``signed``, ``rises`` holds the rises and ``drops`` the drops; both decay alike,
        # so their scales stay equal.
        self.drops = DecayingTopK(top_k)
        self._quantum = math.inf  # the smallest non-zero change between two readings
        self.memory_n = 0.0  # readings the memory stands for (counted up to the horizon)
        self._covered = False  # a whole day remembered (or a prior's): see ``covered``
        # Time-based memory: with ``reference_interval_s``, a reading forgets and counts as
        # much as the event time since the last one, in reference intervals.
        self._last_ts: int | None = None
        self._steps = 1.0
        self._growth_steps = (1.0, self._growth)  # (steps, growth**steps) last computed
        # The usual reference intervals per reading, and which largest residual is the
        # reference at that rate (``rank``: top_k at one reading per reference interval or
        # faster, fewer at slower rates; see ``reference``).
        self._usual_steps = 0.0
        self._rank = top_k
        self._readings = 0  # residuals remembered while young (-1: started from a prior)
        # Faster than one reading per reference interval, the memory learns each interval's
        # largest rise and largest drop, not every reading (see ``remember``).
        self._pending = [-1.0, -1.0]  # largest rise, largest drop of the interval so far (-1: none)
        self._pending_steps = 0.0  # reference intervals the pending residuals stand for

    def observe(self, x: float, previous: float | None, ts_ms: int | None) -> float:
        if previous is not None and x == x:
            change = abs(x - previous)
            if 0.0 < change < self._quantum:
                self._quantum = change
        if self.reference_interval_s is not None and ts_ms is not None:
            last, self._last_ts = self._last_ts, ts_ms
            if last is not None:
                elapsed_s = (ts_ms - last) / MS_PER_S
                steps = self._steps = min(max(elapsed_s / self.reference_interval_s, 0.0), MAX_STEPS_PER_READING)
                usual = self._usual_steps = steps if not self._usual_steps else self._usual_steps + USUAL_ALPHA * (steps - self._usual_steps)
                if usual > 1.0:
                    self._rank = max(1, min(self.top_k, round(self.top_k / math.sqrt(usual))))
                else:
                    self._rank = self.top_k
        return self._steps

    def unchanged(self) -> bool:
        """True while no two readings have differed: a first change is one resolution step, not an anomaly."""
        return self._quantum == math.inf

    def covered(self) -> bool:
        """True once the memory stands for a whole day of event time (or a kind's prior): every
        time of day has been seen before. Counted in readings (no reference interval): always."""
        if self._covered:
            return True
        if self.reference_interval_s is None or self.memory_n * self.reference_interval_s >= DAY_S:
            self._covered = True
        return self._covered

    def reference(self, rise: bool) -> float:
        if not self.signed:
            return super().reference(rise)
        rises, drops = self.rises, self.drops
        side = rises.heap if rise else drops.heap
        top_k = self.top_k
        if side and not self.covered():  # a first day: against the largest, not the top_k-th
            reference = max(side)
        elif len(side) >= top_k:
            rank = self._rank
            reference = side[0] if rank == top_k else heapq.nlargest(rank, side)[-1]
        else:  # a young side: both memories together, unsigned
            both = rises.heap + drops.heap
            reference = heapq.nlargest(top_k, both)[-1] if len(both) >= top_k else min(both, default=0.0)
        reference /= rises.scale
        if self._quantum < math.inf:
            reference = max(reference, self.resolution_floor * self._quantum)
        return reference

    def calibrate(self, ratio: float) -> float:
        """Divide the ratio by ``young_divisor`` while the memory is younger than its horizon;
        on a first day (not ``covered``) at most ``FIRST_DAY_MAX_RATIO``: a series that has not
        seen a whole day cannot be sure enough for a CRITICAL alert (docs/detection.md, severity)."""
        if self.young_calibration and self.memory_n * self.forget < 1.0:
            if self._usual_steps > 0.0 and self._readings >= 0:  # timed: the quantile of the readings remembered so far
                ratio /= _readings_divisor(self._readings, self.forget * self._usual_steps, self.top_k)
            else:
                ratio /= young_divisor(int(self.memory_n), self.forget, self.top_k)
            if not self._covered and not self.covered():
                ratio = min(ratio, FIRST_DAY_MAX_RATIO)
        return ratio

    def remember(self, residual: float, rise: bool) -> None:
        """Keep the top_k rises and the top_k drops, forgotten at rate ``forget`` per reference interval.

        Once the memory stands for ``clamp_after`` readings, a residual counts for at most
        ``memory_clamp`` times its side's reference (bounded teaching).
        """
        steps = self._steps
        if self.memory_n * self.forget < 1.0:
            self.memory_n += steps
            if self._readings >= 0:
                self._readings += 1
        if not self.signed:
            super().remember(self._clamped(residual, self.rises), rise)  # unsigned: one reading, one step
            return
        if steps != self._growth_steps[0]:  # a steady rate computes its power once
            self._growth_steps = (steps, self._growth**steps)
        growth = self._growth_steps[1]
        self.rises.decay(growth)
        self.drops.decay(growth)
        if steps < 1.0 and self.memory_n >= self.clamp_after:  # bounded, faster than the interval
            self._learn_interval(residual, rise, steps)
            return
        side = self.rises if rise else self.drops
        side.add(self._clamped(residual, side))

    def _clamped(self, residual: float, side: DecayingTopK) -> float:
        """Bounded teaching: at most ``memory_clamp`` times the side's reference, once mature."""
        if self.memory_n >= self.clamp_after and len(side) >= self.top_k:
            return min(residual, self.memory_clamp * side.heap[0] / side.scale)
        return residual

    def _learn_interval(self, residual: float, rise: bool, steps: float) -> None:
        """Keep the interval's largest rise and drop; remember them once it is over.

        Why: bounded teaching lets each remembered residual raise the memory by at most
        ``memory_clamp``, so it bounds what an anomaly teaches *per residual*. At 1 Hz a
        15-minute noise burst is 900 residuals, enough to teach the memory the burst's own
        size (a second burst on a later day then scored 0.3-0.6: missed; the level shift
        after it scored 0). Learning one residual per reference interval (the largest: the
        memory holds large residuals) teaches what a one-a-minute series learns from the
        same minutes, at any faster rate (docs/detection.md, ninth round). Only once teaching
        is bounded (``clamp_after``): a young memory learns every reading, so that a new regime
        (a valve's first opening, a node's first minute) is known from its second reading.
        """
        pending = self._pending
        i = 0 if rise else 1
        if residual > pending[i]:
            pending[i] = residual
        self._pending_steps += steps
        if self._pending_steps < 1.0:
            return
        self._pending_steps -= 1.0  # the remainder: a device a little faster than the interval commits nearly every reading
        for k, side in ((0, self.rises), (1, self.drops)):
            if pending[k] >= 0.0:
                side.add(self._clamped(pending[k], side))
                pending[k] = -1.0

    def warm_start(self, residuals: list[float]) -> None:
        """The kind's residuals stand for rises and drops alike, and for ``PRIOR_EFFECTIVE_N`` readings."""
        super().warm_start(residuals)
        self.drops.reset(list(self.rises.heap))
        self.memory_n = PRIOR_EFFECTIVE_N
        # Not ``covered`` yet: the prior stands for PRIOR_EFFECTIVE_N reference intervals of the
        # day (about 17 hours at the edge's minute), the series' own readings for the rest. Until
        # then the series is on a first day: its largest remembered residual is the reference
        # and it raises WARNING at most (a kind's residuals are not this device's). Newcomer
        # scenario with the built-in priors: precision 0.64 -> 0.81 (docs/detection.md, ninth round).
        self._readings = -1  # a prior stands for its minutes, not for readings: tempered by memory_n
