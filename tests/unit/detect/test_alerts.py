"""Alerts: raised once, cleared with hysteresis, quiet during cooldown, escalated by severity."""

from __future__ import annotations

import pytest

from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.point import Point
from pipeline.protocol import Alert, decode, encode


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
    policy = AlertPolicy("s", raise_after=1, clear_after=2)
    assert states(policy, [0.9999, 0.97, 0.97, 0.97]) == ["raised", None, None, None]


def test_it_clears_after_enough_calm_readings() -> None:
    policy = AlertPolicy("s", raise_after=1, clear_after=3)
    assert states(policy, [0.9999, 0.1, 0.1, 0.1]) == ["raised", None, None, "cleared"]
    assert policy.open_alerts == 0


def test_no_new_raise_during_cooldown() -> None:
    policy = AlertPolicy("s", raise_after=1, clear_after=1, cooldown_ms=5000)
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
