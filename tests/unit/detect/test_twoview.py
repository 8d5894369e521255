"""``TwoViewDetector``: the reading view plus a damped view of the recent mean.

NAB quality is measured by the bench (docs/detection.md), not here: these tests check the
contract (warm-up, range, clone, repr, bad parameters) and the behaviours the mean view adds.
"""

from __future__ import annotations

import math
import random

import pytest

from pipeline.detect.registry import default_detector
from pipeline.detect.seasonal import SeasonalResidualDetector
from pipeline.detect.twoview import TwoViewDetector

STEP_MS = 300_000  # 5-minute readings
T0_MS = 1_700_006_400_000  # a UTC midnight


def replay(
    detector: TwoViewDetector | SeasonalResidualDetector, values: list[float]
) -> list[float]:
    """Score each value, then learn it; timestamps every 5 minutes from a midnight."""
    scores = []
    for i, x in enumerate(values):
        ts = T0_MS + i * STEP_MS
        scores.append(detector.score_value(x, ts))
        detector.learn_value(x, ts)
    return scores


def noisy(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [10.0 + rng.gauss(0.0, 0.5) for _ in range(n)]


def test_no_score_during_warmup() -> None:
    values = noisy(40)
    values[10] = 1e6
    assert replay(TwoViewDetector(warmup=40), values) == [0.0] * 40


def test_scores_stay_in_0_1_with_extreme_and_missing_values() -> None:
    values = noisy(400)
    values[200:210] = [1e300, -1e300, math.nan, math.inf, -math.inf, 0.0, 1e-300, 5.0, 1e9, 10.0]
    scores = replay(TwoViewDetector(warmup=20), values)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_a_spike_scores_high() -> None:
    detector = TwoViewDetector()
    replay(detector, noisy(500))
    assert detector.score_value(30.0, T0_MS + 500 * STEP_MS) > 0.99


def test_without_the_mean_view_it_is_the_reading_view() -> None:
    values = noisy(600)
    values[400] = 20.0
    alone = replay(TwoViewDetector(warmup=120, mean_weight=0.0), values)
    assert alone == replay(SeasonalResidualDetector(warmup=120), values)


def test_the_mean_view_raises_a_rising_spike_density() -> None:
    rng = random.Random(3)
    sparse = [10 + rng.gauss(0, 0.2) + (5.0 if i % 25 == 0 else 0.0) for i in range(2000)]
    dense = [10 + rng.gauss(0, 0.2) + (5.0 if i % 2 == 0 else 0.0) for i in range(60)]
    both = replay(TwoViewDetector(), sparse + dense)[2000:]
    reading_only = replay(TwoViewDetector(mean_weight=0.0), sparse + dense)[2000:]
    assert max(reading_only) < 0.55  # every spike alone is as usual as before
    assert max(both) > 0.57  # the mean of the last 4 readings is not


def test_the_mean_view_never_scores_above_its_weight() -> None:
    # A slow climb after noise: the reading view finds each step ordinary, the mean view
    # sees the mean leave its range, but it can only lift the score up to mean_weight.
    values = noisy(500) + [10.0 + 0.05 * i for i in range(200)]
    both = replay(TwoViewDetector(mean_weight=0.3), values)
    reading_only = replay(TwoViewDetector(mean_weight=0.0), values)
    assert all(s <= max(r, 0.3) for s, r in zip(both, reading_only, strict=True))
    assert both != reading_only


def test_missing_values_do_not_enter_the_mean() -> None:
    values = noisy(400)
    with_gaps = values[:300] + [math.nan] * 5 + values[300:]
    plain, holes = TwoViewDetector(warmup=50), TwoViewDetector(warmup=50)
    scores = [(plain.score_value(x), plain.learn_value(x))[0] for x in values]
    gapped = [(holes.score_value(x), holes.learn_value(x))[0] for x in with_gaps]
    assert gapped[300:305] == [0.0] * 5
    assert gapped[:300] + gapped[305:] == scores


def test_clone_is_untrained_with_the_same_parameters() -> None:
    detector = TwoViewDetector(warmup=30, mean_window=3, mean_weight=0.5)
    trained = replay(detector, noisy(300))
    copy = detector.clone()
    assert repr(copy) == repr(detector)
    assert replay(copy, noisy(300)) == trained


def test_repr_shows_every_parameter() -> None:
    assert repr(TwoViewDetector(warmup=30, mean_window=3, mean_weight=0.5)) == (
        "TwoViewDetector(warmup=30, mean_window=3, mean_weight=0.5)"
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"warmup": 1}, {"mean_window": 0}, {"mean_weight": -0.1}, {"mean_weight": 1.5}],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TwoViewDetector(**kwargs)  # type: ignore[arg-type]


def test_edgepipe_detect_uses_it() -> None:
    assert isinstance(default_detector(), TwoViewDetector)
