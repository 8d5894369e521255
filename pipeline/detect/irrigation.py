"""Irrigation zones: which soil probes each valve waters, learned, and the soak of a leak.

Why a cross-device stage: a leaking valve wets the soil of its zone, but on a probe's own
series the extra water (a rise of 0.9 to 4.5 % moisture per hour) is no larger than the
weather's day-to-day change of its drying: no per-series detector separated it
(docs/detection.md, fourth round). What the node does know is *when* the zone's valve
flows where it never flows, and which probes usually respond to that valve. A probe whose
moisture then climbs above the trend it had when the valve opened is soaking.

Which kinds are valves and probes is configuration: one stage per ``waters`` link of
``[[links]]`` (``pipeline.detect.detection.RELATIONS``), the built-in ``irrigation_valve.flow``
waters ``soil_probe.moisture`` by default, so a farm whose valves are a kind of its own keeps
its leak alerts. What is learned, online and per site, with no configuration of zones:

* **The valve's usual openings**: the times of day (5-minute buckets) at which it opened
  without an anomaly score on an earlier day (on its first day, every opening). An opening within ``usual_window_s`` of one is
  scheduled watering.
* **Links**: when a probe's moisture starts to climb steeply (its rise over the last
  ``slope_window`` readings reaches ``link_ratio`` noise references), it is watered by
  every valve that opened without a flag in the ``link_window_s`` before. Zones watered at
  the same minutes link to each other's valves too; the soak test below keeps that harmless
  (a probe that is not wetted does not climb). The probe side finds the links so that the
  cost stays with the few valves that just opened: a site of 2,000 valves and 6,000 probes
  keeps no per-pair state.

What is scored (``adjust_one``, once per metric of a reading, after the detector):

* **A leak's soak**: while a mature valve (a day of history) flows from an opening that is
  not usual, at less than ``leak_fraction`` of its usual open flow (a leak through a closed
  valve, not a watering at a new time), and its own detector has scored the flow at least
  ``valve_score``, each linked probe's moisture is compared with the straight line through
  its smoothed level and slope at the opening (``excess``), in units of the probe's noise
  (``noise_ratio`` times the mean absolute deviation of readings from the smoothed level):
  score ``ratio_score(excess / reference)``, 0.8 at twice the reference, cause ``leak``.
  Scoring stops ``horizon_s`` after the opening, at the valve's next opening, or when a
  scheduled watering of the probe begins; the alert then clears.
* **A valve's own leak**: a mature valve's unscheduled opening that has flowed for
  ``LEAK_MIN_S`` at less than ``leak_fraction`` of its usual open flow scores
  ``valve_score`` (the raise score) with cause ``leak``, whatever its detector said (at 15
  minutes a 10 L/min leak is far below the openings its residual memory holds), and its
  probes' soak is scored from then on.
* **Scheduled watering**: a mature valve's reading that opens, flows (within
  ``flow_tolerance`` of its usual open flow) or closes a usual opening scores at most
  ``scheduled_cap``. Why: a young valve's residual memory holds the top few of the ~50
  noisy readings of a day's watering, so ordinary flow noise read as twice the usual
  largest (21 of the 43 false alarms of the full quality run; docs/detection.md).

Measured on the simulators (``edgepipe bench --quality``, full plan): soil-probe soaks
found 0 -> 39 of 50, false alarms 43 -> 30, F1 0.865 -> 0.898 (docs/detection.md, fifth
round).
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field

from pipeline.detect.stages import ScoreStage, StageContext
from pipeline.learn.periods import DAY_MS, MS_PER_S
from pipeline.learn.scores import ratio_score
from pipeline.protocol.causes import Cause

_BUCKET_MS = 300_000  # usual openings, by 5-minute bucket of the day
NOISE_CLIP_RATIO = 4.0  # a probe's deviation teaches its noise at most this many noise levels
OPEN_FLOW_READINGS = 100  # a valve's open flow: the mean of its first ones, then a moving mean of about this many
WARM_NOISE_READINGS = 10  # a probe's noise is a plain mean over its first readings, then smoothed
LEAK_MIN_S = 60.0  # a valve's partial flow at an unusual time is a leak once it has flowed this long


class _Probe:
    """A soil probe's smoothed moisture, its noise, and its recent levels (a ring)."""

    __slots__ = ("level", "levels", "n", "noise", "rising", "times", "ts", "watered_at")

    def __init__(self, ts: int, level: float, window: int) -> None:
        self.ts = ts
        self.level = level
        self.noise = 0.0  # mean absolute deviation of readings from the smoothed level
        self.n = 1
        self.rising = False  # its rise over the ring reached the link level at the last reading
        self.watered_at = -1  # the last scheduled opening of a valve that waters it
        self.levels = array("d", [level]) * window
        self.times = array("q", [ts]) * window

    def oldest(self) -> tuple[int, float]:
        """(ts, level) of the oldest reading in the ring: ``window`` readings ago."""
        i = self.n % len(self.levels)
        return self.times[i], self.levels[i]

    def slope(self) -> float:
        """Change of the smoothed level per ms over the ring (0 until it spans any time)."""
        first_ts, first_level = self.oldest()
        return (self.level - first_level) / (self.ts - first_ts) if self.ts > first_ts else 0.0


@dataclass(slots=True)
class _Anchor:
    """A linked probe's smoothed level and trend when a valve opened."""

    ts: int
    level: float
    slope: float
    reference: float


@dataclass(slots=True)
class _Opening:
    """An unscheduled opening of a mature valve: a leak once the valve's detector flags it."""

    valve: str
    ts: int
    leak: bool = False
    anchors: dict[str, _Anchor] = field(default_factory=dict)


@dataclass(slots=True)
class _Valve:
    first_ts: int
    last_ts: int = -1  # its previous reading
    interval_ms: int = 0  # since the one before: what the last reading stands for
    on: bool = False
    usual_now: bool = False  # the current (or last) opening was at a usual time
    open_flow: float = 0.0  # usual flow while open (mean of unflagged full-flow readings), 0: unknown
    open_n: int = 0
    usual: dict[int, int] = field(default_factory=dict)  # bucket of the day -> last day seen
    links: set[str] = field(default_factory=set)
    opening: _Opening | None = None  # the current unscheduled opening, if any


class IrrigationZones(ScoreStage):
    """Soil moisture against the valve that waters it: a leak's soak, scored on the probe.

    Parameters
    ----------
    valve_kind, flow_metric, probe_kind, moisture_metric
        The catalogue's names (docs/protocol.md, device kinds): a link's source and target
        (``[[links]]``); the flow is 0 while the valve is closed.
    valve_score
        The valve's own anomaly score from which an unusual opening is a leak (the alert
        policy's raise score).
    usual_window_s
        An opening this close to a usual one (time of day) is scheduled.
    link_window_s, link_ratio
        A probe whose rise over ``slope_window`` readings starts to reach ``link_ratio``
        noise references is linked to the valves that opened (unflagged) this long before.
    horizon_s
        How long after a leak's opening its linked probes are scored.
    leak_fraction
        A leak flows at less than this share of the valve's usual open flow (which only
        unflagged flows of at least this share teach).
    flow_tolerance, scheduled_cap
        A valve reading of a scheduled watering within this relative distance of its usual
        open flow scores at most ``scheduled_cap`` (below the alert policy's clear score).
    noise_ratio
        The reference of the soak score, in mean absolute deviations of the probe.
    level_alpha, noise_alpha
        Smoothing of each probe's level and noise (per reading).
    slope_window
        The probe's trend is the change of its smoothed level over this many readings. Not
        an exponentially weighted slope: that one still carried the last watering's rise an
        hour later, and extrapolated it over the soak (docs/detection.md, fifth round).
    """

    def __init__(
        self,
        valve_kind: str = "irrigation_valve",
        flow_metric: str = "flow",
        probe_kind: str = "soil_probe",
        moisture_metric: str = "moisture",
        valve_score: float = 0.8,
        usual_window_s: float = 900.0,
        link_window_s: float = 900.0,
        link_ratio: float = 5.0,
        horizon_s: float = 5400.0,
        leak_fraction: float = 0.5,
        flow_tolerance: float = 0.1,
        scheduled_cap: float = 0.3,
        noise_ratio: float = 3.0,
        level_alpha: float = 0.2,
        noise_alpha: float = 0.01,
        slope_window: int = 20,
    ) -> None:
        if slope_window < 2:
            raise ValueError(f"slope_window must be at least 2, got {slope_window}")
        self.valve_kind, self.flow_metric = valve_kind, flow_metric
        self.probe_kind, self.moisture_metric = probe_kind, moisture_metric
        self.valve_score = valve_score
        self.usual_window_ms = int(usual_window_s * MS_PER_S)
        self.link_window_ms = int(link_window_s * MS_PER_S)
        self.link_ratio = link_ratio
        self.horizon_ms = int(horizon_s * MS_PER_S)
        self.leak_fraction = leak_fraction
        self.flow_tolerance = flow_tolerance
        self.scheduled_cap = scheduled_cap
        self.noise_ratio = noise_ratio
        self.level_alpha, self.noise_alpha, self.slope_window = level_alpha, noise_alpha, slope_window
        self._valves: dict[str, _Valve] = {}
        self._probes: dict[str, _Probe] = {}
        self._recent: deque[tuple[int, str]] = deque()  # (ts, valve): unflagged openings, newest last
        self._openings: list[_Opening] = []  # unscheduled openings of mature valves, within the horizon

    def ordered_kinds(self) -> tuple[str, ...]:
        """Valves and probes: a valve's opening anchors its probes, a probe's rise links the
        valves that just opened; both read the other devices' state as of the reading's time."""
        return (self.valve_kind, self.probe_kind)

    # -- per reading ---------------------------------------------------------------------

    def adjust_one(self, ctx: StageContext, score: float, cause: Cause) -> tuple[float, Cause]:
        """The (score, cause) of one metric of a reading after this stage, which then learns it.

        A probe's moisture is raised to its soak score (cause ``leak``) when that is higher; a
        valve's scheduled watering at its usual flow is lowered to ``scheduled_cap`` at most.
        ``score`` is the detector's (and stuck watch's) score; it is what the valve learns.
        """
        device, kind, metric, value, ts = ctx.device, ctx.kind, ctx.metric, ctx.value, ctx.ts
        if kind == self.probe_kind and metric == self.moisture_metric:
            soak = self.score_one(device, kind, metric, value, ts)
            if soak > score:
                score, cause = soak, Cause.LEAK
        elif score > self.scheduled_cap and self.scheduled(device, kind, metric, value, ts):
            self.learn_one(device, kind, metric, value, ts, score)
            return self.scheduled_cap, cause
        self.learn_one(device, kind, metric, value, ts, score)
        if kind == self.valve_kind and metric == self.flow_metric and score < self.valve_score:
            if self._leaking(device, value, ts):
                return self.valve_score, Cause.LEAK  # the raise score: a WARNING
        return score, cause

    def _leaking(self, device: str, flow: float, ts: int) -> bool:
        """True while a mature valve's unscheduled opening has flowed at a leak's rate for
        ``LEAK_MIN_S`` (the reading counts for the interval since the previous one).

        Why here and not only from the valve's detector: at 15 minutes a leak of 10 L/min
        from a closed valve is one rise, far smaller than the day's openings (80-180 L/min)
        that the residual memory holds, so the detector scored it near 0 and 151 of 247 leak
        labels were missed; the stage knows the valve's schedule and its open flow, which is
        what a leak is (docs/detection.md, ninth round).
        """
        valve = self._valves.get(device)
        if valve is None or valve.opening is None or not 0.0 < flow < self.leak_fraction * valve.open_flow:
            return False
        opening = valve.opening
        if ts - opening.ts + valve.interval_ms < LEAK_MIN_S * MS_PER_S:
            return False
        opening.leak = True  # its probes' soak is scored from now on
        return True

    def score_one(self, device: str, kind: str, metric: str, value: float, ts: int) -> float:
        """The soak score of a probe's moisture reading (0 for anything else)."""
        if kind != self.probe_kind or metric != self.moisture_metric or not self._openings:
            return 0.0
        probe = self._probes.get(device)
        if probe is None:
            return 0.0
        level = probe.level + self.level_alpha * (value - probe.level)
        best = 0.0
        for opening in self._openings:
            anchor = opening.anchors.get(device)
            if anchor is None or not opening.leak or ts - opening.ts > self.horizon_ms:
                continue
            if probe.watered_at > anchor.ts:
                continue  # its scheduled watering has begun since: that explains any rise
            excess = level - anchor.level - anchor.slope * (ts - anchor.ts)
            if excess > 0.0 and anchor.reference > 0.0:
                best = max(best, ratio_score(excess / anchor.reference))
        return best

    def scheduled(self, device: str, kind: str, metric: str, value: float, ts: int) -> bool:
        """True if a valve's flow reading is its scheduled watering: opening, flowing or closing as usual."""
        if kind != self.valve_kind or metric != self.flow_metric:
            return False
        valve = self._valves.get(device)
        if valve is None or ts - valve.first_ts < DAY_MS or valve.open_flow <= 0.0:
            return False
        if value <= 0.0:  # closed: usual if it ends a scheduled watering
            return valve.on and valve.usual_now
        usual = valve.usual_now if valve.on else self._usual_at(valve, ts)
        return usual and abs(value - valve.open_flow) <= self.flow_tolerance * valve.open_flow

    def learn_one(self, device: str, kind: str, metric: str, value: float, ts: int, score: float = 0.0) -> None:
        """Learn one metric of a reading; ``score`` is the detector's score of it (valves)."""
        if kind == self.valve_kind and metric == self.flow_metric:
            self._learn_valve(device, value, ts, score)
        elif kind == self.probe_kind and metric == self.moisture_metric:
            self._learn_probe(device, value, ts)

    def links(self, valve: str) -> set[str]:
        """The probes learned to be watered by ``valve``."""
        v = self._valves.get(valve)
        return set() if v is None else set(v.links)

    def watching(self) -> dict[str, set[str]]:
        """The probes watched for a soak now, by valve (unscheduled openings within the horizon)."""
        return {o.valve: set(o.anchors) for o in self._openings}

    def __repr__(self) -> str:
        return f"IrrigationZones(valves={len(self._valves)}, probes={len(self._probes)})"

    # -- valves ----------------------------------------------------------------------------

    def _usual_at(self, valve: _Valve, ts: int) -> bool:
        bucket = (ts % DAY_MS) // _BUCKET_MS
        day = ts // DAY_MS
        span = self.usual_window_ms // _BUCKET_MS
        buckets = DAY_MS // _BUCKET_MS
        return any(valve.usual.get((bucket + j) % buckets, day) < day for j in range(-span, span + 1))

    def _learn_valve(self, device: str, flow: float, ts: int, score: float) -> None:
        valve = self._valves.get(device)
        if valve is None:
            valve = self._valves[device] = _Valve(first_ts=ts)
        if valve.last_ts >= 0:
            valve.interval_ms = ts - valve.last_ts
        valve.last_ts = ts
        on = flow > 0.0
        if on and not valve.on:
            self._open(device, valve, ts, score)
        opening = valve.opening
        if (
            on
            and opening is not None
            and not opening.leak
            and score >= self.valve_score
            and flow < self.leak_fraction * valve.open_flow
        ):
            opening.leak = True
        if on and score < self.valve_score and flow >= self.leak_fraction * valve.open_flow:
            valve.open_n += 1  # partial flows (leaks) do not teach the valve's open flow
            valve.open_flow += (flow - valve.open_flow) / min(valve.open_n, OPEN_FLOW_READINGS)
        valve.on = on

    def _open(self, device: str, valve: _Valve, ts: int, score: float) -> None:
        usual = self._usual_at(valve, ts)
        mature = ts - valve.first_ts >= DAY_MS
        if not mature or score < self.valve_score:  # the first day's openings all teach
            valve.usual[(ts % DAY_MS) // _BUCKET_MS] = ts // DAY_MS
            self._recent.append((ts, device))
        valve.usual_now = usual
        if usual:
            for name in valve.links:
                self._probes[name].watered_at = ts
        if valve.opening is not None:
            self._openings.remove(valve.opening)  # the next opening ends the last one's watch
            valve.opening = None
        if mature and not usual:
            opening = _Opening(device, ts)
            for name in valve.links:
                p = self._probes[name]
                opening.anchors[name] = _Anchor(p.ts, p.level, p.slope(), self.noise_ratio * p.noise)
            valve.opening = opening
            self._openings.append(opening)

    # -- probes ----------------------------------------------------------------------------

    def _learn_probe(self, device: str, value: float, ts: int) -> None:
        probe = self._probes.get(device)
        if probe is None:
            self._probes[device] = _Probe(ts, value, self.slope_window)
            return
        if ts <= probe.ts:
            return
        deviation = abs(value - probe.level)
        if probe.n > 1 and probe.noise > 0.0:
            deviation = min(deviation, NOISE_CLIP_RATIO * probe.noise)  # watering does not teach noise
        probe.noise += (deviation - probe.noise) * (self.noise_alpha if probe.n > WARM_NOISE_READINGS else 1.0 / probe.n)
        probe.level += self.level_alpha * (value - probe.level)
        probe.ts = ts
        i = probe.n % self.slope_window  # the oldest entry, overwritten by the newest
        probe.levels[i], probe.times[i] = probe.level, ts
        probe.n += 1
        self._expire(ts)
        if probe.n <= self.slope_window:
            return
        _, first_level = probe.oldest()
        rising = probe.level - first_level >= self.link_ratio * self.noise_ratio * probe.noise > 0.0
        if rising and not probe.rising:  # a watering reaches it: link the valves that just opened
            for opened, valve in self._recent:
                if opened <= ts:
                    self._valves[valve].links.add(device)
        probe.rising = rising

    def _expire(self, ts: int) -> None:
        recent = self._recent
        while recent and ts - recent[0][0] > self.link_window_ms:
            recent.popleft()
        openings = self._openings
        if openings and ts - openings[0].ts > self.horizon_ms:
            for o in [o for o in openings if ts - o.ts > self.horizon_ms]:
                openings.remove(o)
                if self._valves[o.valve].opening is o:
                    self._valves[o.valve].opening = None
