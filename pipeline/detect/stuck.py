"""Stuck sensors: a value repeated far longer than its series usually repeats any value.

``StuckRun`` scores one series; ``StuckWatch`` holds the run of every (device, metric) and is
a score-adjusting stage (``pipeline.detect.stages``): it raises a detector's score to the
stuck score when that is higher, cause ``stuck``, with the run's length as the detail of the
alert's reason (``stuck: value 4 unchanged for 3.5 h (...)``, docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.detect.stages import ScoreStage, StageContext
from pipeline.learn.memory import DecayingTopK
from pipeline.learn.periods import DAY_S, HOUR_S, MINUTE_S, MS_PER_S
from pipeline.learn.scores import ratio_score
from pipeline.protocol.causes import Cause


class StuckRun:
    """Stuck-sensor score of one series: the current run of equal values against the usual long runs.

    Why learned long runs: how long a value may repeat depends entirely on the series (a
    door reads 0 for hours, a noisy temperature rarely twice), so the reference is learned:
    the ``top_k``-th longest completed run so far, slowly forgotten (``forget`` per reading),
    at least 1. Not the longest: a sensor that was stuck once would otherwise have taught
    its own stuck run as usual and hide the next one (``top_k`` 3: two earlier stuck
    episodes do not mask a third). The score is ``ratio_score(run / reference)`` once the
    run is longer than the reference: 0.9 at three times the usual long run. Two exemptions
    keep floors and ceilings quiet: a run at the lowest or highest value the series has
    shown (no light at night, no flow between waterings, a closed door) is physics, not a
    stuck sensor. No score during the first ``warmup`` readings; a run still going at the
    end of the warm-up counts as one usual run, and is remembered again at its full length
    when it ends (a node started at midnight sees the first night's stock on a shelf as
    one run from the warm-up to the morning's restock, not as the warm-up's 100 readings).

    Daily long runs: with timestamps (``ts_ms``), a run scored during the hours of the day
    the longest remembered run lasted (from ``daily_window_s`` before its start to its
    end) is compared with that longest run instead of the ``top_k``-th: a shelf holds its
    stock every night from its last sale to the morning's restock, so the second night is
    as usual as the first, though only one such run is remembered yet. Without timestamps
    nothing changes.

    >>> s = StuckRun(warmup=10)
    >>> for i in range(200):
    ...     s.learn_one(float(i % 7))
    >>> s.score_one(4.0)  # a new value: a run of one
    0.0
    >>> for _ in range(6):
    ...     s.learn_one(4.0)
    >>> s.score_one(4.0) > 0.9  # seven fours in a row: never seen before
    True
    """

    __slots__ = (
        "_counted",
        "_growth",
        "_high",
        "_longest_end",
        "_longest_start",
        "_low",
        "_n",
        "_run",
        "_run_start",
        "_run_start_ms",
        "_memory",
        "_value",
        "daily_window_s",
        "forget",
        "top_k",
        "warmup",
    )

    def __init__(
        self, warmup: int = 100, forget: float = 1e-4, top_k: int = 2, daily_window_s: float = 0.0
    ) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1, got {warmup}")
        if not 0.0 <= forget < 1.0:
            raise ValueError(f"forget must be in [0, 1), got {forget}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if not 0.0 <= daily_window_s <= DAY_S / 2:
            raise ValueError(f"daily_window_s must be in [0, {DAY_S // 2}], got {daily_window_s}")
        self.daily_window_s = daily_window_s
        self.warmup = warmup
        self.forget = forget
        self.top_k = top_k
        self._growth = 1.0 / (1.0 - forget)
        self._value: float | None = None
        self._run = 0
        self._counted = 0.0  # the current run as remembered at the warm-up's end (scaled), or 0
        # The top_k longest completed runs, forgotten at rate ``forget`` per reading; stored
        # at the memory's scale, as is ``_counted``.
        self._memory = DecayingTopK(top_k)
        self._n = 0
        self._low = float("inf")
        self._high = float("-inf")
        # Seconds of the day: when the current run started, when the longest remembered
        # run started and ended (-1: unknown, no timestamps).
        self._run_start = -1.0
        self._run_start_ms = -1  # epoch ms of the current run's first reading (-1: unknown)
        self._longest_start = -1.0
        self._longest_end = -1.0

    def __repr__(self) -> str:
        return (
            f"StuckRun(warmup={self.warmup}, forget={self.forget}, top_k={self.top_k}, "
            f"daily_window_s={self.daily_window_s})"
        )

    @property
    def reference(self) -> float:
        """The usual long run: the ``top_k``-th longest remembered (the shortest while fewer)."""
        return max(1.0, self._memory.kth()) if self._memory.heap else 1.0

    def daily(self, ts_ms: int | None) -> bool:
        """True if ``ts_ms`` falls in the hours of the day the longest remembered run lasted."""
        if ts_ms is None or self._longest_start < 0.0:
            return False
        start = self._longest_start - self.daily_window_s
        # both as seconds after ``start``, modulo a day
        return (ts_ms // MS_PER_S - start) % DAY_S <= (self._longest_end - start) % DAY_S

    def score_one(self, x: float, ts_ms: int | None = None) -> float:
        """Score in [0, 1) of ``x`` (0.0 unless it extends an unusually long run)."""
        if self._n < self.warmup or x != self._value or x <= self._low or x >= self._high:
            return 0.0
        run = self._run + 1
        ref = self.reference
        if run > ref and self.daily(ts_ms):
            ref = self._memory.largest()
        return ratio_score(run / ref) if run > ref else 0.0

    def learn_one(self, x: float, ts_ms: int | None = None) -> None:
        if x != x:
            return
        self._n += 1
        divisor = self._memory.decay(self._growth)
        if divisor:
            self._counted /= divisor
        if x == self._value:
            self._run += 1
        else:
            if self._run:
                if self._counted:  # remembered at the end of the warm-up: now at full length
                    self._forget_one(self._counted)
                self._remember(self._run, ts_ms)
            self._value, self._run, self._counted = x, 1, 0.0
            self._run_start = -1.0 if ts_ms is None else float(ts_ms // MS_PER_S % DAY_S)
            self._run_start_ms = -1 if ts_ms is None else ts_ms
        if self._n == self.warmup and self._run > 1:
            self._remember(self._run)  # a run during the warm-up is usual by definition
            self._counted = self._run * self._memory.scale
        if x < self._low:
            self._low = x
        if x > self._high:
            self._high = x

    def describe(self, ts_ms: int | None = None) -> str:
        """The current run for an alert's reason: how long, in readings and (with ts) time."""
        readings = f"{self._run} readings, usually at most {self.reference:.0f}"
        if ts_ms is None or self._run_start_ms < 0:
            return f"value {self._value:g} repeated: {readings}"
        return f"value {self._value:g} unchanged for {_duration(ts_ms - self._run_start_ms)} ({readings})"

    def _forget_one(self, value: float) -> None:
        """Drop ``value`` (scaled, as stored) from the remembered runs, if it is still there."""
        self._memory.discard_scaled(value)

    def _remember(self, run: int, ended_ms: int | None = None) -> None:
        memory = self._memory
        value = run * memory.scale
        if not memory.heap or value > max(memory.heap):  # the new longest: when in the day
            if ended_ms is None or self._run_start < 0.0:
                self._longest_start = self._longest_end = -1.0
            else:
                self._longest_start = self._run_start
                self._longest_end = float(ended_ms // MS_PER_S % DAY_S)
        memory.add_scaled(value)


class StuckWatch(ScoreStage):
    """The ``StuckRun`` of every (device, metric), made on first sight by ``new_run``; a score stage."""

    def __init__(self, new_run: Callable[[], StuckRun] = StuckRun) -> None:
        self.new_run = new_run
        self.runs: dict[tuple[str, str], StuckRun] = {}

    def adjust_one(self, ctx: StageContext, score: float, cause: Cause) -> tuple[float, Cause]:
        """Score, then learn, the value's run; (the higher score, its cause)."""
        run = self.runs.get(ctx.key)
        if run is None:
            run = self.runs[ctx.key] = self.new_run()
        value, ts_ms = ctx.value, ctx.ts
        stuck = run.score_one(value, ts_ms)
        run.learn_one(value, ts_ms)
        if stuck > score:
            return stuck, Cause.STUCK
        return score, cause

    def describe(self, ctx: StageContext) -> str:
        """The run's length, for the reason: ``value 4 unchanged for 3.5 h (...)``."""
        return self.runs[ctx.key].describe(ctx.ts)


def _duration(ms: int) -> str:
    """``42 s``, ``17 min``, ``3.5 h``: a stuck run's length, readable at a glance."""
    seconds = ms / MS_PER_S
    if seconds < 2 * MINUTE_S:
        return f"{seconds:.0f} s"
    if seconds < 2 * HOUR_S:
        return f"{seconds / MINUTE_S:.0f} min"
    return f"{seconds / HOUR_S:.1f} h"
