"""Tumbling windows on event time: exact fields, stated lateness, late points counted."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detect.point import Point
from pipeline.edge.aggregate import WindowAggregator


def pt(ts: int, value: float, device: str = "d1", metric: str = "temp", score: float = 0.0) -> Point:
    return Point(device, "fridge", metric, ts, ts, value, score)


def test_a_window_closes_when_event_time_passes_end_plus_lateness() -> None:
    agg = WindowAggregator("s", window_ms=1000, lateness_ms=200, idle_ms=10**9)
    agg.add_one(pt(100, 1.0))
    agg.add_one(pt(1199, 2.0))
    assert agg.flush(now_ms=0) == []
    agg.add_one(pt(1200, 3.0))
    [closed] = agg.flush(now_ms=0)
    assert (closed.start, closed.end, closed.count) == (0, 1000, 1)


def test_a_point_within_lateness_still_counts() -> None:
    agg = WindowAggregator("s", window_ms=1000, lateness_ms=500, idle_ms=10**9)
    agg.add_one(pt(1100, 5.0))
    assert agg.add_one(pt(900, 1.0))  # 200 ms late, within 500
    agg.add_one(pt(1600, 5.0))
    [first] = agg.flush(now_ms=0)
    assert (first.start, first.count, first.last) == (0, 1, 1.0)


def test_a_point_after_its_window_closed_is_counted_late_not_lost() -> None:
    agg = WindowAggregator("s", window_ms=1000, lateness_ms=0, idle_ms=10**9)
    agg.add_one(pt(100, 1.0))
    agg.add_one(pt(1000, 2.0))
    [closed] = agg.flush(now_ms=0)
    assert not agg.add_one(pt(500, 9.0))
    assert agg.late == {"temp": 1}
    assert closed.count == 1


def test_a_quiet_device_is_closed_when_others_keep_arriving() -> None:
    agg = WindowAggregator("s", window_ms=1000, lateness_ms=100, idle_ms=2000)
    agg.add_one(pt(0, 1.0, device="quiet"), now_ms=50_000)
    agg.add_one(pt(0, 1.0, device="busy"), now_ms=51_999)
    assert agg.flush(now_ms=51_999) == []
    agg.add_one(pt(1, 1.0, device="busy"), now_ms=52_000)
    assert [a.device for a in agg.flush(now_ms=52_000)] == ["quiet"]


def test_no_window_is_cut_short_when_all_input_stops() -> None:
    agg = WindowAggregator("s", window_ms=1000, lateness_ms=100, idle_ms=2000)
    agg.add_one(pt(0, 1.0), now_ms=50_000)
    assert agg.flush(now_ms=50_000 + 19_999) == []  # e.g. a 20 s broker outage
    assert len(agg.flush(now_ms=50_000 + 20_000)) == 1  # ten idle periods: give up waiting


def test_a_backlog_arriving_late_closes_by_event_time_not_the_clock() -> None:
    agg = WindowAggregator("s", window_ms=1000, lateness_ms=0, idle_ms=2000)
    for ts in range(0, 1000, 100):  # readings from long ago, arriving now in a burst
        agg.add_one(pt(ts, 1.0), now_ms=90_000)
        assert agg.flush(now_ms=90_000) == []
    agg.add_one(pt(1000, 1.0), now_ms=90_001)
    [closed] = agg.flush(now_ms=90_001)
    assert closed.count == 10


def test_anomalous_points_are_counted() -> None:
    agg = WindowAggregator("s", window_ms=1000, lateness_ms=0)
    for ts, score in [(0, 0.2), (1, 0.995), (2, 0.999)]:
        agg.add_one(pt(ts, 1.0, score=score))
    assert agg.flush(now_ms=0, everything=True)[0].anomalies == 2


def test_each_metric_and_device_has_its_own_window() -> None:
    agg = WindowAggregator("s", window_ms=1000)
    agg.add_one(pt(0, 1.0, device="a", metric="temp"))
    agg.add_one(pt(0, 1.0, device="a", metric="power"))
    agg.add_one(pt(0, 1.0, device="b", metric="temp"))
    keys = [(a.device, a.metric) for a in agg.flush(0, everything=True)]
    assert keys == [("a", "power"), ("a", "temp"), ("b", "temp")]


def test_restored_closed_windows_are_not_emitted_again() -> None:
    agg = WindowAggregator("s", window_ms=1000, closed_until={("d1", "temp"): 2000})
    assert not agg.add_one(pt(1500, 1.0))
    assert agg.add_one(pt(2500, 1.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_fields_equal_numpy_on_the_same_values(values: list[float]) -> None:
    agg = WindowAggregator("s", window_ms=10**9)
    for i, v in enumerate(values):
        agg.add_one(pt(i, v))
    [a] = agg.flush(0, everything=True)
    arr = np.array(values)
    assert a.count == len(values)
    assert (a.min, a.max, a.last) == (arr.min(), arr.max(), values[-1])
    assert a.mean == pytest.approx(arr.mean(), rel=1e-9, abs=1e-6)
    assert a.std == pytest.approx(arr.std(), rel=1e-6, abs=1e-3)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        WindowAggregator("s", window_ms=0)
