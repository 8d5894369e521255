"""Alerts: raised once, cleared with hysteresis, quiet during cooldown, escalated by severity."""

from __future__ import annotations

import random

import pytest

from pipeline.config import AlertSettings
from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.point import Point
from pipeline.detect.stages import StageContext
from pipeline.detect.stuck import StuckWatch
from pipeline.protocol import Alert, decode, encode
from pipeline.protocol.causes import Cause
from pipeline.tail import format_alert


def pt(ts: int, score: float, device: str = "d1", metric: str = "temp") -> Point:
    return Point(device, "fridge", metric, ts, ts, 4.0, score)


def states(policy: AlertPolicy, scores: list[float], start: int = 0) -> list[str | None]:
    out = []
    for i, score in enumerate(scores):
        alert = policy.update_one(pt(start + i * 1000, score))
        out.append(None if alert is None else alert.data.state)
    return out


def test_one_hot_reading_is_not_enough_when_two_are_required() -> None:
    policy = AlertPolicy("s", raise_after=2)
    assert states(policy, [0.9999, 0.1, 0.9999, 0.1]) == [None, None, None, None]


def test_a_lasting_anomaly_raises_exactly_once() -> None:
    policy = AlertPolicy("s", raise_after=2, critical_score=1.0)
    assert states(policy, [0.9999] * 6) == [None, "raised", None, None, None, None]
    assert policy.open_alerts == 1


def test_a_score_between_the_thresholds_neither_raises_nor_clears() -> None:
    policy = AlertPolicy("s", raise_after=1, clear_after=2, clear_after_ms=0)
    assert states(policy, [0.9999, 0.97, 0.97, 0.97]) == ["raised", None, None, None]


def test_it_clears_after_enough_calm_readings() -> None:
    policy = AlertPolicy("s", raise_after=1, clear_after=3, clear_after_ms=0)
    assert states(policy, [0.9999, 0.1, 0.1, 0.1]) == ["raised", None, None, "cleared"]
    assert policy.open_alerts == 0


def test_no_new_raise_during_cooldown() -> None:
    policy = AlertPolicy("s", raise_after=1, clear_after=1, clear_after_ms=0, cooldown_ms=5000)
    assert states(policy, [0.9999, 0.1, 0.9999, 0.9999, 0.9999, 0.9999, 0.9999, 0.9999]) == [
        "raised", "cleared", None, None, None, None, "raised", None,
    ]


def test_rising_severity_raises_again_under_the_same_alert_id() -> None:
    policy = AlertPolicy("s", raise_after=1, critical_score=0.99999)
    first = policy.update_one(pt(0, 0.9991))
    second = policy.update_one(pt(1000, 0.999999))
    assert first is not None and second is not None
    assert (first.data.severity, second.data.severity) == ("warning", "critical")
    assert first.data.alert_id == second.data.alert_id


def test_series_are_independent() -> None:
    policy = AlertPolicy("s", raise_after=1)
    assert policy.update_one(pt(0, 0.9999, device="a")) is not None
    assert policy.update_one(pt(0, 0.9999, device="b")) is not None
    assert policy.update_one(pt(0, 0.9999, device="a", metric="power")) is not None
    assert policy.open_alerts == 3


def test_an_alert_is_a_cloudevent_that_round_trips() -> None:
    alert = AlertPolicy("farm", raise_after=1).update_one(pt(1_795_000_000_123, 0.9999))
    assert alert is not None
    assert (alert.specversion, alert.type, alert.subject) == ("1.0", "io.edgepipe.alert.raised", "d1")
    assert alert.time == "2026-11-18T11:06:40.123Z"
    assert decode(encode(alert), Alert) == alert


@pytest.mark.parametrize(
    "kwargs",
    [{"raise_score": 0.9, "clear_score": 0.95}, {"raise_after": 0}, {"cooldown_ms": -1}],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AlertPolicy("s", **kwargs)  # type: ignore[arg-type]


def test_the_alert_policy_defaults_are_the_alert_settings_defaults() -> None:
    policy, settings = AlertPolicy("s"), AlertSettings()
    assert (policy.raise_score, policy.clear_score, policy.raise_after, policy.clear_after) == (
        settings.raise_score,
        settings.clear_score,
        settings.raise_after,
        settings.clear_after,
    )
    assert (policy.cooldown_ms, policy.critical_score, policy.clear_after_ms) == (
        settings.cooldown_s * 1000,
        settings.critical_score,
        settings.clear_after_s * 1000,
    )


def test_an_alert_clears_after_the_same_quiet_time_at_any_reporting_rate() -> None:
    """Hysteresis in event time: at 1 Hz five calm readings are five seconds, not an episode's end."""

    def cleared_after_s(interval_s: float) -> float:
        policy = AlertPolicy("s")  # the settings' defaults: 2 readings and 240 s
        step_ms = round(interval_s * 1000)
        policy.update_one(Point("d", "k", "m", 0, 0, 1.0, 0.9999))
        for i in range(1, 10_000):
            alert = policy.update_one(Point("d", "k", "m", i * step_ms, i, 1.0, 0.1))
            if alert is not None:
                return (i - 1) * interval_s  # from the first calm reading
        raise AssertionError("never cleared")

    assert cleared_after_s(1.0) == cleared_after_s(60.0) == 240.0
    assert cleared_after_s(900.0) == 900.0  # two readings at the least


MINUTE_MS = 60_000


T0_MS = 1_795_737_600_000


# -- what a person reads of an alert: a stuck sensor says for how long; `edgepipe alerts`
# prints one line per alert with the score once.

def stuck_alert(stuck_minutes: int) -> tuple[Alert, int]:
    """A noisy temperature read every minute, then stuck on one value: (the raise, when it stuck)."""
    rng = random.Random(3)
    watch, policy = StuckWatch(), AlertPolicy("farm")
    key = ("fridge-1", "temp")
    ts = T0_MS
    values = [round(20.0 + rng.gauss(0.0, 0.5), 1) for _ in range(2000)]
    stuck_value = 20.0 if values[-1] != 20.0 else 20.1  # inside the range, a new run
    for x in values + [stuck_value] * stuck_minutes:
        ctx = StageContext("fridge-1", "fridge", "temp", x, ts, {"temp": x}, key)
        score, cause = watch.adjust_one(ctx, 0.0, Cause.ANOMALY)
        detail = watch.describe(ctx) if cause is Cause.STUCK else ""
        alert = policy.update_one(Point("fridge-1", "fridge", "temp", ts, 0, x, score), cause, detail)
        if alert is not None and alert.data.state == "raised":
            return alert, T0_MS + len(values) * MINUTE_MS
        ts += MINUTE_MS
    raise AssertionError("the stuck value raised no alert")


def test_a_stuck_alert_says_how_long_the_value_has_not_changed() -> None:
    alert, stuck_since = stuck_alert(stuck_minutes=120)
    minutes = (alert.data.reading_ts - stuck_since) // MINUTE_MS
    assert alert.data.reason.startswith(f"{Cause.STUCK}: value 20 unchanged for {minutes} min (")
    assert f"({minutes + 1} readings; usually at most " in alert.data.reason


def test_a_raised_reason_gives_the_threshold_not_the_score_again() -> None:
    policy = AlertPolicy("farm", raise_score=0.8)
    alert = policy.update_one(Point("d1", "fridge", "temp", T0_MS, 0, 9.5, 0.93))
    assert alert is not None
    assert alert.data.reason == "anomaly: score >= 0.8"


def test_an_alert_line_shows_each_field_once_in_order() -> None:
    alert, _ = stuck_alert(stuck_minutes=120)
    d = alert.data
    line = format_alert(alert)
    assert "\n" not in line
    fields = [alert.time, f"{d.site}/{d.device}", f"{d.metric}={d.value:g}", d.severity.upper(),
              d.state, f"score {d.score:.2f}", d.reason]
    positions = [line.index(f) for f in fields]
    assert positions == sorted(positions)
    assert line.count("score") == 1 + d.reason.count("score")  # the score once, as a field
    assert d.model_version not in line
