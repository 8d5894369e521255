"""Edge detectors: the score_one-then-learn_one contract, score ranges and behaviour.

The default detector (``SeasonalResidualDetector``) is checked on synthetic series whose
answer is known: a spike, a level shift that becomes the new normal, a missing daily peak.
NAB quality is measured by the bench (docs/detection.md), not here.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detect.registry import default_detector, edge_detector
from pipeline.detect.seasonal import SeasonalResidualDetector
from pipeline.detect.zscore import ZScoreDetector

STEP_MS = 300_000  # 5-minute readings
DAY = 288  # readings per day
T0_MS = 1_700_006_400_000  # a UTC midnight
ALERT = 1.2**2 / (1 + 1.2**2)  # score at the default alert_ratio, 0.59


def replay(
    detector: SeasonalResidualDetector | ZScoreDetector, values: list[float], with_time: bool = True
) -> list[float]:
    """Score each value, then learn it; timestamps every 5 minutes from a midnight."""
    scores = []
    for i, x in enumerate(values):
        ts = T0_MS + i * STEP_MS if with_time else None
        scores.append(detector.score_value(x, ts))
        detector.learn_value(x, ts)
    return scores


def noisy(n: int, seed: int = 1, level: float = 10.0, sigma: float = 0.5) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sigma) for _ in range(n)]


@pytest.mark.parametrize("with_time", [True, False])
def test_no_score_during_warmup(with_time: bool) -> None:
    detector = SeasonalResidualDetector(warmup=50)
    values = noisy(50)
    values[30] = values[49] = 1e6  # wild values inside the warm-up: still no score
    assert replay(detector, values, with_time) == [0.0] * 50
    assert detector.score_value(1e9) > 0.99  # the first real score


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=300,
    )
)
def test_scores_stay_in_0_1(values: list[float]) -> None:
    scores = replay(SeasonalResidualDetector(warmup=5), values)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_extreme_and_missing_values_keep_scores_in_range() -> None:
    detector = SeasonalResidualDetector(warmup=5)
    scores = replay(detector, [0.0] * 20 + [math.inf, 1e308, -1e308, 0.0])
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert detector.score_value(math.nan) == 0.0
    detector.learn_value(math.nan)  # ignored, not learned
    assert detector.score_value(0.0) <= 1.0


def test_a_spike_scores_high() -> None:
    values = noisy(1000)
    values[800] = 25.0
    scores = replay(SeasonalResidualDetector(cooldown=0), values)
    assert scores[800] > 0.99
    assert max(scores[300:800]) < 0.8 < scores[800]  # from 300 on, the memory has grown


def test_a_level_shift_alerts_then_becomes_the_new_normal() -> None:
    values = noisy(800) + noisy(1200, seed=2, level=20.0)
    scores = replay(SeasonalResidualDetector(cooldown=0), values)
    assert scores[800] > 0.99  # the jump
    # Two more readings stand out while the time-of-day profile (the best predictor of
    # plain noise) still expects 10; then the previous value predicts, and 20 is normal.
    assert max(scores[805:]) < 0.8
    assert sum(scores[1000:]) / len(scores[1000:]) < 0.2


def test_false_alarms_on_gaussian_noise_are_rare_above_0_8() -> None:
    """The NAB-tuned operating point (s >= 0.59) alerts on ~1 in 1 000 noise readings; the
    edge should alert from s >= 0.8 (a residual twice the top_k-th largest), which noise
    practically never reaches once the residual memory has grown."""
    scores = replay(SeasonalResidualDetector(), noisy(20_000, seed=1))
    assert sum(s >= 0.8 for s in scores[2000:]) == 0
    assert sum(s >= ALERT for s in scores[5000:]) < 40


def test_the_cooldown_damps_the_readings_after_an_alert() -> None:
    values = noisy(600)
    values[500] = values[502] = 30.0
    damped = replay(SeasonalResidualDetector(cooldown=30), values)
    plain = replay(SeasonalResidualDetector(cooldown=0), values)
    assert damped[500] == plain[500] > 0.99
    assert damped[502] == pytest.approx(plain[502] * 0.5)
    assert damped[560] == plain[560]  # cooldown over, same state again


def test_a_missing_daily_peak_needs_the_time_of_day() -> None:
    """Twenty days of a daily plateau (08:00 to 16:00); on day 18 it does not come."""
    rng = random.Random(7)
    values = []
    for i in range(20 * DAY):
        day, slot = divmod(i, DAY)
        high = 96 <= slot < 192 and day != 18
        values.append(50.0 + 30.0 * high + rng.gauss(0.0, 1.0))
    missing = slice(18 * DAY + 96, 18 * DAY + 192)
    with_time = replay(SeasonalResidualDetector(), values)
    assert max(with_time[missing]) > 0.95
    assert max(with_time[missing]) > max(with_time[10 * DAY : 18 * DAY])
    without_time = replay(SeasonalResidualDetector(), values, with_time=False)
    assert max(without_time[missing]) < 0.5  # the previous value alone cannot see it


def test_scores_are_deterministic_and_clone_is_untrained() -> None:
    values = noisy(700, seed=3)
    values[650] = 15.0
    detector = SeasonalResidualDetector(top_k=5, cooldown=10)
    first = replay(detector, values)
    fresh = detector.clone()
    assert repr(fresh) == repr(detector)
    assert replay(fresh, values) == first
    assert replay(default_detector(), values) == replay(default_detector(), values)


def test_repr_shows_every_hyperparameter() -> None:
    detector = SeasonalResidualDetector(warmup=10, top_k=3, forget=0.0, cooldown=0)
    rebuilt = eval(repr(detector), {"SeasonalResidualDetector": SeasonalResidualDetector})  # noqa: S307
    assert vars(rebuilt).keys() == vars(detector).keys()
    assert repr(rebuilt) == repr(detector)


def test_the_edge_call_without_timestamps_still_works() -> None:
    for detector in (SeasonalResidualDetector(warmup=5), ZScoreDetector(warmup=5)):
        for x in noisy(20):
            assert 0.0 <= detector.score_value(x) <= 1.0
            detector.learn_value(x)


def test_regression_guard_on_a_small_synthetic_series() -> None:
    """Behaviour pinned on a fixed series: which readings alert, and the score total.

    If a deliberate change moves these, re-measure NAB (docs/detection.md) and update them.
    """
    rng = random.Random(42)
    values = []
    for i in range(3 * DAY):
        slot = i % DAY
        values.append(20.0 + 10.0 * math.sin(2 * math.pi * slot / DAY) + rng.gauss(0.0, 0.8))
    values[400] += 12.0  # a spike
    for i in range(700, 3 * DAY):  # a level shift that stays
        values[i] += 8.0
    scores = replay(SeasonalResidualDetector(), values)
    alerts = [i for i, s in enumerate(scores) if s >= ALERT]
    assert alerts == EXPECTED_ALERTS
    assert round(sum(scores), 4) == EXPECTED_TOTAL


EXPECTED_ALERTS = [102, 133, 164, 208, 400, 556, 700]  # early ones: a young residual memory
EXPECTED_TOTAL = 92.7245


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup": 1},
        {"top_k": 0},
        {"forget": -0.1},
        {"forget": 1.0},
        {"error_alpha": 0.0},
        {"error_alpha": 1.5},
        {"season_alpha": 0.0},
        {"day_bin_s": 7},
        {"day_bin_s": 0},
        {"week_bin_s": 1000},
        {"range_margin": 0.0},
        {"alert_ratio": 0.0},
        {"cooldown": -1},
        {"cooldown_factor": 1.5},
    ],
)
def test_bad_hyperparameters_are_refused_with_a_clear_message(kwargs: dict[str, float]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        SeasonalResidualDetector(**kwargs)  # type: ignore[arg-type]


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
