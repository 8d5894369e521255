"""The contract every registered detector keeps, whatever it computes (river's generic checks, our way).

Parametrised over ``DETECTORS``: a new entry is checked without a line here.
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable

import pytest
from river.base import AnomalyDetector

from pipeline.detect.base import ValueDetector
from pipeline.detect.features import TS_MS, VALUE
from pipeline.detect.registry import DETECTORS

T0_MS = 1_719_792_000_000  # Monday 1 July 2024, 00:00 UTC
MINUTE_MS = 60_000
RAISE_SCORE = 0.8  # the alert policy's default (pipeline.config AlertSettings.raise_score)

NAMES = sorted(DETECTORS)


def stream(n: int, seed: int = 3) -> list[dict[str, float]]:
    """A daily pattern with noise and a few spikes, one reading a minute."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0_MS + i * MINUTE_MS
        value = 20.0 + 5.0 * math.sin(2 * math.pi * (i % 1440) / 1440) + rng.gauss(0.0, 0.3)
        if i % 997 == 500:
            value += 15.0
        out.append({VALUE: round(value, 2), TS_MS: ts})
    return out


def scores_of(detector: ValueDetector, xs: list[dict[str, float]]) -> list[float]:
    out = []
    for x in xs:
        out.append(detector.score_one(x))
        detector.learn_one(x)
    return out


@pytest.fixture(params=NAMES)
def make(request: pytest.FixtureRequest) -> Callable[[], ValueDetector]:
    return DETECTORS[request.param]


def test_every_detector_is_a_river_anomaly_detector(make: Callable[[], ValueDetector]) -> None:
    d = make()
    assert isinstance(d, AnomalyDetector)
    assert isinstance(d, ValueDetector)


def test_it_learns_and_scores_a_stream_within_0_and_1(make: Callable[[], ValueDetector]) -> None:
    scores = scores_of(make(), stream(3000))
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(scores[1000:]) >= RAISE_SCORE  # the spikes would raise alerts once learned


def test_the_dict_api_and_the_value_api_agree(make: Callable[[], ValueDetector]) -> None:
    xs = stream(2000)
    by_dict = scores_of(make(), xs)
    d = make()
    by_value = []
    for x in xs:
        by_value.append(d.score_value(x[VALUE], int(x[TS_MS])))
        d.learn_value(x[VALUE], int(x[TS_MS]))
    assert by_dict == by_value


def test_clone_has_the_same_params_and_a_fresh_state(make: Callable[[], ValueDetector]) -> None:
    xs = stream(2000)
    trained = make()
    scores_of(trained, xs)
    clone = trained.clone()
    assert clone._get_params() == make()._get_params() == trained._get_params()
    assert repr(clone) == repr(trained)
    assert scores_of(clone, xs) == scores_of(make(), xs)


def test_two_instances_score_a_stream_identically(make: Callable[[], ValueDetector]) -> None:
    xs = stream(3000, seed=9)
    assert scores_of(make(), xs) == scores_of(make(), xs)


def test_memory_does_not_grow_with_the_stream(make: Callable[[], ValueDetector]) -> None:
    """A bounded-variety stream: the state after 50k readings is no larger than after 10k."""
    xs = stream(50_000)
    short, long = make(), make()
    scores_of(short, xs[:10_000])
    scores_of(long, xs)
    assert len(pickle.dumps(long)) <= len(pickle.dumps(short)) * 1.05


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([1e300, -1e300] * 200, id="huge-alternating"),
        pytest.param([0.0] * 400, id="zeros"),
        pytest.param([7.5] * 400, id="constant"),
        pytest.param([0.0] * 200 + [1e12] * 200, id="huge-jump"),
        pytest.param([float(i % 2) * 1e-300 for i in range(400)], id="tiny"),
    ],
)
def test_no_exception_and_scores_in_range_on_extremes(make: Callable[[], ValueDetector], values: list[float]) -> None:
    xs = [{VALUE: v, TS_MS: T0_MS + i * MINUTE_MS} for i, v in enumerate(values)]
    scores = scores_of(make(), xs)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_time_is_optional(make: Callable[[], ValueDetector]) -> None:
    scores = scores_of(make(), [{VALUE: x[VALUE]} for x in stream(1000)])
    assert all(0.0 <= s <= 1.0 for s in scores)


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_detector_class_of_the_package_is_registered() -> None:
    """A ``ValueDetector`` in ``pipeline/detect/`` that no registry entry makes is unchecked: register it."""
    import importlib
    import pkgutil

    import pipeline.detect

    for module in pkgutil.iter_modules(pipeline.detect.__path__):
        importlib.import_module(f"pipeline.detect.{module.name}")
    ours = {c for c in _subclasses(ValueDetector) if c.__module__.startswith("pipeline.detect.")}
    made = {type(make()) for make in DETECTORS.values()}
    assert ours - made == set()
