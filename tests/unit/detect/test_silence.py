"""Dropouts are judged against the site's event time, which one fast clock cannot move."""

from __future__ import annotations

from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.silence import SilenceWatch, dropout_alerts, heard_again
from pipeline.protocol import Reading
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


def _ticks(watch: SilenceWatch, devices: list[str], start_s: int, until_s: int) -> None:
    for t in range(start_s, until_s + 1, 10):
        for d in devices:
            watch.learn_one(d, t * 1000, "fridge")


def _dropouts_and_clears(device_back_first: bool) -> list[tuple[str, str, int, float]]:
    """d19 is silent from 600 s to 800 s; its readings from 800 s arrive before or after the others'."""
    policy, watch = AlertPolicy("farm"), SilenceWatch(min_silence_ms=30_000)
    _fleet(watch, devices=20, until_s=600)
    events = []

    def d19_again() -> None:
        for t in range(800, 901, 10):
            if watch.learn_one("d19", t * 1000, "fridge"):
                events.extend(dropout_alerts(policy, watch, watch.missed))
                watch.missed.clear()
                cleared = heard_again(policy, Reading(1, "d19", "fridge", t * 1000, t, {"temp": 4.0}))
                events.extend([cleared] if cleared else [])

    if device_back_first:
        d19_again()
    _ticks(watch, [f"d{d}" for d in range(19)], 610, 900)
    events.extend(dropout_alerts(policy, watch))
    if not device_back_first:
        d19_again()
    events.extend(dropout_alerts(policy, watch))
    return sorted((a.data.device, a.data.state, a.data.reading_ts, a.data.value) for a in events)


def test_a_silence_is_the_same_whether_the_device_or_the_others_are_heard_first() -> None:
    assert _dropouts_and_clears(device_back_first=True) == _dropouts_and_clears(device_back_first=False)
    [cleared, raised] = _dropouts_and_clears(device_back_first=True)
    assert (raised[1:3], cleared[1:3]) == (("raised", 645_000), ("cleared", 800_000))


def test_checking_more_often_finds_the_same_silences() -> None:
    found = []
    for every_s in (10, 60, 300):
        watch = SilenceWatch(min_silence_ms=30_000)
        _fleet(watch, devices=20, until_s=600)
        silences = []
        for start in range(610, 1200, every_s):
            _ticks(watch, [f"d{d}" for d in range(19)], start, min(start + every_s - 10, 1200))
            silences += [(s.device, s.at, s.silent_ms) for s in watch.due()]
        found.append(silences)
    assert found[0] == found[1] == found[2] and len(found[0]) == 1
