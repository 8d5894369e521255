"""``quality.sim.rate_*`` and the headline ``quality.sim.f1``: the node's alerts at the rates real devices report at.

The headline quality plan feeds one reading a minute per device; real fleets report from
1 Hz to once per 15 minutes (LoRaWAN), and the simulators, the demo and the README default
to 1 Hz. This part runs the same fleets and the node's own detection path (``ours`` in
``pipeline.bench.quality``: the node's scorer, silence watch and alert policy with default
settings) at each rate, and counts in seconds, not readings, so that the rates compare:

* **learned**: alerts and events after the first simulated day (the learning period);
* **cold** (``*_cold``): the first simulated day, from the first reading, no model sync: what
  a new user sees on day one;
* an alert detects an event when it falls in ``[start, end + grace]`` of one of its device's
  label windows on a labelled metric (a dropout, metric ``_device``, matches any), with
  ``grace_ms(interval)`` (``pipeline.detect.labels``, shared with ``edgepipe demo``): two
  minutes where the rate allows, at least two readings at slow rates (the first chance to
  see an anomaly is the next reading);
* ``alerts_per_device_day`` counts every opened alert; ``anomalies_per_device_day`` the
  injected events, so "alerts at most twice the anomalies" reads off the two;
* ``critical_precision``: the share of CRITICAL raises (an alert's first or an escalation)
  that fall in a label window of their device and metric;
* ``median_delay_s``: from an event's start to its first alert, in seconds.

The newcomer plan (``quality.sim.newcomer.*``) is the README's separate-processes recipe:
3 sites x 10 devices at the simulators' 1 Hz for ten hours, every alert counted from the
first reading, as a user watching ``edgepipe alerts`` sees them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.bench.quality import (
    MONDAY_MS,
    SITES,
    Feed,
    Pipeline,
    builtin_priors,
    fleet_options,
    ours,
)
from pipeline.detect.labels import Event, Raised, grace_ms, match_alerts
from simulators import run as run_fleet

DAY_MS = 86_400_000
HOUR_S = 3600.0
RATE_INTERVALS_S = {"1hz": 1.0, "1min": 60.0, "15min": 900.0}


@dataclass(frozen=True)
class RatePlan:
    """One rate: ``3 * devices_per_site`` devices for ``days``, the first ``learning_days`` cold."""

    name: str
    interval_s: float
    devices_per_site: int
    days: float
    learning_days: float = 1.0
    seed: int = 11
    anomaly_rate: float = 0.1  # per device per simulated hour, the simulators' default
    start_ms: int = MONDAY_MS  # the fleet's first reading


def rate_plans(bench_plan: str) -> list[RatePlan]:
    """Fleets sized so that each rate's learned days hold enough labels to mean something.

    The full 1 Hz plan costs the most readings (2 million): with 6 devices its learned day
    held 12 labels, one alert moved F1 by 0.05, and two seeds read 0.92 and 0.74.
    """
    if bench_plan == "tiny":
        return [RatePlan(name, interval, 1, 0.05, learning_days=0.02) for name, interval in RATE_INTERVALS_S.items()]
    quick = bench_plan == "quick"
    return [
        RatePlan("1hz", 1.0, 1 if quick else 4, 1.5 if quick else 2.0),  # 12 devices: about 24 labels on day 2
        RatePlan("1min", 60.0, 10 if quick else 20, 2.0 if quick else 3.0),
        RatePlan("15min", 900.0, 30 if quick else 67, 4.0 if quick else 8.0),
    ]


def newcomer_plan(bench_plan: str) -> RatePlan:
    """The README recipe: 10 devices per site at 1 Hz for ten hours, counted from the start."""
    devices = {"tiny": 1, "quick": 3}.get(bench_plan, 10)
    hours = 0.5 if bench_plan == "tiny" else 10.0
    return RatePlan("newcomer", 1.0, devices, hours / 24, learning_days=0.0)


@dataclass
class SimRun:
    """One simulated fleet fed through the node's path: what the figures are computed from."""

    plan: RatePlan
    pipes: list[Pipeline]
    events: list[Event]
    first_ts: dict[str, int]
    readings: int
    seconds: float


def simulate(plan: RatePlan, *variants: Callable[[str], Pipeline]) -> list[SimRun]:
    """Run the fleet of ``plan`` once, through one pipeline per site of each variant (default: ``ours``)."""
    variants = variants or (ours,)
    pipelines = {site: [variant(site) for variant in variants] for site in SITES}
    feed = Feed(pipelines, plan.interval_s * 1000)
    started = time.perf_counter()
    report = run_fleet(fleet_options(plan), feed)
    seconds = time.perf_counter() - started
    return [
        SimRun(plan, [pipelines[s][i] for s in SITES], feed.events, feed.first_ts, report.readings_published, seconds)
        for i in range(len(variants))
    ]


def figures(run: SimRun, from_day: float, until_day: float) -> dict[str, float | None]:
    """The figures of the alerts and events between two simulated days of each device."""
    plan = run.plan
    interval_ms = plan.interval_s * 1000
    grace = grace_ms(interval_ms)
    span = {d: (t + from_day * DAY_MS, t + until_day * DAY_MS) for d, t in run.first_ts.items()}

    def inside(device: str, ts: int) -> bool:
        lo, hi = span.get(device, (0, -1))
        return lo <= ts < hi

    events = [e for e in run.events if inside(e.device, e.start)]
    opened = [a for p in run.pipes for a in p.raised if inside(a.device, a.ts)]
    critical = [a for p in run.pipes for a in p.critical if inside(a.device, a.ts)]
    matched = match_alerts(events, opened, interval_ms, 0, grace_ms=grace)
    device_days = len(run.first_ts) * (until_day - from_day)
    out: dict[str, float | None] = dict(matched.figures(device_days))
    delay = out.pop("median_delay_readings")
    out["median_delay_s"] = None if delay is None else delay * plan.interval_s
    out["alerts_per_device_day"] = len(opened) / device_days if device_days else None
    out["anomalies_per_device_day"] = len(events) / device_days if device_days else None
    out["critical_precision"] = _precision(events, critical, interval_ms, grace)
    out["critical_alerts"] = float(len(critical))
    return out


def _precision(events: Sequence[Event], alerts: Sequence[Raised], interval_ms: float, grace: float) -> float | None:
    if not alerts:
        return None
    matched = match_alerts(events, alerts, interval_ms, 0, grace_ms=grace)
    return (len(alerts) - matched.false_alarms) / len(alerts)


def bench_quality_rates(bench_plan: str, echo: Callable[[str], object] = print) -> dict[str, Any]:
    """``quality.sim.rate_<rate>.<figure>[_cold]`` and ``quality.sim.newcomer.<figure>``."""
    results: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for plan in rate_plans(bench_plan):
        sim_run, primed_run = simulate(plan, ours, builtin_priors)
        learned = figures(sim_run, plan.learning_days, plan.days)
        cold = figures(sim_run, 0.0, min(1.0, plan.days))
        for key, value in learned.items():
            results[f"quality.sim.rate_{plan.name}.{key}"] = value
        for key, value in cold.items():
            results[f"quality.sim.rate_{plan.name}.{key}_cold"] = value
        for key, value in figures(primed_run, 0.0, min(1.0, plan.days)).items():
            results[f"quality.sim.rate_{plan.name}.{key}_cold_builtin_priors"] = value
        for key, value in figures(primed_run, plan.learning_days, plan.days).items():
            results[f"quality.sim.rate_{plan.name}.{key}_builtin_priors"] = value
        details[plan.name] = _describe(sim_run)
        echo(
            f"  rate {plan.name}: {details[plan.name]['devices']} devices x {plan.days:g} days, "
            f"F1 {_show(learned['f1'])} (cold {_show(cold['f1'])}), alerts/device-day "
            f"{_show(learned['alerts_per_device_day'])}, {sim_run.seconds:.0f} s"
        )
    worst = min(rate_plans(bench_plan), key=lambda p: results[f"quality.sim.rate_{p.name}.f1"])
    results["quality.sim.f1"] = results[f"quality.sim.rate_{worst.name}.f1"]  # the headline: the worst rate's
    results["quality.sim.f1_worst_rate"] = worst.name
    plan = newcomer_plan(bench_plan)
    sim_run, primed_run = simulate(plan, ours, builtin_priors)
    for key, value in figures(sim_run, 0.0, plan.days).items():
        results[f"quality.sim.newcomer.{key}"] = value
    for key, value in figures(primed_run, 0.0, plan.days).items():
        results[f"quality.sim.newcomer.{key}_builtin_priors"] = value
    details["newcomer"] = _describe(sim_run)
    echo(
        f"  newcomer: {details['newcomer']['devices']} devices x {plan.days * 24:g} h at 1 Hz, "
        f"precision {_show(results['quality.sim.newcomer.precision'])}, recall "
        f"{_show(results['quality.sim.newcomer.recall'])}, {sim_run.seconds:.0f} s"
    )
    results["quality.sim.rate_details"] = details
    return results


def _describe(sim_run: SimRun) -> dict[str, Any]:
    return {
        "devices": len(sim_run.first_ts),
        "days": sim_run.plan.days,
        "learning_days": sim_run.plan.learning_days,
        "interval_s": sim_run.plan.interval_s,
        "readings": sim_run.readings,
        "labels": len(sim_run.events),
        "seconds": round(sim_run.seconds, 1),
        "anomalies_by_kind": dict(Counter(e.anomaly for e in sim_run.events)),
    }


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
