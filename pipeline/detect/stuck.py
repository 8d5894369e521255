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

STUCK_WARMUP_READINGS = 30  # readings before a run may be stuck ...
STUCK_WARMUP_S = 2 * HOUR_S  # ... and event time: a run needs usual runs to be compared with
STUCK_MIN_READINGS = 3  # a value read twice is a coincidence at any rate
REFERENCE_INTERVAL_S = 60.0  # ``forget`` is per this much event time (tuned at one reading a minute)
MAX_STEPS_PER_READING = 1440.0  # a gap forgets at most a day of reference intervals at once
INTERVAL_ALPHA = 0.05  # weight of the newest gap in the usual reporting interval


class StuckRun:
    """Stuck-sensor score of one series: how long the current value has been held, against the usual long holds.

    Why learned long runs: how long a value may repeat depends entirely on the series (a
    door reads 0 for hours, a noisy temperature rarely twice), so the reference is learned:
    the ``top_k``-th longest completed run so far, slowly forgotten, at least one reporting
    interval. Not the longest: a sensor that was stuck once would otherwise have taught its
    own stuck run as usual and hide the next one (``top_k`` 2: an earlier stuck episode does
    not mask the next). The score is ``ratio_score(held / reference)`` once the run is
    longer than the reference: 0.9 at three times the usual long run. Two exemptions keep
    floors and ceilings quiet: a run at the lowest or highest value the series has shown
    (no light at night, no flow between waterings, a closed door) is physics, not a stuck
    sensor.

    Why event time (with ``ts_ms``): the same sensor reporting at 1 Hz or once per 15
    minutes holds its value for the same time, not the same number of readings. A run's
    length is the time it has held (its first reading to its last, plus one usual reporting
    interval: one reading stands for one interval), memories are forgotten by ``forget`` per
    ``reference_interval_s`` of event time, and the warm-up is both ``warmup`` readings and
    ``warmup_s`` of event time (without timestamps, readings only): a 1 Hz series has not seen a single night after 100
    readings (the first alert of a new user's 1 Hz fleet was a false "stuck" after 100 s),
    a 15-minute one has after 100. A run of fewer than ``min_readings`` readings is never
    stuck: a value read twice by a slow sensor is a coincidence. Without timestamps every
    reading counts one unit of time.

    A run still going at the end of the warm-up counts as one usual run, and is remembered
    again at its full length when it ends (a node started at midnight sees the first
    night's stock on a shelf as one run from the warm-up to the morning's restock).

    Daily long runs: with timestamps, a run scored during the hours of the day the longest
    remembered run lasted (from ``daily_window_s`` before its start to its end) is compared
    with that longest run instead of the ``top_k``-th: a shelf holds its stock every night
    from its last sale to the morning's restock, so the second night is as usual as the
    first, though only one such run is remembered yet.

    >>> s = StuckRun(warmup=10, warmup_s=0)
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
        "_interval",
        "_last_ms",
        "_longest_end",
        "_longest_start",
        "_low",
        "_memory",
        "_n",
        "_ready",
        "_run",
        "_run_start",
        "_run_start_ms",
        "_seen",
        "_value",
        "daily_window_s",
        "forget",
        "min_readings",
        "reference_interval_s",
        "top_k",
        "warmup",
        "warmup_s",
    )

    def __init__(
        self,
        warmup: int = STUCK_WARMUP_READINGS,
        forget: float = 1e-4,
        top_k: int = 2,
        daily_window_s: float = 0.0,
        warmup_s: float = STUCK_WARMUP_S,
        reference_interval_s: float = REFERENCE_INTERVAL_S,
        min_readings: int = STUCK_MIN_READINGS,
    ) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1, got {warmup}")
        if not 0.0 <= forget < 1.0:
            raise ValueError(f"forget must be in [0, 1), got {forget}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if not 0.0 <= daily_window_s <= DAY_S / 2:
            raise ValueError(f"daily_window_s must be in [0, {DAY_S // 2}], got {daily_window_s}")
        if warmup_s < 0.0:
            raise ValueError(f"warmup_s must be at least 0, got {warmup_s}")
        if not reference_interval_s > 0.0:
            raise ValueError(f"reference_interval_s must be positive, got {reference_interval_s}")
        if min_readings < 2:
            raise ValueError(f"min_readings must be at least 2, got {min_readings}")
        self.daily_window_s = daily_window_s
        self.warmup = warmup
        self.warmup_s = warmup_s
        self.forget = forget
        self.top_k = top_k
        self.reference_interval_s = reference_interval_s
        self.min_readings = min_readings
        self._growth = 1.0 / (1.0 - forget)
        self._value: float | None = None
        self._run = 0  # readings in the current run
        self._counted = 0.0  # the current run as remembered at the warm-up's end (scaled), or 0
        # The top_k longest completed runs (seconds; readings without timestamps), forgotten
        # at rate ``forget`` per reference interval; stored at the memory's scale, as is ``_counted``.
        self._memory = DecayingTopK(top_k)
        self._n = 0
        self._seen = 0.0  # event time learned (seconds; readings without timestamps)
        self._ready = False
        self._interval = 0.0  # the usual time between two readings (EW mean; 1 without timestamps)
        self._last_ms = -1  # epoch ms of the last reading learned (-1: none, or no timestamps)
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
            f"StuckRun(warmup={self.warmup}, warmup_s={self.warmup_s}, forget={self.forget}, "
            f"top_k={self.top_k}, daily_window_s={self.daily_window_s})"
        )

    @property
    def reference(self) -> float:
        """The usual long run: the ``top_k``-th longest remembered (the shortest while fewer), at least one interval."""
        floor = max(self._interval, 1e-9) if self._last_ms >= 0 else 1.0
        return max(floor, self._memory.kth()) if self._memory.heap else floor

    def held(self, ts_ms: int | None = None) -> float:
        """How long the current run has held if a reading at ``ts_ms`` extends it (seconds; readings without ts)."""
        if ts_ms is None or self._run_start_ms < 0:
            return float(self._run + 1)
        return (ts_ms - self._run_start_ms) / MS_PER_S + self._interval

    def daily(self, ts_ms: int | None) -> bool:
        """True if ``ts_ms`` falls in the hours of the day the longest remembered run lasted."""
        if ts_ms is None or self._longest_start < 0.0:
            return False
        start = self._longest_start - self.daily_window_s
        # both as seconds after ``start``, modulo a day
        return (ts_ms // MS_PER_S - start) % DAY_S <= (self._longest_end - start) % DAY_S

    def score_one(self, x: float, ts_ms: int | None = None) -> float:
        """Score in [0, 1) of ``x`` (0.0 unless it extends an unusually long run)."""
        if not self._ready or x != self._value or x <= self._low or x >= self._high:
            return 0.0
        if self._run + 1 < self.min_readings:
            return 0.0
        held = self.held(ts_ms)
        ref = self.reference
        if held > ref and (self.daily(ts_ms) or (ts_ms is not None and self._seen < DAY_S)):
            ref = self._memory.largest()  # a usual daily run, or a first day: the longest seen
        return ratio_score(held / ref) if held > ref else 0.0

    def learn_one(self, x: float, ts_ms: int | None = None) -> None:
        if x != x:
            return
        self._n += 1
        elapsed = self._elapsed(ts_ms)
        if ts_ms is not None:
            self._seen += elapsed
        divisor = self._memory.decay(self._growth ** min(elapsed / self._unit(ts_ms), MAX_STEPS_PER_READING))
        if divisor:
            self._counted /= divisor
        if x == self._value:
            self._run += 1
        else:
            if self._run:
                if self._counted:  # remembered at the end of the warm-up: now at full length
                    self._memory.discard_scaled(self._counted)
                self._remember(self._held_until_last(), ts_ms)
            self._value, self._run, self._counted = x, 1, 0.0
            self._run_start = -1.0 if ts_ms is None else float(ts_ms // MS_PER_S % DAY_S)
            self._run_start_ms = -1 if ts_ms is None else ts_ms
        if not self._ready and self._n >= self.warmup and (ts_ms is None or self._seen >= self.warmup_s):
            self._ready = True
            if self._run > 1:  # a run during the warm-up is usual by definition
                held = float(self._run) if ts_ms is None or self._run_start_ms < 0 else self.held(ts_ms)
                self._remember(held)
                self._counted = held * self._memory.scale
        if x < self._low:
            self._low = x
        if x > self._high:
            self._high = x
        if ts_ms is not None:
            self._last_ms = ts_ms

    def _unit(self, ts_ms: int | None) -> float:
        """What one step of forgetting is: the reference interval (s), or one reading."""
        return 1.0 if ts_ms is None else self.reference_interval_s

    def _elapsed(self, ts_ms: int | None) -> float:
        """Event time since the last reading (1 without timestamps); updates the usual interval."""
        if ts_ms is None:
            self._interval = 1.0
            return 1.0
        last = self._last_ms
        if last < 0:
            return 0.0
        elapsed = max(0.0, (ts_ms - last) / MS_PER_S)
        if elapsed > 0.0:
            self._interval = elapsed if not self._interval else self._interval + INTERVAL_ALPHA * (elapsed - self._interval)
        return elapsed

    def _held_until_last(self) -> float:
        """The current run's length up to the last reading learned."""
        if self._run_start_ms < 0 or self._last_ms < 0:
            return float(self._run)
        return (self._last_ms - self._run_start_ms) / MS_PER_S + self._interval

    def describe(self, ts_ms: int | None = None) -> str:
        """The current run for an alert's reason: how long, in readings and (with ts) time."""
        if ts_ms is None or self._run_start_ms < 0:
            return f"value {self._value:g} repeated: {self._run} readings, usually at most {self.reference:.0f}"
        return (
            f"value {self._value:g} unchanged for {_duration(ts_ms - self._run_start_ms)} "
            f"({self._run} readings; usually at most {_duration(round(self.reference * MS_PER_S))})"
        )

    def _remember(self, held: float, ended_ms: int | None = None) -> None:
        memory = self._memory
        value = held * memory.scale
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
