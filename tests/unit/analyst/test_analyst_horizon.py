"""HorizonDetector, specified: a device against its own previous days at the same hour."""

from __future__ import annotations

import random

import pytest
from fleetkit import MINUTE_MS, T0

from pipeline.analyst.horizon import HorizonDetector, HorizonScore
from pipeline.protocol import Aggregate

DAY = 1440


def agg(i: int, value: float) -> Aggregate:
    start = T0 + i * MINUTE_MS
    return Aggregate(1, "farm", "p1", "soil_probe", "moisture", start, start + MINUTE_MS, 1, value, value, value, 0.0, value, 0)


def daily(i: int, rng: random.Random) -> float:
    """A series that repeats each day hour by hour (12 units of swing), plus noise."""
    return 20.0 + 6.0 * ((i // 60) % 24 >= 12) + (i % 1440) / 240 + rng.gauss(0.0, 0.2)


def run(det: HorizonDetector, first: int, last: int, shift: float = 0.0, seed: int = 5) -> list[HorizonScore | None]:
    rng = random.Random(seed * 7919 + first)
    return [det.update_one(agg(i, daily(i, rng) + shift)) for i in range(first, last)]


def test_before_a_previous_day_exists_there_is_no_verdict() -> None:
    assert run(HorizonDetector(step=0.1), 0, DAY) == [None] * DAY


def test_a_day_like_the_days_before_raises_nothing() -> None:
    det = HorizonDetector(step=0.1)
    scores = run(det, 0, 3 * DAY)

    assert max(s.score for s in scores[DAY:] if s is not None) < 0.8


def test_a_level_its_own_previous_days_never_had_at_this_hour_is_alerted() -> None:
    det = HorizonDetector(step=0.1)
    run(det, 0, 3 * DAY)
    scores = run(det, 3 * DAY, 3 * DAY + 30, shift=2.0)

    assert scores[-1] is not None and scores[-1].score >= 0.8
    assert "previous 3 day(s)" in scores[-1].detail


def test_a_held_window_scores_nothing_and_does_not_enter_the_profile() -> None:
    det = HorizonDetector(step=0.1)
    run(det, 0, 2 * DAY)
    rng = random.Random(1)
    held = [det.update_one(agg(i, daily(i, rng) + 50.0), held=True) for i in range(2 * DAY, 3 * DAY)]
    assert all(s is not None and s.score == 0.0 for s in held)

    ref = det.reference(T0 + 3 * DAY * MINUTE_MS)  # the next day's reference: the held day left out
    assert ref is not None and ref[1] == 2 and ref[0] < 30.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        HorizonDetector(days=2, min_days=3)
