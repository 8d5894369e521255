"""Dropouts are judged against the site's event time, which one fast clock cannot move."""

from __future__ import annotations

from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.silence import SilenceWatch, dropout_alerts
from pipeline.protocol.causes import DEVICE_METRIC
from pipeline.protocol.topics import is_valid_id


def _fleet(watch: SilenceWatch, devices: int, until_s: int) -> None:
    for t in range(0, until_s + 1, 10):
        for d in range(devices):
            watch.learn_one(f"d{d}", t * 1000, "fridge")


def test_one_device_with_a_clock_ahead_does_not_make_the_others_silent() -> None:
    watch = SilenceWatch(min_silence_ms=30_000)
    _fleet(watch, devices=20, until_s=600)
    watch.learn_one("fast-clock", 600_000 + 120_000, "fridge")  # two minutes ahead
    assert dropout_alerts(AlertPolicy("farm"), watch) == []


def test_a_device_that_stops_is_still_reported_silent() -> None:
    watch = SilenceWatch(min_silence_ms=30_000)
    _fleet(watch, devices=20, until_s=600)
    for t in range(610, 700, 10):
        for d in range(19):  # d19 stopped at 600 s
            watch.learn_one(f"d{d}", t * 1000, "fridge")
    alerts = dropout_alerts(AlertPolicy("farm"), watch)
    assert [a.data.device for a in alerts] == ["d19"]


def test_the_metric_of_a_dropout_alert_is_a_valid_id_for_topics_and_stores() -> None:
    assert is_valid_id(DEVICE_METRIC)
