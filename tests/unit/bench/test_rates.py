"""The per-rate quality figures count in seconds, per window, and say what CRITICAL promises."""

from __future__ import annotations

import pytest

from pipeline.bench.quality import Pipeline, ours
from pipeline.bench.rates import RatePlan, SimRun, figures, rate_plans, simulate
from pipeline.detect.labels import GRACE_S, Event, Raised

T0 = 1_719_792_000_000
HOUR_MS = 3_600_000


def run_with(alerts: list[Raised], critical: list[Raised], events: list[Event], interval_s: float = 60.0) -> SimRun:
    pipe = ours("farm")
    pipe.raised.extend(alerts)
    pipe.critical.extend(critical)
    plan = RatePlan("test", interval_s, 1, 2.0)
    return SimRun(plan, [pipe], events, {"d1": T0, "d2": T0}, readings=0, seconds=0.0)


def test_an_alert_within_the_grace_after_a_window_detects_it_and_one_beyond_is_a_false_alarm() -> None:
    event = Event("d1", ("t",), "spike", T0 + 30 * HOUR_MS, T0 + 30 * HOUR_MS + 60_000)
    end = event.end
    alerts = [Raised("d1", "t", end + int(GRACE_S * 1000) - 1, "anomaly"), Raised("d2", "t", end, "anomaly")]
    f = figures(run_with(alerts, [], [event]), 1.0, 2.0)
    assert (f["recall"], f["precision"]) == (1.0, 0.5)
    assert f["false_alarms_per_device_day"] == 0.5  # one false alarm over two device-days
    assert f["alerts_per_device_day"] == 1.0
    assert f["anomalies_per_device_day"] == 0.5
    assert f["median_delay_s"] == 180.0  # 60 s of window and 120 s of grace, whole readings


def test_cold_and_learned_windows_split_the_run_at_the_learning_day() -> None:
    early = Raised("d1", "t", T0 + 2 * HOUR_MS, "anomaly")
    late = Raised("d1", "t", T0 + 26 * HOUR_MS, "anomaly")
    run = run_with([early, late], [], [])
    assert figures(run, 0.0, 1.0)["alerts_per_device_day"] == 0.5
    assert figures(run, 1.0, 2.0)["alerts_per_device_day"] == 0.5


def test_the_grace_is_at_least_two_readings_at_slow_rates() -> None:
    event = Event("d1", ("t",), "spike", T0 + 30 * HOUR_MS, T0 + 30 * HOUR_MS)
    next_reading = Raised("d1", "t", event.end + 900_000, "anomaly")  # 15 min later: the next reading
    assert figures(run_with([next_reading], [], [event], interval_s=900.0), 1.0, 2.0)["recall"] == 1.0
    assert figures(run_with([next_reading], [], [event], interval_s=1.0), 1.0, 2.0)["recall"] == 0.0


def test_critical_precision_is_the_share_of_critical_raises_in_a_label_window() -> None:
    event = Event("d1", ("t",), "spike", T0 + 30 * HOUR_MS, T0 + 31 * HOUR_MS)
    inside = Raised("d1", "t", T0 + 30 * HOUR_MS + 1, "anomaly")
    outside = Raised("d1", "t", T0 + 40 * HOUR_MS, "anomaly")
    f = figures(run_with([inside], [inside, inside, outside], [event]), 1.0, 2.0)
    assert f["critical_precision"] == pytest.approx(2 / 3)
    assert figures(run_with([], [], [event]), 1.0, 2.0)["critical_precision"] is None


def test_every_rate_is_planned_and_a_tiny_fleet_runs_through_the_nodes_path() -> None:
    assert [p.name for p in rate_plans("full")] == ["1hz", "1min", "15min"]
    plan = RatePlan("1hz", 1.0, 1, 0.02, learning_days=0.01)
    [run] = simulate(plan)
    assert len(run.first_ts) == 3 and run.readings >= 3 * 0.02 * 86_400 * 0.9
    assert isinstance(run.pipes[0], Pipeline)
