"""The simulated-data quality scorer: alerts matched to label windows, by hand-made cases.

Why: every ``quality.sim.*`` figure rests on this matching; a wrong rule would make the
bench flatter or harsher than the alerts users actually see.
"""

from __future__ import annotations

from pipeline.detect.labels import Event, Raised, match_alerts

INTERVAL = 60_000  # one reading a minute
EVENTS = [
    Event("d1", ("temp",), "spike", 600_000, 720_000),
    Event("d1", ("temp",), "level_shift", 3_000_000, 3_600_000),
    Event("d2", ("temp", "door", "power"), "dropout", 600_000, 900_000),
]


def test_an_alert_inside_a_window_detects_its_event() -> None:
    m = match_alerts(EVENTS, [Raised("d1", "temp", 660_000, "anomaly")], INTERVAL, 5)
    assert (m.detected, m.false_alarms) == (1, 0)


def test_an_event_without_an_alert_is_a_miss() -> None:
    m = match_alerts(EVENTS, [Raised("d1", "temp", 660_000, "anomaly")], INTERVAL, 5)
    assert m.events - m.detected == 2
    assert m.by_anomaly["level_shift"] == [1, 0]


def test_an_alert_outside_every_window_is_a_false_alarm() -> None:
    m = match_alerts(EVENTS, [Raised("d1", "temp", 2_000_000, "stuck")], INTERVAL, 5)
    assert (m.detected, m.false_alarms, m.false_by_cause) == (0, 1, {"stuck": 1})


def test_an_alert_on_another_metric_or_device_does_not_count() -> None:
    m = match_alerts(EVENTS, [Raised("d1", "door", 660_000, "anomaly"), Raised("d3", "temp", 660_000, "anomaly")], INTERVAL, 5)
    assert (m.detected, m.false_alarms) == (0, 2)


def test_the_delay_counts_readings_from_the_window_start_to_the_first_alert() -> None:
    alerts = [Raised("d1", "temp", 3_180_000, "anomaly"), Raised("d1", "temp", 3_300_000, "anomaly")]
    m = match_alerts(EVENTS, alerts, INTERVAL, 5)
    assert (m.detected, m.false_alarms, m.delays) == (1, 0, [3])


def test_the_grace_period_after_a_window_still_counts() -> None:
    """The return from a level shift happens on the first reading after the window."""
    inside = match_alerts(EVENTS, [Raised("d1", "temp", 3_600_000 + 5 * INTERVAL, "anomaly")], INTERVAL, 5)
    outside = match_alerts(EVENTS, [Raised("d1", "temp", 3_600_000 + 6 * INTERVAL, "anomaly")], INTERVAL, 5)
    assert (inside.detected, outside.detected, outside.false_alarms) == (1, 0, 1)


def test_a_device_level_dropout_alert_matches_any_metric() -> None:
    m = match_alerts(EVENTS, [Raised("d2", "_device", 780_000, "dropout")], INTERVAL, 5)
    assert (m.detected, m.delays) == (1, [3])


def test_figures_follow_from_the_counts() -> None:
    alerts = [Raised("d1", "temp", 660_000, "anomaly"), Raised("d1", "temp", 2_000_000, "anomaly")]
    f = match_alerts(EVENTS, alerts, INTERVAL, 5).figures(device_days=2.0)
    assert (f["precision"], round(f["recall"], 4), f["false_alarms_per_device_day"]) == (0.5, 0.3333, 0.5)
    assert round(f["f1"], 4) == 0.4
