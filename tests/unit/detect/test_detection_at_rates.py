"""The node's detection on normal data at the rates devices report at: few alarms at any rate.

Every other detection test steps one or five minutes between readings; at 1 Hz the node's
own path once raised about 230 false alarms per device-day on clean data while the suite
stayed green (issue 19). These run the simulators' fleets *without anomalies* through
``pipeline.detect.detection.build`` (the node's and the bench's path, default settings) at
1 Hz, one reading a minute and one per 15 minutes, and bound what a user would see:

* after the first simulated day (learned): at most ``LEARNED_ALARMS_PER_DEVICE_DAY``;
* on the first day, cold, from the first reading: at most ``COLD_ALARMS_PER_DEVICE``.

The bench measures the same with anomalies (``edgepipe bench --quality``, keys
``quality.sim.rate_*``); these are the specification's floor, on one fixed seed and date.
"""

from __future__ import annotations

import math
import random

import pytest

from pipeline.bench.quality import builtin_priors, ours
from pipeline.bench.rates import RatePlan, SimRun, figures, simulate
from pipeline.config import AlertSettings
from pipeline.detect.detection import build
from pipeline.protocol import Alert, Reading

LEARNED_ALARMS_PER_DEVICE_DAY = 0.5  # the target is 0.2 with anomalies, on larger fleets
COLD_ALARMS_PER_DEVICE = 1.0

# (name, seconds between readings, devices per site, simulated days): about 10^5 readings each
PLANS = [("1hz", 1.0, 1, 1.25), ("1min", 60.0, 6, 3.0), ("15min", 900.0, 15, 6.0)]


VARIANTS = {"defaults": ours, "builtin_priors": builtin_priors}  # the node's defaults; edgepipe demo's priors


@pytest.fixture(scope="module", params=PLANS, ids=[p[0] for p in PLANS])
def clean_runs(request: pytest.FixtureRequest) -> dict[str, SimRun]:
    name, interval_s, devices, days = request.param
    plan = RatePlan(name, interval_s, devices, days, seed=5, anomaly_rate=0.0)
    runs = dict(zip(VARIANTS, simulate(plan, *VARIANTS.values()), strict=True))
    assert runs["defaults"].events == []  # clean data: every alert is a false alarm
    return runs


@pytest.fixture(params=list(VARIANTS))
def clean_run(request: pytest.FixtureRequest, clean_runs: dict[str, SimRun]) -> tuple[RatePlan, dict[str, float | None], dict[str, float | None]]:
    run = clean_runs[request.param]
    plan = run.plan
    return plan, figures(run, plan.learning_days, plan.days), figures(run, 0.0, 1.0)


def test_a_learned_node_raises_few_alarms_on_normal_data_at_any_rate(clean_run) -> None:  # type: ignore[no-untyped-def]
    plan, learned, _ = clean_run
    assert learned["alerts_per_device_day"] is not None
    assert learned["alerts_per_device_day"] <= LEARNED_ALARMS_PER_DEVICE_DAY, plan.name


def test_a_cold_node_raises_at_most_one_alarm_per_device_on_its_first_day_at_any_rate(clean_run) -> None:  # type: ignore[no-untyped-def]
    plan, _, cold = clean_run
    assert cold["alerts_per_device_day"] is not None
    assert cold["alerts_per_device_day"] <= COLD_ALARMS_PER_DEVICE, plan.name


# --- one series at 1 Hz and at one reading a minute: the same alerts --------------------

DAY_MS = 86_400_000
T0_MS = 1_719_792_000_000  # Monday 1 July 2024, 00:00 UTC


def _temperature(ts_ms: int, rng: random.Random) -> float:
    """A soil temperature: a daily swing of 5 °C, sensor noise, 0.1 °C resolution."""
    day_phase = 2 * math.pi * (ts_ms % DAY_MS) / DAY_MS
    return round(20.0 + 5.0 * math.sin(day_phase) + rng.gauss(0.0, 0.15), 1)


def _alerts(interval_s: float, spike_at_ms: int, stuck_from_ms: int, stuck_ms: int) -> list[Alert]:
    """Two learned days of one probe, a +4 °C spike, later a value stuck; every alert opened (not escalations)."""
    detection = build("farm", AlertSettings())
    rng = random.Random(7)
    raised: list[Alert] = []
    step_ms = round(interval_s * 1000)
    frozen: float | None = None
    for i in range(round(3 * DAY_MS / step_ms)):
        ts = T0_MS + i * step_ms
        value = _temperature(ts, rng)
        if ts == spike_at_ms:
            value += 4.0
        if stuck_from_ms <= ts < stuck_from_ms + stuck_ms:
            frozen = value if frozen is None else frozen
            value = frozen
        _, alerts = detection.observe(Reading(1, "soil_probe-0001", "soil_probe", ts, i, {"soil_temp": value}))
        raised.extend(a for a in alerts if a.data.alert_id == f"farm.soil_probe-0001.soil_temp.{ts}")
    return raised


@pytest.mark.parametrize("interval_s", [1.0, 60.0], ids=["1hz", "1min"])
def test_a_spike_and_a_stuck_sensor_raise_the_same_alerts_at_1hz_and_at_one_a_minute(interval_s: float) -> None:
    spike_at = T0_MS + 2 * DAY_MS + 6 * 3_600_000  # 06:00 on the third day
    stuck_from, stuck_ms = T0_MS + 2 * DAY_MS + 14 * 3_600_000, 90 * 60_000  # 14:00, 90 minutes
    raised = _alerts(interval_s, spike_at, stuck_from, stuck_ms)
    learned = [a for a in raised if a.data.reading_ts >= T0_MS + DAY_MS]
    causes = [(a.data.reading_ts, a.data.reason.split(":")[0]) for a in learned]
    assert (spike_at, "anomaly") in causes  # on the spike's own reading
    stuck = [ts for ts, cause in causes if cause == "stuck"]
    assert len(stuck) == 1 and stuck_from < stuck[0] < stuck_from + stuck_ms
    assert len(learned) == 2, causes  # nothing else after the first day
