"""The multivariate view (``pipeline.detect.linked``): linked metrics and readings that break the link."""

from __future__ import annotations

import random
from collections.abc import Callable

from pipeline.detect.linked import LinkedMetrics
from pipeline.detect.scorer import ReadingScorer
from pipeline.detect.zscore import ZScoreDetector
from pipeline.protocol import Reading
from pipeline.protocol.causes import Cause

T0 = 1_700_000_000_000


def reading(i: int, metrics: dict[str, float], device: str = "d1", kind: str = "k") -> Reading:
    return Reading(v=1, device=device, kind=kind, ts=T0 + i * 60_000, seq=i, metrics=metrics)


def traffic(i: int, rng: random.Random) -> dict[str, float]:
    """Speed falls as vehicles rise: a strong level link."""
    demand = 0.5 + 0.5 * rng.random()
    return {"vehicles": 40.0 * demand + rng.gauss(0, 1), "speed": 90.0 - 60.0 * demand + rng.gauss(0, 1)}


def fridge(i: int, rng: random.Random) -> dict[str, float]:
    """The compressor runs 10 readings in 20; the cabinet cools while it runs, warms otherwise."""
    on = (i // 10) % 2 == 0
    temp = 4.0 + (1.0 - (i % 10) / 5.0 if on else -1.0 + (i % 10) / 5.0) + rng.gauss(0, 0.02)
    return {"temp": temp, "power": (200.0 if on else 6.0) + rng.gauss(0, 1)}


Signal = Callable[[int, random.Random], dict[str, float]]


def learned(make: Signal, n: int = 400, warmup: int = 100, threshold: float = 0.8) -> tuple[LinkedMetrics, int]:
    rng = random.Random(3)
    linked = LinkedMetrics(warmup=warmup, threshold=threshold)
    for i in range(n):
        r = reading(i, make(i, rng))
        linked.score_one(r)
        linked.learn_one(r)
    return linked, n


def test_a_reading_off_the_learned_line_raises_a_relation_score() -> None:
    linked, n = learned(traffic)
    ordinary = linked.score_one(reading(n, {"vehicles": 30.0, "speed": 45.0}))
    accident = linked.score_one(reading(n, {"vehicles": 5.0, "speed": 10.0}))  # few vehicles, and slow
    assert max(ordinary.values(), default=0.0) < 0.5
    assert max(accident.values()) > 0.9


def test_a_fridge_whose_power_runs_while_its_temperature_rises_raises_a_relation_score() -> None:
    linked, n = learned(fridge, threshold=0.6)  # learned |rho| 0.8: the thermostat's switches blur it
    assert n % 20 == 0  # next reading: compressor on, cabinet cooling from 5 °C
    previous = fridge(n - 1, random.Random(0))["temp"]
    cooling = linked.score_one(reading(n, {"temp": previous - 0.2, "power": 200.0}))
    door_open = linked.score_one(reading(n, {"temp": previous + 1.0, "power": 200.0}))
    assert max(cooling.values(), default=0.0) < 0.5
    assert door_open.get("temp", 0.0) > 0.8


def test_unrelated_metrics_never_score_and_are_forgotten() -> None:
    def unrelated(i: int, rng: random.Random) -> dict[str, float]:
        return {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1), "c": rng.expovariate(1.0)}

    linked, n = learned(unrelated)
    assert linked.pairs["d1"] == ()
    assert linked.score_one(reading(n, {"a": 50.0, "b": -50.0, "c": 0.0})) == {}


def test_no_score_during_warm_up() -> None:
    linked, n = learned(traffic, n=150, warmup=200)
    assert linked.score_one(reading(n, {"vehicles": 5.0, "speed": 10.0})) == {}


def test_a_device_with_one_metric_has_no_pairs() -> None:
    linked = LinkedMetrics(warmup=10)
    r = reading(0, {"flow": 1.0})
    assert linked.score_one(r) == {}
    linked.learn_one(r)
    assert linked.pairs["d1"] == ()


def test_the_scorer_names_a_relation_score_as_its_cause() -> None:
    rng = random.Random(3)
    scorer = ReadingScorer(lambda kind, metric: ZScoreDetector(), [LinkedMetrics(warmup=100)])
    for i in range(400):
        scorer.score_one(reading(i, traffic(i, rng)))
    scored = scorer.score_one(reading(400, {"vehicles": 35.0, "speed": 55.0}))  # each ordinary alone
    causes = {metric: (score, cause) for metric, _, score, cause, _ in scored}
    assert any(cause == Cause.RELATION and score > 0.8 for score, cause in causes.values())
