"""RiverModel: any river anomaly detector, by dotted path, on the edge's alert scale."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.detect.edge_residual import EdgeResidualDetector
from pipeline.detect.registry import choose_detectors, from_choice
from pipeline.detect.river_model import RiverModel, build_river_model, river_hst

HST = "river.anomaly.HalfSpaceTrees"
RAISE_SCORE = 0.8  # the alert policy's default raise threshold


@dataclass
class Choice:
    """One [detect.kinds.*] entry, as pipeline.config holds it."""

    detector: str
    params: dict[str, Any] = field(default_factory=dict)
    preprocess: str | None = None
    preprocess_params: dict[str, Any] = field(default_factory=dict)


def hst() -> RiverModel:
    return river_hst()


def normal_stream(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [20.0 + (i % 7) * 0.1 + rng.gauss(0.0, 0.05) for i in range(n)]


def test_a_spike_raises_and_the_usual_values_do_not() -> None:
    model = hst()
    scores = []
    for value in normal_stream(3000):
        scores.append(model.score_one({"value": value}))
        model.learn_one({"value": value})
    usual = sorted(scores[1000:])
    assert usual[int(0.99 * len(usual))] < RAISE_SCORE
    assert model.score_one({"value": 95.0}) >= RAISE_SCORE


def test_no_score_during_warm_up() -> None:
    model = RiverModel(HST, warmup=50)
    for value in normal_stream(49):
        model.learn_one({"value": value})
    assert model.score_one({"value": 1e6}) == 0.0


def test_scores_stay_in_the_unit_interval_on_extremes() -> None:
    model = hst()
    for value in [*normal_stream(500), 1e300, -1e300, 0.0, *[5.0] * 300]:
        score = model.score_one({"value": value})
        assert 0.0 <= score <= 1.0
        model.learn_one({"value": value})


def test_same_stream_same_scores_and_clone_starts_fresh() -> None:
    a, b = hst(), hst()
    for value in normal_stream(800):
        assert a.score_one({"value": value}) == b.score_one({"value": value})
        a.learn_one({"value": value})
        b.learn_one({"value": value})
    fresh = a.clone()
    assert fresh._get_params() == a._get_params()
    assert fresh.score_one({"value": 95.0}) == 0.0  # nothing learned


def test_a_seed_is_added_when_the_model_takes_one() -> None:
    assert build_river_model(HST).seed == 42  # type: ignore[attr-defined]
    assert build_river_model(HST, {"seed": 7}).seed == 7  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("detector", "params", "preprocess", "message"),
    [
        ("river.anomaly.HalfSpaceTree", {}, None, "has no class 'HalfSpaceTree'"),
        ("os.path.join", {}, None, "nor a river class path"),
        ("river.nothing.Here", {}, None, "no module 'river.nothing'"),
        ("river.preprocessing.StandardScaler", {}, None, "not a river anomaly detector"),
        (HST, {"trees": 3}, None, "unexpected keyword argument 'trees'"),
        (HST, {}, "river.anomaly.HalfSpaceTrees", "not a river transformer"),
        ("edge", {"top_k": 3}, None, "a preset: it takes no params"),
        ("halfspacetrees", {}, None, "not a detector .* nor a river class path"),
        ("river.anomaly.GaussianScorer", {}, None, "not a river anomaly detector"),  # supervised
    ],
)
def test_a_choice_that_cannot_be_built_says_why(
    detector: str, params: dict[str, Any], preprocess: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        from_choice(Choice(detector, params, preprocess))


def test_presets_and_river_models_are_valid_choices() -> None:
    assert isinstance(from_choice(Choice("edge")), EdgeResidualDetector)
    assert isinstance(from_choice(Choice(HST, {"n_trees": 5}, "river.preprocessing.MinMaxScaler")), RiverModel)
    assert isinstance(from_choice(Choice("river.anomaly.OneClassSVM", {}, "river.preprocessing.StandardScaler")), RiverModel)


def test_a_metric_entry_overrides_its_kinds_which_overrides_the_default() -> None:
    new_detector = choose_detectors(
        "edge", {"fridge": Choice(HST), "fridge.power": Choice("zscore")}
    )
    assert isinstance(new_detector("fridge", "temp"), RiverModel)
    assert type(new_detector("fridge", "power")).__name__ == "ZScoreDetector"
    assert isinstance(new_detector("freezer", "temp"), EdgeResidualDetector)
    first, second = new_detector("fridge", "temp"), new_detector("fridge", "temp")
    assert first is not second  # a fresh clone per series
