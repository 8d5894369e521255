"""Per-reading detection at the edge: every metric's anomaly score, and the silence of devices.

Three small stages, no I/O, time passed in:

* ``StuckRun`` (one per device and metric): a value repeated far longer than this series
  normally repeats any value is a stuck sensor.
* ``SilenceWatch`` (one per node): a device silent for far longer than its usual interval
  is a dropout. It needs a clock: ``learn_one(device, ts)`` per reading, ``due(now)`` now
  and then returns the devices that have just gone silent.
* ``StuckWatch`` holds the ``StuckRun`` of every series and turns a detector's score into
  (score, cause): the higher of the detector's and the stuck score, and which one it was.

``ReadingScorer.score_one`` runs, for every metric of a reading, the detector, then
``StuckWatch.adjust_one``, ``IrrigationZones.adjust_one`` and ``SwitchContext.adjust_one``
(then ``SwitchContext.learn_one`` once per reading). ``EdgeNode.process`` calls it and
feeds each (score, cause) to ``AlertPolicy.update_one``; the quality bench
(``pipeline.bench.quality``) does the same, so it measures what the node does.
``EdgeNode`` also checks ``dropout_alerts`` once a second and every 15 s of event time.

Causes name why a score is high; they become the ``reason`` of an alert (docs/protocol.md):
``anomaly`` (the value is unusual), ``stuck``, ``dropout`` (from ``SilenceWatch``), and
``leak`` (a soil probe soaking while its zone's valve leaks: ``IrrigationZones``,
``pipeline/edge/zones.py``, the one cross-device stage);
``relation`` only from ``ReadingScorer(linked=...)`` (the multivariate view, a bench
experiment that is not in the node path: docs/detection.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.edge.alert import AlertPolicy
from pipeline.edge.detect import DAY_S, Detector
from pipeline.edge.stages import Point
from pipeline.protocol import Alert, Reading

if TYPE_CHECKING:
    from pipeline.edge.model import DetectorPrior
    from pipeline.edge.multivariate import LinkedMetrics
    from pipeline.edge.switching import SwitchContext
    from pipeline.edge.zones import IrrigationZones

ANOMALY = "anomaly"
STUCK = "stuck"
RELATION = "relation"  # linked metrics of a device no longer move together (LinkedMetrics)
DROPOUT = "dropout"
DEVICE_METRIC = "_device"  # the metric of a device-level alert (dropout): a valid id, reserved


class Cause(str):
    """A cause that carries a readable detail for the alert's reason.

    It is its name as a string (``Cause(STUCK, "...") == STUCK``), so code that compares
    or counts causes is unchanged; ``AlertPolicy`` puts ``detail`` in the reason.
    """

    detail: str

    def __new__(cls, name: str, detail: str = "") -> Cause:
        cause = super().__new__(cls, name)
        cause.detail = detail
        return cause


def ratio_score(ratio: float) -> float:
    """The detectors' score scale: ``r**2 / (1 + r**2)``; 0.5 at r = 1, 0.9 at r = 3.

    >>> ratio_score(1.0), ratio_score(3.0)
    (0.5, 0.9)
    """
    return ratio * ratio / (1.0 + ratio * ratio)


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
        "_scale",
        "_top",
        "_value",
        "daily_window_s",
        "forget",
        "top_k",
        "warmup",
    )

    _RENORMALISE = 1e150

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
        # The top_k longest completed runs, a min-heap stored multiplied by _scale (which
        # grows by 1/(1 - forget) per reading) so that forgetting costs nothing per reading.
        self._top: list[float] = []
        self._scale = 1.0
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
        return max(1.0, self._top[0] / self._scale) if self._top else 1.0

    def daily(self, ts_ms: int | None) -> bool:
        """True if ``ts_ms`` falls in the hours of the day the longest remembered run lasted."""
        if ts_ms is None or self._longest_start < 0.0:
            return False
        start = self._longest_start - self.daily_window_s
        # both as seconds after ``start``, modulo a day
        return (ts_ms // 1000 - start) % DAY_S <= (self._longest_end - start) % DAY_S

    def score_one(self, x: float, ts_ms: int | None = None) -> float:
        """Score in [0, 1) of ``x`` (0.0 unless it extends an unusually long run)."""
        if self._n < self.warmup or x != self._value or x <= self._low or x >= self._high:
            return 0.0
        run = self._run + 1
        ref = self.reference
        if run > ref and self.daily(ts_ms):
            ref = max(self._top) / self._scale
        return ratio_score(run / ref) if run > ref else 0.0

    def learn_one(self, x: float, ts_ms: int | None = None) -> None:
        if x != x:
            return
        self._n += 1
        self._scale *= self._growth
        if self._scale > self._RENORMALISE:
            self._top = [v / self._scale for v in self._top]
            self._counted /= self._scale
            self._scale = 1.0
        if x == self._value:
            self._run += 1
        else:
            if self._run:
                if self._counted:  # remembered at the end of the warm-up: now at full length
                    self._forget_one(self._counted)
                self._remember(self._run, ts_ms)
            self._value, self._run, self._counted = x, 1, 0.0
            self._run_start = -1.0 if ts_ms is None else float(ts_ms // 1000 % DAY_S)
            self._run_start_ms = -1 if ts_ms is None else ts_ms
        if self._n == self.warmup and self._run > 1:
            self._remember(self._run)  # a run during the warm-up is usual by definition
            self._counted = self._run * self._scale
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
        for i, v in enumerate(self._top):
            if abs(v - value) <= 1e-9 * value:
                self._top[i] = self._top[-1]
                self._top.pop()
                heapq.heapify(self._top)
                return

    def _remember(self, run: int, ended_ms: int | None = None) -> None:
        value = run * self._scale
        if not self._top or value > max(self._top):  # the new longest: when in the day
            if ended_ms is None or self._run_start < 0.0:
                self._longest_start = self._longest_end = -1.0
            else:
                self._longest_start = self._run_start
                self._longest_end = float(ended_ms // 1000 % DAY_S)
        if len(self._top) < self.top_k:
            heapq.heappush(self._top, value)
        elif value > self._top[0]:
            heapq.heapreplace(self._top, value)


class StuckWatch:
    """The ``StuckRun`` of every (device, metric), made on first sight by ``new_run``."""

    def __init__(self, new_run: Callable[[], StuckRun] = StuckRun) -> None:
        self.new_run = new_run
        self.runs: dict[tuple[str, str], StuckRun] = {}

    def adjust_one(
        self, key: tuple[str, str], value: float, score: float, ts_ms: int | None = None
    ) -> tuple[float, str]:
        """Score, then learn, ``value``'s run (at ``ts_ms``, epoch ms, if known); (the higher score, its cause)."""
        run = self.runs.get(key)
        if run is None:
            run = self.runs[key] = self.new_run()
        stuck = run.score_one(value, ts_ms)
        run.learn_one(value, ts_ms)
        if stuck > score:
            return stuck, Cause(STUCK, run.describe(ts_ms))
        return score, ANOMALY


def _duration(ms: int) -> str:
    """``42 s``, ``17 min``, ``3.5 h``: a stuck run's length, readable at a glance."""
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True, slots=True)
class Silence:
    """A device that has gone silent: since ``last`` (its newest ts), for ``silent_ms``."""

    device: str
    kind: str
    last: int
    silent_ms: int
    usual_ms: float


@dataclass(slots=True)
class _Device:
    last: int
    kind: str
    gap: float = 0.0  # exponentially weighted mean interval, ms
    gaps: int = 0
    silent: bool = False


class SilenceWatch:
    """Dropout detection: which devices have been silent far longer than their usual interval.

    ``learn_one(device, ts)`` at every reading, with the reading's own timestamp; it
    returns True when the device was reported silent and is heard again (its dropout alert
    can be cleared). ``due(now)`` returns each device that has just gone silent, once per
    silence: silent means no reading for more than ``factor`` usual intervals and at least
    ``min_silence_ms``. The usual interval is an exponentially weighted mean of the gaps
    (weight ``alpha``); a device is watched after ``min_gaps`` gaps. ``due`` scans every
    device: call it about once a second, not per reading.

    Time is event time: the node passes ``site_time()`` as ``now``, so a replayed journal,
    a simulation faster than the wall clock or a late batch cannot fake a silence; a whole
    site going quiet is the node's health's business, not a device alert. ``site_time()``
    is a high quantile of the devices' newest timestamps, not the newest of all: one device
    whose clock runs a minute ahead must not make every other device look silent.

    >>> w = SilenceWatch(factor=3.0, min_gaps=5, min_silence_ms=0)
    >>> for t in range(0, 600_001, 60_000):
    ...     _ = w.learn_one("a", t)
    >>> w.due(700_000), [s.silent_ms for s in w.due(781_000)], w.due(900_000)
    ([], [181000], [])
    >>> w.learn_one("a", 960_000)
    True
    """

    def __init__(
        self, factor: float = 3.0, min_gaps: int = 10, min_silence_ms: int = 30_000, alpha: float = 0.1
    ) -> None:
        if factor <= 1.0:
            raise ValueError(f"factor must be above 1, got {factor}")
        if min_gaps < 1 or min_silence_ms < 0 or not 0.0 < alpha <= 1.0:
            raise ValueError("need min_gaps >= 1, min_silence_ms >= 0 and alpha in (0, 1]")
        self.factor = factor
        self.min_gaps = min_gaps
        self.min_silence_ms = min_silence_ms
        self.alpha = alpha
        self._devices: dict[str, _Device] = {}
        self.latest = -(2**62)  # newest timestamp learned
        self.quantile = 0.75  # of the devices' newest timestamps: the site's event time

    def __repr__(self) -> str:
        return (
            f"SilenceWatch(factor={self.factor}, min_gaps={self.min_gaps}, "
            f"min_silence_ms={self.min_silence_ms}, alpha={self.alpha})"
        )

    def learn_one(self, device: str, ts: int, kind: str = "") -> bool:
        """Record a reading; True if the device had been reported silent (it is back)."""
        if ts > self.latest:
            self.latest = ts
        d = self._devices.get(device)
        if d is None:
            self._devices[device] = _Device(ts, kind)
            return False
        gap = ts - d.last
        if gap <= 0:
            return False  # out of order or a repeat: no news about silence
        back = d.silent
        d.silent = False
        d.last = ts
        if back:
            return True  # the silence itself is not a usual gap
        d.gap = gap if d.gaps == 0 else d.gap + self.alpha * (gap - d.gap)
        d.gaps += 1
        return False

    def site_time(self) -> int:
        """The site's event time: robust to up to a quarter of devices with clocks ahead."""
        if not self._devices:
            return self.latest
        lasts = sorted(d.last for d in self._devices.values())
        return lasts[round(self.quantile * (len(lasts) - 1))]

    def due(self, now: int) -> list[Silence]:
        """Devices that went silent since the last call."""
        found = []
        for device, d in self._devices.items():
            if d.silent or d.gaps < self.min_gaps:
                continue
            silent = now - d.last
            if silent > self.factor * d.gap and silent >= self.min_silence_ms:
                d.silent = True
                found.append(Silence(device, d.kind, d.last, silent, d.gap))
        return found


def dropout_alerts(policy: AlertPolicy, watch: SilenceWatch) -> list[Alert]:
    """Raise a ``dropout`` alert (metric ``_device``, value: seconds silent) per newly silent device."""
    now = watch.site_time()
    alerts = []
    for s in watch.due(now):
        point = Point(s.device, s.kind, DEVICE_METRIC, now, 0, s.silent_ms / 1000, 1.0)
        reason = f"{DROPOUT}: silent for {s.silent_ms / 1000:.0f} s, usual interval {s.usual_ms / 1000:.1f} s"
        alert = policy.open_one(point, reason)
        if alert is not None:
            alerts.append(alert)
    return alerts


def heard_again(policy: AlertPolicy, reading: Reading) -> Alert | None:
    """Clear a device's dropout alert: it has published ``reading``."""
    point = Point(reading.device, reading.kind, DEVICE_METRIC, reading.ts, reading.seq, 0.0, 0.0)
    return policy.close_one(point, f"{DROPOUT}: heard again")


class ReadingScorer:
    """All metrics of one reading: (metric, value, score, cause), each scored before it is learned.

    ``new_detector()`` makes the residual detector of a new (device, metric), kept in
    ``detectors`` (a dict the caller may share, e.g. to ship model deltas). The score of a
    metric is the higher of the detector's score and the ``StuckWatch`` score (when given);
    the cause says which (``anomaly`` or ``stuck``). ``prior(kind, metric)``, when given,
    is the kind's merged model: a new detector warm-starts from it when it is not None
    (as ``EdgeNode`` does with model sync). ``linked``, when given, adds the multivariate
    view (``pipeline.edge.multivariate``): a metric's score is raised to its relation score,
    cause ``relation``, when that is higher. ``zones``, when given, learns the site's
    irrigation zones from every reading and raises a probe's moisture score to its soak
    score, cause ``leak``; ``switches`` caps the score of a switch-on that the device's other
    metrics explain (``SwitchContext``). ``EdgeNode`` runs both.
    """

    def __init__(
        self,
        new_detector: Callable[[], Detector],
        detectors: dict[tuple[str, str], Detector] | None = None,
        stuck: StuckWatch | None = None,
        prior: Callable[[str, str], DetectorPrior | None] | None = None,
        linked: LinkedMetrics | None = None,
        zones: IrrigationZones | None = None,
        switches: SwitchContext | None = None,
    ) -> None:
        self.zones = zones
        self.switches = switches
        self.new_detector = new_detector
        self.linked = linked
        self.detectors: dict[tuple[str, str], Detector] = {} if detectors is None else detectors
        self.stuck = stuck
        self.prior = prior

    def score_one(self, reading: Reading) -> list[tuple[str, float, float, str]]:
        """Score, then learn, every metric of ``reading``."""
        out = []
        ts = reading.ts
        relation: dict[str, float] = {}
        if self.linked is not None:
            relation = self.linked.score_one(reading)
            self.linked.learn_one(reading)
        for metric, value in reading.metrics.items():
            key = (reading.device, metric)
            detector = self.detectors.get(key)
            if detector is None:
                detector = self.detectors[key] = self.new_detector()
                prior = None if self.prior is None else self.prior(reading.kind, metric)
                warm_start = getattr(detector, "warm_start", None)
                if prior is not None and warm_start is not None:
                    warm_start(prior)
            score = detector.score_one(value, ts)
            detector.learn_one(value, ts)
            cause = ANOMALY
            if self.stuck is not None:
                score, cause = self.stuck.adjust_one(key, value, score, ts)
            if self.zones is not None:
                score, cause = self.zones.adjust_one(reading.device, reading.kind, metric, value, ts, score, cause)
            if self.switches is not None:
                score = self.switches.adjust_one(reading.device, reading.kind, reading.metrics, metric, score)
            linked = relation.get(metric, 0.0) if relation else 0.0
            if linked > score:
                score, cause = linked, RELATION
            out.append((metric, value, score, cause))
        if self.switches is not None:
            self.switches.learn_one(reading.device, reading.kind, reading.metrics)
        return out
