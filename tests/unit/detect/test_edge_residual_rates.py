"""The edge detector gives the same verdicts whatever rate a device reports at.

Its forgetting, warm-up and memory counts are stated per minute of event time
(``EDGE_REFERENCE_INTERVAL_S``), not per reading: a sensor read every second must not forget
yesterday's dawn within three hours, as it did when the memory forgot 1e-4 per reading
(every 10 lx step of a light sensor at dawn raised an alert; issue 19).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pytest

from pipeline.detect.registry import edge_detector

DAY_S = 86_400
RAISE_SCORE = 0.8  # the alert policy's default raise score
MAX_RAISES = 2  # over the two days counted: at most one a day (it was thousands at 1 Hz)


def daylight_lx(t_s: float) -> float:
    """0 at night, a smooth day up to 40,000 lx, 1 % noise, on the sensor's 10 lx grid."""
    hour = t_s % DAY_S / 3600
    sun = max(0.0, math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0
    rng = random.Random(int(t_s))
    return round(40_000 * sun * (1 + 0.01 * rng.gauss(0, 1)) / 10) * 10


def visitors_gauge(interval_s: float) -> Callable[[float], float]:
    """A footfall counter's visitors-per-minute gauge, read every ``interval_s``: Poisson
    around an opening-hours profile (08:00-20:00, peak 25 at 14:00), 0 at night."""
    rng = np.random.default_rng(5)

    def series(t_s: float) -> float:
        hour = t_s % DAY_S / 3600
        mean = 25.0 * math.sin(math.pi * (hour - 8) / 12) if 8 <= hour < 20 else 0.0
        return float(rng.poisson(mean)) if mean > 0 else 0.0

    return series


def raises_after_the_first_day(series: Callable[[float], float], interval_s: float, days: float = 3.0) -> int:
    detector = edge_detector()
    start_ms = 1_719_792_000_000
    raised = 0
    for i in range(int(days * DAY_S / interval_s)):
        t_s = i * interval_s
        x = series(t_s)
        ts = start_ms + int(t_s * 1000)
        score = detector.score_value(x, ts)
        detector.learn_value(x, ts)
        if t_s >= DAY_S and score >= RAISE_SCORE:
            raised += 1
    return raised


@pytest.mark.parametrize("interval_s", [1.0, 60.0], ids=["1hz", "1min"])
def test_dawn_on_a_light_sensor_is_not_an_anomaly_at_any_rate(interval_s: float) -> None:
    assert raises_after_the_first_day(daylight_lx, interval_s) <= MAX_RAISES


@pytest.mark.parametrize("interval_s", [1.0, 60.0], ids=["1hz", "1min"])
def test_ordinary_visitor_counts_are_not_anomalies_at_any_rate(interval_s: float) -> None:
    assert raises_after_the_first_day(visitors_gauge(interval_s), interval_s) <= MAX_RAISES


@pytest.mark.parametrize("interval_s", [1.0, 60.0, 900.0], ids=["1hz", "1min", "15min"])
def test_a_level_jump_is_found_at_every_rate(interval_s: float) -> None:
    detector = edge_detector()
    start_ms = 1_719_792_000_000
    rng = random.Random(3)
    steps = int(3 * DAY_S / interval_s)
    scores = []
    for i in range(steps + 3):
        x = 20.0 + 0.1 * rng.gauss(0, 1) + (5.0 if i >= steps else 0.0)
        ts = start_ms + int(i * interval_s * 1000)
        scores.append(detector.score_value(x, ts))
        detector.learn_value(x, ts)
    assert max(scores[steps:]) >= RAISE_SCORE
