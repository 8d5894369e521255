"""readings_per_s: the node's recent rate falls to 0 once nothing arrives."""

from __future__ import annotations

import pytest

from pipeline.edge.node import RecentRate

HORIZON_S = 5.0
PER_COMMIT = 50
COMMITS_PER_S = 10


def _steady(rate: RecentRate, seconds: float) -> float:
    """Commits of PER_COMMIT readings, COMMITS_PER_S a second, for ``seconds``; the last time."""
    at = 0.0
    for k in range(int(seconds * COMMITS_PER_S) + 1):
        at = k / COMMITS_PER_S
        rate.add(PER_COMMIT, at)
    return at


def test_steady_traffic_reads_as_its_rate() -> None:
    rate = RecentRate(HORIZON_S)
    end = _steady(rate, 20)
    assert rate.per_second(end) == pytest.approx(PER_COMMIT * COMMITS_PER_S)


def test_the_rate_falls_while_nothing_arrives_and_is_zero_after_the_horizon() -> None:
    rate = RecentRate(HORIZON_S)
    end = _steady(rate, 20)
    readings = [rate.per_second(end + quiet) for quiet in (0.0, 1.0, 2.5, 4.0)]
    assert readings == sorted(readings, reverse=True) and readings[-1] < readings[0]
    assert rate.per_second(end + HORIZON_S + 0.1) == 0.0
    assert rate.per_second(end + 95) == 0.0


def test_traffic_after_a_quiet_spell_is_counted_again() -> None:
    rate = RecentRate(HORIZON_S)
    end = _steady(rate, 10)
    assert rate.per_second(end + 60) == 0.0
    rate.add(PER_COMMIT, end + 60)
    rate.add(PER_COMMIT, end + 61)
    assert rate.per_second(end + 61) == pytest.approx(2 * PER_COMMIT / HORIZON_S)


def test_a_single_burst_counts_whole() -> None:
    rate = RecentRate(HORIZON_S)
    rate.add(1000, 10.0)
    assert rate.per_second(10.0) == pytest.approx(1000 / HORIZON_S)


def test_no_events_read_as_zero() -> None:
    assert RecentRate(HORIZON_S).per_second(123.0) == 0.0
