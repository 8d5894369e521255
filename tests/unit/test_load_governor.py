"""Load awareness: widen in steps under a lasting backlog, return to normal when it drains."""

from __future__ import annotations

import pytest

from pipeline.edge.load import LoadGovernor


def run(governor: LoadGovernor, backlogs: list[int], step_ms: int = 1000) -> list[float]:
    return [governor.update_one(b, i * step_ms) for i, b in enumerate(backlogs)]


def test_a_short_burst_changes_nothing() -> None:
    g = LoadGovernor(high=100, low=10, patience_ms=2000)
    assert run(g, [500, 500, 50, 0, 0]) == [1.0, 1.0, 1.0, 1.0, 1.0]


def test_a_lasting_backlog_doubles_the_scale_in_steps_up_to_the_cap() -> None:
    g = LoadGovernor(high=100, low=10, patience_ms=1000, max_scale=8.0)
    assert run(g, [500] * 6) == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert g.shedding


def test_the_scale_returns_to_normal_when_the_backlog_drains() -> None:
    g = LoadGovernor(high=100, low=10, patience_ms=1000)
    run(g, [500, 500, 500])
    assert g.scale == 4.0
    assert [g.update_one(0, t) for t in (3000, 4000, 5000, 6000)] == [4.0, 2.0, 1.0, 1.0]
    assert not g.shedding


def test_a_backlog_between_the_thresholds_holds_the_scale() -> None:
    g = LoadGovernor(high=100, low=10, patience_ms=1000)
    run(g, [500, 500])
    assert [g.update_one(50, t) for t in (2000, 3000, 4000)] == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("kwargs", [{"high": 10, "low": 10}, {"low": -1}, {"max_scale": 0.5}])
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoadGovernor(**kwargs)  # type: ignore[arg-type]
