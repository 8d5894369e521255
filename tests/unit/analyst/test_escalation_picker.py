"""EscalationPicker, specified: the windows the edge was unsure about, within a byte budget."""

from __future__ import annotations

import pytest

from pipeline.edge.escalate import HEADER_BYTES, POINT_BYTES, EscalationPicker
from pipeline.edge.stages import Point

MINUTE_MS = 60_000


def point(ts: int, score: float, device: str = "d1") -> Point:
    return Point(device, "soil_probe", "moisture", ts, ts, 30.0, score)


@pytest.mark.parametrize(
    ("scores", "raised", "shipped"),
    [
        pytest.param([0.1, 0.6, 0.2], False, True, id="a peak between clear and raise: unsure"),
        pytest.param([0.1, 0.2, 0.3], False, False, id="below clear: sure it is normal"),
        pytest.param([0.1, 0.9, 0.2], False, False, id="at raise: sure it is not"),
        pytest.param([0.1, 0.6, 0.2], True, False, id="the edge raised on the series: nothing to ask"),
    ],
)
def test_only_uncertain_windows_the_edge_raised_nothing_in_are_shipped(scores: list[float], raised: bool, shipped: bool) -> None:
    picker = EscalationPicker("farm", window_ms=MINUTE_MS)
    for k, score in enumerate(scores):
        picker.add_one(point(k * 1000, score), raised=raised and k == 1)

    out = picker.flush(before_ms=MINUTE_MS)
    assert bool(out) is shipped
    if shipped:
        assert (out[0].score, out[0].ts, out[0].start, out[0].end) == (0.6, [0, 1000, 2000], 0, MINUTE_MS)


def test_a_window_still_open_is_not_shipped_yet() -> None:
    picker = EscalationPicker("farm", window_ms=MINUTE_MS)
    picker.add_one(point(0, 0.6))

    assert picker.flush(before_ms=MINUTE_MS - 1) == []
    assert len(picker.flush(before_ms=MINUTE_MS)) == 1


def test_the_byte_budget_of_an_hour_is_kept_and_what_it_refuses_is_counted() -> None:
    one_window = HEADER_BYTES + POINT_BYTES
    picker = EscalationPicker("farm", window_ms=MINUTE_MS, budget_bytes_per_hour=3 * one_window)
    for minute in range(10):
        picker.add_one(point(minute * MINUTE_MS, 0.6))

    assert len(picker.flush(before_ms=10 * MINUTE_MS)) == 3
    assert picker.shipped_bytes == 3 * one_window
    assert picker.over_budget["moisture"] == 7
    picker.add_one(point(61 * MINUTE_MS, 0.6))  # the next hour has its own budget
    assert len(picker.flush(before_ms=62 * MINUTE_MS)) == 1
