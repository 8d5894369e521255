"""The edge's detection choices: closest residual, run memory robust to a past stuck episode.

Why each: a reading that the usual time of day explains is ordinary even when the previous
value does not (a daily switch-on), and a sensor that was stuck once must still be caught
the next time; the alert policy's own defaults are the configured ones.
"""

from __future__ import annotations

import random

from pipeline.config import AlertSettings
from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.registry import edge_detector
from pipeline.detect.seasonal import SeasonalResidualDetector
from pipeline.detect.stuck import StuckRun
from pipeline.protocol.causes import DEVICE_METRIC
from pipeline.protocol.topics import is_valid_id

MINUTE = 60_000
T0 = 1_719_792_000_000  # a Monday, 00:00 UTC


def _daily_switch(detector: SeasonalResidualDetector, days: int) -> float:
    """A lamp off until 20:00, then at 100 or 120 (every other day); the next switch-on's score.

    The day profile misses the lamp's level by about 10 each evening, the previous value by
    less than 1, so the predictor with the lowest running error is the previous value.
    """
    rng = random.Random(5)
    for i in range(days * 1440):
        minute, level = i % 1440, 100.0 + 20.0 * (i // 1440 % 2)
        x = (level if minute >= 1200 else 0.0) + round(rng.gauss(0.0, 0.4), 1)
        detector.score_value(x, T0 + i * MINUTE)
        detector.learn_value(x, T0 + i * MINUTE)
    return detector.score_value(100.0, T0 + (days * 1440 + 1200) * MINUTE)


def test_a_daily_switch_the_day_profile_explains_scores_low_with_the_closest_residual() -> None:
    assert _daily_switch(SeasonalResidualDetector(cooldown=0, residual="closest"), 3) < 0.5


def test_a_spike_neither_predictor_explains_still_scores_high_with_the_closest_residual() -> None:
    detector = SeasonalResidualDetector(cooldown=0, residual="closest")
    _daily_switch(detector, 3)
    assert detector.score_value(400.0, T0 + (3 * 1440 + 600) * MINUTE) > 0.9


def test_the_edge_detector_uses_the_closest_residual_and_the_nab_one_does_not() -> None:
    assert edge_detector().residual == "closest"
    assert SeasonalResidualDetector().residual == "best"
    assert edge_detector().clone().residual == "closest"


def test_an_earlier_stuck_episode_does_not_hide_the_next_one() -> None:
    rng = random.Random(3)
    run = StuckRun()

    def noisy(n: int) -> None:
        for _ in range(n):
            run.learn_one(round(20.0 + rng.gauss(0.0, 0.5), 1))

    noisy(2000)
    for _ in range(40):  # stuck once, for 40 readings
        run.learn_one(20.4)
    noisy(2000)
    scores = []
    for _ in range(25):  # stuck again, shorter than the first time
        scores.append(run.score_one(20.2))
        run.learn_one(20.2)
    assert scores[-1] > 0.8


def test_the_alert_policy_defaults_are_the_alert_settings_defaults() -> None:
    policy, settings = AlertPolicy("s"), AlertSettings()
    assert (policy.raise_score, policy.clear_score, policy.raise_after, policy.clear_after) == (
        settings.raise_score,
        settings.clear_score,
        settings.raise_after,
        settings.clear_after,
    )
    assert (policy.cooldown_ms, policy.critical_score) == (
        settings.cooldown_s * 1000,
        settings.critical_score,
    )


def test_the_metric_of_a_dropout_alert_is_a_valid_id_for_topics_and_stores() -> None:
    assert is_valid_id(DEVICE_METRIC)
