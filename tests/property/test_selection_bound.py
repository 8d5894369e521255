"""Data selection keeps its promise: what a reader rebuilds is within the tolerance."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detect.point import Point
from pipeline.edge.select import Deadband, SwingingDoor

TOL = 0.5
series = st.lists(
    st.tuples(
        st.integers(1, 5_000),  # ms since the previous point
        st.floats(-100, 100, allow_nan=False),
        st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.995]),  # mostly normal, sometimes anomalous
    ),
    min_size=1,
    max_size=300,
)


def points(raw: list[tuple[int, float, float]]) -> list[Point]:
    out, ts = [], 0
    for i, (gap, value, score) in enumerate(raw):
        ts += gap
        out.append(Point("d1", "soil_probe", "moisture", ts, i, value, score))
    return out


def run(selector: Deadband | SwingingDoor, pts: list[Point]) -> list[Point]:
    shipped = [q for p in pts for q in selector.select_one(p)]
    assert [q.ts for q in shipped] == sorted({q.ts for q in shipped}), "shipped in time order, once"
    return shipped


@settings(max_examples=400, deadline=None)
@given(series, st.integers(0, 5))
def test_deadband_step_hold_is_within_tolerance(raw: list[tuple[int, float, float]], pre: int) -> None:
    pts = points(raw)
    shipped = run(Deadband(lambda k, m: TOL, heartbeat_ms=10**9, pre_points=pre, post_ms=2_000), pts)
    times = [q.ts for q in shipped]
    for p in pts:
        last = shipped[bisect.bisect_right(times, p.ts) - 1]  # the value a reader holds at p.ts
        assert abs(p.value - last.value) <= TOL + 1e-9


@settings(max_examples=400, deadline=None)
@given(series, st.integers(0, 5))
def test_swinging_door_lines_are_within_tolerance(raw: list[tuple[int, float, float]], pre: int) -> None:
    pts = points(raw)
    shipped = run(SwingingDoor(lambda k, m: TOL, heartbeat_ms=10**9, pre_points=pre, post_ms=2_000), pts)
    for a, b in zip(shipped, shipped[1:], strict=False):
        for p in pts:
            if a.ts < p.ts < b.ts:
                line = a.value + (b.value - a.value) * (p.ts - a.ts) / (b.ts - a.ts)
                assert abs(p.value - line) <= TOL + 1e-6


@settings(max_examples=200, deadline=None)
@given(series)
def test_anomalous_points_are_always_shipped(raw: list[tuple[int, float, float]]) -> None:
    pts = points(raw)
    for selector in (Deadband(lambda k, m: TOL), SwingingDoor(lambda k, m: TOL)):
        shipped = {q.ts for q in run(selector, pts)}
        assert {p.ts for p in pts if p.score >= 0.99} <= shipped


def test_a_ramp_ships_fewer_points_with_swinging_door() -> None:
    ramp = [Point("d1", "soil_probe", "moisture", t * 1000, t, 0.01 * t) for t in range(1000)]
    deadband = run(Deadband(lambda k, m: 0.1, heartbeat_ms=10**9), ramp)
    door = run(SwingingDoor(lambda k, m: 0.1, heartbeat_ms=10**9), ramp)
    assert len(door) < len(deadband) / 10


def test_a_heartbeat_ships_an_unchanged_value() -> None:
    d = Deadband(lambda k, m: 1.0, heartbeat_ms=60_000)
    flat = [Point("d1", "fridge", "temp", t * 10_000, t, 4.0) for t in range(13)]
    assert [q.ts for p in flat for q in d.select_one(p)] == [0, 60_000, 120_000]


def test_widening_the_scale_ships_fewer_points() -> None:
    noisy = [Point("d1", "fridge", "temp", t, t, 4.0 + (t % 7) * 0.1) for t in range(700)]
    normal, widened = Deadband(lambda k, m: 0.2), Deadband(lambda k, m: 0.2)
    widened.scale = 4.0
    assert len(run(widened, noisy)) < len(run(normal, noisy))
