"""``quality.sim.*_edge_cloud``: what the fleet analyst adds to the edge, in the same run.

The quality bench's simulation (``pipeline.bench.quality.run_sim``) runs once with one
variant: the node's own detection path (``quality.ours``) whose alert policy also hands
every raise and clear to the analyst, and whose readings also go through the edge's own
``WindowAggregator`` (the ``aggregate`` settings' defaults, flushed on event time as the
node does). The aggregates and the edge's alerts feed one ``FleetAnalyst`` with the
production defaults, in event-time order, as the ``edgepipe analyst`` role sees them.

Both are matched to the same labels with the same rules (``pipeline.detect.labels.match_alerts``): the
edge's raises alone (``quality.sim.f1_edge``), and the edge's plus the cloud's
(``quality.sim.f1_edge_cloud``). A cloud alert is stamped with the end of the window that
raised it; the delay figures (``quality.sim.median_delay_min_by_anomaly_edge_cloud``) count
from the label's start to that time, in minutes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from pipeline.analyst.fleet import FleetAnalyst
from pipeline.bench.quality import Pipeline, SimQualityPlan, ours, run_sim, sim_plan_for
from pipeline.config import AggregateSettings, AlertSettings
from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.labels import Event, Raised, match_alerts
from pipeline.edge.aggregate import WindowAggregator
from pipeline.edge.escalate import EscalationPicker
from pipeline.edge.stages import Point
from pipeline.protocol import Alert, Reading
from pipeline.protocol.causes import Cause

MINUTE_MS = 60_000
ANOMALIES_NAMED = ("drift", "theft", "level_shift", "stuck")  # the edge's misses the issue names
ANALYST_CHECK_SEED = 23  # a seed the analyst was never tuned on (the plan's own seed, 11, was)


class _TapPolicy(AlertPolicy):
    """The edge's alert policy, also handing every alert to ``sink`` (the analyst's input)
    and every scored point to ``scored`` (the escalation picker's input)."""

    sink: Callable[[Alert], None] = staticmethod(lambda a: None)  # set by _EdgeAndCloud
    scored: Callable[[Point, bool], None] = staticmethod(lambda p, raised: None)

    def update_one(self, point: Point, cause: Cause = Cause.ANOMALY, detail: str = "") -> Alert | None:
        alert = super().update_one(point, cause, detail)
        if alert is not None:
            self.sink(alert)
        self.scored(point, alert is not None and alert.data.state == "raised")
        return alert

    def open_one(self, point: Point, reason: str) -> Alert | None:
        alert = super().open_one(point, reason)
        if alert is not None:
            self.sink(alert)
        return alert

    def close_one(self, point: Point, reason: str) -> Alert | None:
        alert = super().close_one(point, reason)
        if alert is not None:
            self.sink(alert)
        return alert


class _EdgeAndCloud(Pipeline):
    """The node's path for one site, plus its window aggregates and alerts fed to the analyst."""

    def __init__(
        self,
        site: str,
        analysts: tuple[FleetAnalyst, FleetAnalyst],
        clouds: tuple[list[Alert], list[Alert]],
        first_ts: dict[str, int],
    ) -> None:
        base = ours(site)
        settings = AlertSettings()
        policy = _TapPolicy.from_settings(site, settings)
        assert isinstance(policy, _TapPolicy)

        def sink(alert: Alert) -> None:
            for analyst in analysts:
                analyst.add_alert(alert.data)

        policy.sink = sink
        policy.scored = lambda point, raised: self.picker.add_one(point, raised)
        base.detection.policy = policy  # the node's detection, its alerts tapped
        super().__init__(site, base.detection)
        agg = AggregateSettings()
        self.window_ms = int(agg.window_s * 1000)
        self.aggregator = WindowAggregator(
            site, window_ms=self.window_ms, lateness_ms=int(agg.lateness_s * 1000), idle_ms=int(agg.idle_s * 1000)
        )
        self.lateness_ms = int(agg.lateness_s * 1000)
        self.picker = EscalationPicker(
            site, window_ms=self.window_ms, clear_score=settings.clear_score, raise_score=settings.raise_score
        )
        self.analysts = analysts
        self.clouds = clouds
        self.first_ts = first_ts
        self.analyst_seconds = 0.0
        self._next_flush = -(2**62)

    def reading(self, r: Reading) -> None:
        super().reading(r)
        self.first_ts.setdefault(r.device, r.ts)
        for metric, value in r.metrics.items():
            self.aggregator.add_one(Point(r.device, r.kind, metric, r.ts, r.seq, value), now_ms=r.ts)
        if r.ts >= self._next_flush:
            self._next_flush = r.ts + self.window_ms // 2
            aggs = self.aggregator.flush(r.ts)
            for e in self.picker.flush(r.ts - self.lateness_ms):
                self.analysts[1].add_escalation(e)
            if aggs:
                started = time.perf_counter()
                self.clouds[0].extend(self.analysts[0].add_aggregates(aggs))
                self.analyst_seconds += time.perf_counter() - started
                self.clouds[1].extend(self.analysts[1].add_aggregates(aggs))


def _raised(alerts: list[Alert]) -> list[Raised]:
    """First raises only (an escalation repeats the alert_id with a later ts)."""
    return [
        Raised(a.data.device, a.data.metric, a.data.reading_ts, a.data.reason.split(":", 1)[0])
        for a in alerts
        if a.data.state == "raised" and a.data.alert_id.endswith(f".{a.data.reading_ts}")
    ]


def _delays_min(events: list[Event], raised: list[Raised], grace_ms: float) -> dict[str, float | None]:
    """Median minutes from a detected event's start to its first alert, per anomaly kind."""
    by_device: dict[str, list[Raised]] = {}
    for a in sorted(raised, key=lambda a: a.ts):
        by_device.setdefault(a.device, []).append(a)
    delays: dict[str, list[float]] = {}
    for e in events:
        first = next(
            (a.ts for a in by_device.get(e.device, []) if e.start <= a.ts <= e.end + grace_ms and (a.metric in e.metrics or a.metric == "_device")),
            None,
        )
        if first is not None:
            delays.setdefault(e.anomaly, []).append((first - e.start) / MINUTE_MS)
    return {a: round(statistics.median(d), 1) for a, d in sorted(delays.items())}


def _analyst() -> FleetAnalyst:
    """The production analyst: ``edgepipe analyst``'s own construction, from the default settings."""
    from pipeline.analyst.role import analyst_from_settings
    from pipeline.config import AnalystSettings

    return analyst_from_settings(AnalystSettings(), AlertSettings())


def bench_analyst(plan: SimQualityPlan, analyst: FleetAnalyst | None = None) -> dict[str, Any]:
    """Edge alone, edge + cloud, and edge + cloud with escalation, on one simulation of ``plan``."""
    fleet = analyst or _analyst()
    escalated = _analyst()  # the same analyst, also given the edge's uncertain windows
    cloud: list[Alert] = []
    cloud_escalated: list[Alert] = []
    first_ts: dict[str, int] = {}
    made: list[_EdgeAndCloud] = []

    def variant(site: str) -> Pipeline:
        p = _EdgeAndCloud(site, (fleet, escalated), (cloud, cloud_escalated), first_ts)
        made.append(p)
        return p

    started = time.perf_counter()
    result = run_sim(plan, {"edge": variant})
    cloud.extend(fleet.flush())
    cloud_escalated.extend(escalated.flush())
    elapsed = time.perf_counter() - started
    interval_ms = plan.interval_s * 1000
    skip_ms = max(plan.warmup * interval_ms, plan.burn_in_days * 86_400_000)
    events: list[Event] = result["_events"]["events"]
    device_days = result["_run"]["devices"] * (plan.days - skip_ms / 86_400_000)
    edge_raised: list[Raised] = result["edge"]["raised"]
    cloud_raised = [a for a in _raised(cloud) if a.ts >= first_ts.get(a.device, 2**62) + skip_ms]
    both = match_alerts(events, [*edge_raised, *cloud_raised], interval_ms, plan.grace_readings)
    figures: dict[str, Any] = {}
    edge = result["edge"]
    combined = both.figures(device_days)
    for key in ("f1", "precision", "recall", "false_alarms_per_device_day"):
        figures[f"quality.sim.{key}_edge"] = edge[key]
        figures[f"quality.sim.{key}_edge_cloud"] = combined[key]
    recall_both = {a: round(d / n, 3) for a, (n, d) in sorted(both.by_anomaly.items())}
    figures["quality.sim.recall_by_anomaly_edge"] = edge["details"]["recall_by_anomaly"]
    figures["quality.sim.recall_by_anomaly_edge_cloud"] = recall_both
    grace_ms = plan.grace_readings * interval_ms
    figures["quality.sim.median_delay_min_by_anomaly_edge_cloud"] = _delays_min(events, [*edge_raised, *cloud_raised], grace_ms)
    analyst_s = sum(p.analyst_seconds for p in made)
    c = fleet.counters
    figures["cloud.analyst_aggregates_per_s"] = c.aggregates / analyst_s if analyst_s else None
    cloud_only = match_alerts(events, cloud_raised, interval_ms, plan.grace_readings)
    esc_raised = [a for a in _raised(cloud_escalated) if a.ts >= first_ts.get(a.device, 2**62) + skip_ms]
    with_escalation = match_alerts(events, [*edge_raised, *esc_raised], interval_ms, plan.grace_readings).figures(device_days)
    shipped = sum(p.picker.shipped_bytes for p in made)
    readings = result["_run"]["readings"]
    figures["quality.sim.f1_edge_cloud_escalation"] = with_escalation["f1"]
    figures["quality.sim.precision_edge_cloud_escalation"] = with_escalation["precision"]
    figures["quality.sim.recall_edge_cloud_escalation"] = with_escalation["recall"]
    figures["quality.sim.escalation_bytes_per_reading"] = shipped / readings if readings else None
    gain = (with_escalation["f1"] or 0.0) - (combined["f1"] or 0.0)
    figures["quality.sim.f1_gain_per_escalated_kb"] = gain / (shipped / 1024) if shipped else None
    figures["quality.sim.analyst_details"] = {
        "run": result["_run"],
        "seed": plan.seed,
        "seconds": round(elapsed, 1),
        "edge": edge["details"],
        "edge_cloud": {
            "events": both.events,
            "detected": both.detected,
            "false_alarms": both.false_alarms,
            "false_alarms_by_cause": both.false_by_cause,
            "events_by_anomaly": {a: n for a, (n, _) in sorted(both.by_anomaly.items())},
        },
        "cloud_alone": {
            "alerts": len(cloud_raised),
            "detected": cloud_only.detected,
            "false_alarms": cloud_only.false_alarms,
            "false_alarms_by_cause": cloud_only.false_by_cause,
            "recall_by_anomaly": {a: round(d / n, 3) for a, (n, d) in sorted(cloud_only.by_anomaly.items())},
        },
        "analyst": {
            "aggregates": c.aggregates,
            "windows": c.windows,
            "late": c.late,
            "held": c.held,
            "edge_alerts": c.edge_alerts,
            "series": fleet.series,
            "escalations": escalated.counters.escalations,
            "escalations_raised": escalated.counters.escalations_raised,
            "escalated_bytes": shipped,
            "escalations_over_budget": sum(sum(p.picker.over_budget.values()) for p in made),
            "seconds": round(analyst_s, 1),
        },
    }
    return figures


def bench_quality_analyst(bench_plan: str, echo: Callable[[str], object] = print, seed: int | None = None) -> dict[str, Any]:
    """The ``--quality`` part for the analyst: the plan's seed (tuned on) and, beside it, ``seed``."""
    plan = sim_plan_for(bench_plan)
    figures = bench_analyst(plan)
    echo(
        f"  analyst: edge F1 {figures['quality.sim.f1_edge']:.3f} -> edge+cloud {figures['quality.sim.f1_edge_cloud']:.3f} "
        f"({figures['quality.sim.analyst_details']['seconds']} s)"
    )
    if seed is not None:
        from dataclasses import replace

        other = bench_analyst(replace(plan, seed=seed))
        for key in ("f1", "precision", "recall", "false_alarms_per_device_day"):
            for who in ("edge", "edge_cloud"):
                figures[f"quality.sim.{key}_{who}_seed{seed}"] = other[f"quality.sim.{key}_{who}"]
        figures[f"quality.sim.recall_by_anomaly_edge_cloud_seed{seed}"] = other["quality.sim.recall_by_anomaly_edge_cloud"]
    return figures
