"""merge(A, B) matches learning A and B together: exactly for counts, within stated bounds for floats.

Stated tolerance (docs/decisions/0004-model-deltas.md), with A = the largest |value| seen:

* unquantised: counts, histograms and the range are exact; means and M2 agree to 1e-9
  relative (floating-point summation order only);
* after float16 quantisation of each delta (11 significant bits): counts exact; ``low``,
  ``high`` within 2**-11 relative; every mean within 2**-11 * A; the standard deviation
  within 2**-11 * std + 2**-10 * A.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.edge.model_sync import ModelSync
from pipeline.learn.sync_stats import StatsAccumulator, merge_stats
from pipeline.protocol.model_codec import MetricStats, quantise_stats

DAY_MS = 86_400_000
U = 2.0**-11

values = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
streams = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 3 * DAY_MS), values), min_size=1, max_size=300
)


def learn(stream: list[tuple[int, int, float]]) -> MetricStats:
    sync = ModelSync("s", "edge-s", key=b"k", cloud_key=b"", interval_ms=1)
    for device, ts, x in stream:
        sync.learn_one(f"d{device}", "replay", "value", x, ts)
    return sync.accumulators[("replay", "value")].to_stats()


def split(stream: list[tuple[int, int, float]]) -> tuple[list, list]:
    """Two sites: devices 0-1 at one, 2-4 at the other (what two edge nodes see)."""
    return [r for r in stream if r[0] < 2], [r for r in stream if r[0] >= 2]


def close(a: float, b: float, rel: float, abs_: float = 0.0) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b)) + abs_


@settings(max_examples=300, deadline=None)
@given(streams)
def test_merge_of_two_sites_equals_learning_both(stream: list[tuple[int, int, float]]) -> None:
    part_a, part_b = split(stream)
    merged = merge_stats(learn(part_a) if part_a else StatsAccumulator().to_stats(),
                         learn(part_b) if part_b else StatsAccumulator().to_stats())  # fmt: skip
    together = learn(stream)

    assert (merged.n, merged.day_n, merged.res) == (together.n, together.day_n, together.res)
    assert (merged.low, merged.high) == (together.low, together.high)
    scale = max(abs(x) for _, _, x in stream) + 1e-300
    assert close(merged.mean, together.mean, 1e-9, 1e-12 * scale)
    assert close(merged.m2, together.m2, 1e-9, 1e-9 * scale * scale)
    for i in range(len(merged.day_n)):
        assert close(merged.day_mean[i], together.day_mean[i], 1e-9, 1e-12 * scale)
        assert close(merged.day_m2[i], together.day_m2[i], 1e-9, 1e-9 * scale * scale)


@settings(max_examples=300, deadline=None)
@given(streams, st.integers(1, 299))
def test_successive_deltas_merge_to_the_whole_stream(
    stream: list[tuple[int, int, float]], cut: int
) -> None:
    sync = ModelSync("s", "edge-s", key=b"k", cloud_key=b"", interval_ms=1)
    deltas = []
    for i, (device, ts, x) in enumerate(stream):
        sync.learn_one(f"d{device}", "replay", "value", x, ts)
        if i + 1 == cut:
            deltas += [d["value"] for d in sync.take_deltas(0).values()]
    merged = StatsAccumulator().to_stats()
    for d in deltas + [d["value"] for d in sync.take_deltas(0).values()]:
        merged = merge_stats(merged, d)
    together = learn(stream)

    # take_deltas quantises, so floats follow the quantised bounds; counts stay exact.
    assert (merged.n, merged.day_n, merged.res) == (together.n, together.day_n, together.res)
    assert_quantised_bounds(merged, together, max(abs(x) for _, _, x in stream))


@settings(max_examples=300, deadline=None)
@given(streams)
def test_merge_of_quantised_deltas_stays_within_the_stated_bound(
    stream: list[tuple[int, int, float]],
) -> None:
    part_a, part_b = split(stream)
    deltas = [quantise_stats(learn(p)) for p in (part_a, part_b) if p]
    merged = deltas[0] if len(deltas) == 1 else merge_stats(*deltas)
    together = learn(stream)

    assert (merged.n, merged.day_n, merged.res) == (together.n, together.day_n, together.res)
    assert_quantised_bounds(merged, together, max(abs(x) for _, _, x in stream))


def assert_quantised_bounds(merged: MetricStats, together: MetricStats, scale: float) -> None:
    tiny = 1e-9 * scale  # floating-point summation on top of the quantisation
    assert close(merged.low, together.low, U, tiny) and close(merged.high, together.high, U, tiny)
    assert abs(merged.mean - together.mean) <= U * scale + tiny
    std_m, std_t = (math.sqrt(max(s.m2, 0.0) / s.n) for s in (merged, together))
    assert abs(std_m - std_t) <= U * std_t + 2 * U * scale + tiny
    for i, n in enumerate(merged.day_n):
        if n:
            assert abs(merged.day_mean[i] - together.day_mean[i]) <= U * scale + tiny
