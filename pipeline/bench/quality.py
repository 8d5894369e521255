"""``edgepipe bench --quality``: how good are the edge's alerts, on simulated and on NAB data.

Simulated data (``quality.sim.*``): the fleet simulators run in this process, as fast as
they can, with their ground-truth labels of injected anomalies. Every reading goes through
the node's own detection, made by the node's own ``build`` (``pipeline.detect.detection``:
detectors, stuck runs, irrigation zones, switch contexts, ``SilenceWatch``, ``AlertPolicy``)
with the default ``alert`` settings, and the
**alerts** (raises, what users see), not raw scores, are matched to the labels
(``pipeline.detect.labels``, the rules shared with ``edgepipe demo``):

* an alert of a device inside one of its label windows ``[start, end + grace]`` on a labelled
  metric (a dropout alert, metric ``_device``, matches any) detects that event;
* an event with no such alert is a miss; an alert outside every window is a false alarm;
* precision = detected events / (detected events + false alarms), recall = detected events /
  events, F1 their harmonic mean; the delay of a detected event is the number of the
  device's reading intervals from the window's start to its first alert (0: on the first
  anomalous reading).

Events that start before ``warmup`` readings of their device are not counted (no detector
alerts then), nor are alerts before that time.

The first day (``quality.sim.*_first_day``, ``*_first_day_warm``): the same fleet for one
day, counted from the 10th reading, once cold (every detector starts from nothing, as
above) and once warm-started (``warm_start``) from kind priors learned on another fleet
(another seed, 30 devices, one day earlier), as model sync does for a node's new devices.

NAB (``quality.nab.*``): ``pipeline.bench.nab.detect_and_score`` on the NAB folder.

Beside each figure, the same run with the z-score baseline (``ZScoreDetector``, no stuck or
dropout stages, same alert policy).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import msgspec

from pipeline.config import AlertSettings
from pipeline.detect.base import ValueDetector
from pipeline.detect.detection import ALL_STAGES, Detection, build
from pipeline.detect.labels import Event, Raised, match_alerts
from pipeline.detect.registry import DETECTORS, default_detector
from pipeline.detect.zscore import ZScoreDetector
from pipeline.edge.model_sync import builtin_rate_prior
from pipeline.learn.sync_stats import (
    PRIOR_WARMUP,
    DetectorPrior,
    StatsAccumulator,
    prior_from_stats,
)
from pipeline.protocol import Reading
from pipeline.protocol.causes import DEVICE_METRIC, Cause
from pipeline.protocol.model_codec import MetricStats
from simulators import SimOptions
from simulators import run as run_fleet

MONDAY_MS = 1_719_792_000_000  # Monday 1 July 2024, 00:00 UTC
SITES = ("farm", "retail", "city")  # one site of each domain


@dataclass(frozen=True)
class SimQualityPlan:
    """How much to simulate: ``3 * devices_per_site`` devices for ``days`` simulated days."""

    devices_per_site: int = 67
    days: float = 3.0
    burn_in_days: float = 1.0
    interval_s: float = 60.0
    seed: int = 11
    anomaly_rate: float = 0.1
    grace_readings: int = 5
    warmup: int = 100
    relations: bool = True  # also the node's path with the multivariate view (full runs)
    start_ms: int = MONDAY_MS  # the fleet's first reading (another date: a check on data nothing was tuned on)

    @classmethod
    def quick(cls) -> SimQualityPlan:
        return cls(devices_per_site=45, days=2.0, relations=False)

    @classmethod
    def tiny(cls) -> SimQualityPlan:
        return cls(devices_per_site=3, days=0.25, burn_in_days=0.05, warmup=30)

    def first_day(self) -> SimQualityPlan:
        """The same fleet's first day, counted from the warm-up of a warm-started detector."""
        return replace(self, days=min(self.days, 1.0), burn_in_days=0.0, warmup=PRIOR_WARMUP)


_reading = msgspec.json.Decoder(Reading)
_label = msgspec.json.Decoder(dict[str, Any])


class Pipeline:
    """The node's detection for one site (``build``, as ``EdgeNode`` makes it); alerts kept."""

    def __init__(self, site: str, detection: Detection) -> None:
        self.site = site
        self.detection = detection
        self.raised: list[Raised] = []
        self.critical: list[Raised] = []  # every raise at CRITICAL, an alert's first or an escalation

    @property
    def seconds(self) -> float:
        """Time in the scorer (``detect.us_per_reading``)."""
        return self.detection.score_seconds

    @property
    def readings(self) -> int:
        return self.detection.readings

    def reading(self, r: Reading) -> None:
        points, _ = self.detection.observe(r)
        for point, cause, alert in points:
            if alert is not None and alert.data.state == "raised":
                raised = Raised(r.device, point.metric, r.ts, cause)
                if alert.data.alert_id.endswith(f".{r.ts}"):
                    self.raised.append(raised)
                if alert.data.severity == "critical":
                    self.critical.append(raised)

    def tick(self) -> None:
        for alert in self.detection.tick():
            raised = Raised(alert.data.device, DEVICE_METRIC, alert.data.reading_ts, Cause.DROPOUT)
            self.raised.append(raised)
            if alert.data.severity == "critical":
                self.critical.append(raised)


class Feed:
    """A simulator ``Publisher`` that feeds every pipeline in place of MQTT, labels aside."""

    def __init__(self, pipelines: dict[str, list[Pipeline]], interval_ms: float) -> None:
        self.pipelines = pipelines
        self.events: list[Event] = []
        self.first_ts: dict[str, int] = {}
        self.interval_ms = interval_ms
        self._next_tick = -(2**62)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        levels = topic.split("/")
        if levels[-1] == "labels":
            d = _label.decode(payload)
            self.events.append(Event(d["device"], tuple(d["metrics"]), d["anomaly"], d["start"], d["end"]))
            return
        r = _reading.decode(payload)
        if r.ts >= self._next_tick:  # a new tick of the fleet: time for the silence check
            for pipes in self.pipelines.values():
                for p in pipes:
                    p.tick()
            self._next_tick = r.ts + int(self.interval_ms // 2)
        self.first_ts.setdefault(r.device, r.ts)
        for p in self.pipelines[levels[-3]]:
            p.reading(r)


Variant = Callable[[str], Pipeline]


def _pipeline(site: str, **options: Any) -> Pipeline:
    """The node's ``build`` with the default ``alert`` settings, timed (``detect.us_per_reading``)."""
    return Pipeline(site, build(site, AlertSettings(), timer=time.perf_counter, **options))


def ours(site: str) -> Pipeline:
    """The node's path with its defaults: the edge detector, stuck runs, irrigation zones, switch
    contexts, silence watch; every series starts from nothing (no model sync, no built-in priors)."""
    return _pipeline(site)


def builtin_priors(site: str) -> Pipeline:
    """The node's path with ``detect.builtin_priors = true`` (as ``edgepipe demo`` runs): new series
    of the built-in kinds start from the package's priors at their reporting rate."""
    return _pipeline(site, rate_prior=builtin_rate_prior())


def with_relations(site: str) -> Pipeline:
    """The node's path plus the multivariate view (``LinkedMetrics``), which the node leaves out.

    Measured in every full run so that the decision to leave it out stays checked
    (``quality.sim.f1_with_relations``, docs/detection.md).
    """
    return _pipeline(site, stages=ALL_STAGES)


def warm(priors: dict[tuple[str, str], DetectorPrior]) -> Variant:
    """The node's path with every new detector warm-started from its kind's prior."""

    def make(site: str) -> Pipeline:
        return _pipeline(site, prior=lambda k, m: priors.get((k, m)))

    return make


class _Learn:
    """A simulator ``Publisher`` that learns kind statistics (``StatsAccumulator``) from readings."""

    def __init__(self) -> None:
        self.stats: dict[tuple[str, str], StatsAccumulator] = {}
        self.previous: dict[tuple[str, str], float] = {}

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if topic.split("/")[-1] == "labels":
            return
        r = _reading.decode(payload)
        for metric, value in r.metrics.items():
            acc = self.stats.get((r.kind, metric))
            if acc is None:
                acc = self.stats[(r.kind, metric)] = StatsAccumulator()
            acc.learn_one(value, r.ts, self.previous.get((r.device, metric)))
            self.previous[(r.device, metric)] = value


def learn_priors(plan: SimQualityPlan, devices_per_site: int = 10, days: float = 1.0) -> dict[tuple[str, str], DetectorPrior]:
    """Kind priors (what model sync merges) from another fleet: another seed, the day before."""
    options = SimOptions(
        sites=SITES,
        devices_per_site=devices_per_site,
        rate=1.0 / plan.interval_s,
        duration=days * 86_400,
        seed=plan.seed + 1000,
        anomaly_rate=plan.anomaly_rate,
        start_ms=plan.start_ms - round(days * 86_400_000),
        realtime=False,
    )
    priors = {key: prior_from_stats(stats, version=1) for key, stats in learn_stats(options).items()}
    return {key: p for key, p in priors.items() if p is not None}


def learn_stats(options: SimOptions) -> dict[tuple[str, str], MetricStats]:
    """What model sync would merge from a simulated fleet: the statistics of every kind metric."""
    learn = _Learn()
    run_fleet(options, learn)
    return {key: acc.to_stats() for key, acc in learn.stats.items()}


def river_hst(site: str) -> Pipeline:
    """The node's path with river's HalfSpaceTrees in place of the edge detector (preset
    ``river_hst``, as a user gets it with ``[detect.kinds.KIND] detector = "river_hst"``)."""
    return _pipeline(site, detector="river_hst")


def zscore(site: str) -> Pipeline:
    """The baseline: z-score detector only."""
    return _pipeline(site, detector="zscore", stages=(), silence=False)


class FleetPlan(Protocol):
    """What a simulated bench fleet needs: 3 sites of ``devices_per_site``, for ``days``."""

    @property
    def devices_per_site(self) -> int: ...
    @property
    def interval_s(self) -> float: ...
    @property
    def days(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def anomaly_rate(self) -> float: ...
    @property
    def start_ms(self) -> int: ...


def fleet_options(plan: FleetPlan) -> SimOptions:
    """The simulator options of a bench fleet: every site, from ``MONDAY_MS``, not paced."""
    return SimOptions(
        sites=SITES,
        devices_per_site=plan.devices_per_site,
        rate=1.0 / plan.interval_s,
        duration=plan.days * 86_400,
        seed=plan.seed,
        anomaly_rate=plan.anomaly_rate,
        start_ms=plan.start_ms,
        realtime=False,
    )


def run_sim(plan: SimQualityPlan, variants: dict[str, Variant]) -> dict[str, dict[str, Any]]:
    """Simulate once, feed every variant, match its alerts; figures and details per variant."""

    sites = SITES
    options = fleet_options(plan)
    pipelines = {site: [make(site) for make in variants.values()] for site in sites}
    interval_ms = plan.interval_s * 1000
    feed = Feed(pipelines, interval_ms)
    started = time.perf_counter()
    report = run_fleet(options, feed)
    elapsed = time.perf_counter() - started
    skip_ms = max(plan.warmup * interval_ms, plan.burn_in_days * 86_400_000)
    from_ts = {d: t + skip_ms for d, t in feed.first_ts.items()}
    events = [e for e in feed.events if e.start >= from_ts.get(e.device, 2**62)]
    devices = len(feed.first_ts)
    device_days = devices * (plan.days - skip_ms / 86_400_000)
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(variants):
        pipes = [pipelines[s][i] for s in sites]
        raised = [a for p in pipes for a in p.raised if a.ts >= from_ts.get(a.device, 2**62)]
        matched = match_alerts(events, raised, interval_ms, plan.grace_readings)
        readings = sum(p.readings for p in pipes)
        figures: dict[str, Any] = matched.figures(device_days)
        figures["us_per_reading"] = 1e6 * sum(p.seconds for p in pipes) / max(readings, 1)
        figures["raised"] = raised
        figures["details"] = {
            "events": matched.events,
            "detected": matched.detected,
            "false_alarms": matched.false_alarms,
            "alerts": len(raised),
            "false_alarms_by_cause": matched.false_by_cause,
            "recall_by_anomaly": {
                a: round(d / n, 3) for a, (n, d) in sorted(matched.by_anomaly.items())
            },
            "events_by_anomaly": {a: n for a, (n, _) in sorted(matched.by_anomaly.items())},
        }
        out[name] = figures
    out["_events"] = {"events": events}
    out["_run"] = {
        "devices": devices,
        "days": plan.days,
        "interval_s": plan.interval_s,
        "readings": report.readings_published,
        "labels": len(feed.events),
        "seconds": round(elapsed, 1),
    }
    return out


def bench_quality_sim(plan: SimQualityPlan) -> dict[str, Any]:
    """``quality.sim.*`` (ours, ``*_zscore`` and ``*_river_hst``) and ``detect.us_per_reading``."""
    variants: dict[str, Variant] = {"ours": ours, "zscore": zscore, "river_hst": river_hst}
    if plan.relations:
        variants["relations"] = with_relations
    result = run_sim(plan, variants)
    figures: dict[str, Any] = {}
    for key in ("f1", "precision", "recall", "median_delay_readings", "false_alarms_per_device_day"):
        # the headline ``quality.sim.f1`` is the worst reporting rate's (pipeline/bench/rates.py)
        figures["quality.sim.f1_1min_plan" if key == "f1" else f"quality.sim.{key}"] = result["ours"][key]
        figures[f"quality.sim.{key}_zscore"] = result["zscore"][key]
    for key in ("f1", "precision", "recall", "false_alarms_per_device_day"):
        figures[f"quality.sim.{key}_river_hst"] = result["river_hst"][key]
    if plan.relations:
        for key in ("f1", "precision", "recall", "false_alarms_per_device_day"):
            figures[f"quality.sim.{key}_with_relations"] = result["relations"][key]
    figures["detect.us_per_reading"] = result["ours"]["us_per_reading"]
    figures["detect.us_per_reading_zscore"] = result["zscore"]["us_per_reading"]
    figures["detect.us_per_reading_river_hst"] = result["river_hst"]["us_per_reading"]
    first_plan = plan.first_day()
    first = run_sim(first_plan, {"cold": ours, "warm": warm(learn_priors(plan))})
    for key in ("f1", "false_alarms_per_device_day"):
        figures[f"quality.sim.{key}_first_day"] = first["cold"][key]
        figures[f"quality.sim.{key}_first_day_warm"] = first["warm"][key]
    figures["quality.sim.details"] = {
        "run": result["_run"],
        "grace_readings": plan.grace_readings,
        "warmup_readings": plan.warmup,
        "ours": result["ours"]["details"],
        "zscore": result["zscore"]["details"],
        "river_hst": result["river_hst"]["details"],
        "with_relations": result["relations"]["details"] if plan.relations else None,
        "first_day": {
            "run": first["_run"],
            "warmup_readings": first_plan.warmup,
            "cold": first["cold"]["details"],
            "warm": first["warm"]["details"],
        },
    }
    return figures


def bench_quality_nab(nab_dir: str | Path | None, detector: ValueDetector | None = None) -> dict[str, Any]:
    """``quality.nab.*`` for the default detector, ``*_zscore`` and ``*_river_hst`` beside it (None: no NAB folder)."""
    from pipeline.bench.nab import detect_and_score

    if nab_dir is None or not Path(nab_dir).is_dir():
        return {}
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgepipe-nab-") as tmp:
        baselines = (("_zscore", ZScoreDetector()), ("_river_hst", DETECTORS["river_hst"]()))
        for suffix, det in (("", detector or default_detector()), *baselines):
            scored = detect_and_score(nab_dir, Path(tmp) / (suffix or "ours"), det)
            for profile in ("standard", "low_fp", "low_fn"):
                figures[f"quality.nab.{profile}{suffix}"] = scored[profile]
            figures[f"quality.nab.details{suffix}"] = {
                "files": scored["files"],
                "windows": scored["windows"],
                "rows": scored["rows"],
                "thresholds": scored["thresholds"],
                "us_per_row": scored["us_per_row"],
            }
    return figures


def sim_plan_for(bench_plan: str) -> SimQualityPlan:
    """The simulated-data plan of a bench plan: ``quick``, ``full`` or ``tiny``."""
    return {"quick": SimQualityPlan.quick, "tiny": SimQualityPlan.tiny}.get(bench_plan, SimQualityPlan)()


def bench_quality(bench_plan: str, nab_dir: str | Path | None, echo: Callable[[str], object] = print) -> dict[str, Any]:
    """The bench's quality part: simulated data, then NAB (null with the reason when absent)."""
    plan = sim_plan_for(bench_plan)
    figures = bench_quality_sim(plan)
    run = figures["quality.sim.details"]["run"]
    echo(
        f"  sim: {run['devices']} devices x {plan.days:g} days ({plan.burn_in_days:g} learning), "
        f"{run['labels']} labels, {run['seconds']} s"
    )
    if nab_dir is None or not Path(nab_dir).is_dir():
        reason = "no NAB folder (--nab-dir PATH; ../shared/nab by default)" if nab_dir is None else f"no NAB folder at {nab_dir}"
        figures["_not_measured"] = {
            f"quality.nab.{p}{s}": reason for p in ("standard", "low_fp", "low_fn") for s in ("", "_zscore", "_river_hst")
        }
        return figures
    started = time.perf_counter()
    figures.update(bench_quality_nab(nab_dir))
    echo(f"  NAB: {figures['quality.nab.details']['files']} files, {time.perf_counter() - started:.1f} s")
    return figures
