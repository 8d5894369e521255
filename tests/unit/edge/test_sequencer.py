"""The sequencer hands readings on in event-time order, whatever order they arrived in."""

from __future__ import annotations

import random

import pytest

from pipeline.edge.sequencer import EventTimeSequencer

MINUTE_MS = 60_000


def _stream(devices: int, minutes: int) -> list[tuple[str, int]]:
    return [(f"probe-{d:02d}", m * MINUTE_MS) for m in range(minutes) for d in range(devices)]


def _shuffled_within(stream: list[tuple[str, int]], lateness_ms: int, seed: int) -> list[tuple[str, int]]:
    """Each reading delayed at random, but never behind one more than ``lateness_ms`` newer;
    a device's own readings keep their order."""
    rng = random.Random(seed)
    keyed = [(ts + rng.uniform(0, lateness_ms), device, ts) for device, ts in stream]
    last: dict[str, float] = {}
    ordered = []
    for key, device, ts in keyed:
        key = max(key, last.get(device, key))
        last[device] = key
        ordered.append((key, device, ts))
    return [(device, ts) for _, device, ts in sorted(ordered)]


def _released(arrivals: list[tuple[str, int]], lateness_ms: int) -> list[tuple[str, int]]:
    s: EventTimeSequencer[None] = EventTimeSequencer({"soil_probe"}, lateness_ms)
    s.active = True
    out = []
    for n, (device, ts) in enumerate(arrivals):
        assert s.add_one(device, ts, n, None)
        out += [(d, t) for t, d, _, _ in s.release()]
    out += [(d, t) for t, d, _, _ in s.release(everything=True)]
    assert s.late == 0
    return out


@pytest.mark.parametrize("seed", range(20))
def test_any_interleaving_within_the_lateness_is_released_in_the_same_order(seed: int) -> None:
    stream = _stream(devices=7, minutes=30)
    arrivals = _shuffled_within(stream, lateness_ms=2 * MINUTE_MS, seed=seed)
    assert arrivals != stream
    assert _released(arrivals, lateness_ms=2 * MINUTE_MS) == sorted(stream, key=lambda r: (r[1], r[0]))


def test_a_reading_behind_the_released_watermark_is_late_and_handed_on() -> None:
    s: EventTimeSequencer[str] = EventTimeSequencer({"soil_probe"}, lateness_ms=MINUTE_MS)
    s.active = True
    s.add_one("a", 0, 1, "a0")
    s.add_one("a", 2 * MINUTE_MS, 2, "a2")
    assert [item for *_, item in s.release()] == ["a0"]
    assert not s.add_one("b", 0, 3, "b0")
    assert s.late == 1 and len(s) == 1


def test_other_kinds_are_not_held() -> None:
    s: EventTimeSequencer[str] = EventTimeSequencer({"soil_probe", "irrigation_valve"}, lateness_ms=0)
    assert not s.hold("soil_probe")  # probes without a valve relate to nothing: they do not wait
    assert s.hold("irrigation_valve") and s.hold("soil_probe") and not s.hold("fridge")
