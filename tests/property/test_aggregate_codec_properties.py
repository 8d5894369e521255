"""agg-zstd: exact identities, values within half a step, and a decoder that only refuses.

As for readings, the bound is checked in exact rational arithmetic on the two doubles.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import msgspec
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import ProtocolError
from pipeline.protocol.agg_codec import (
    MAGIC,
    VALUE_FIELDS,
    decode_aggregate_message,
    decode_aggregates,
    encode_aggregates,
    read_frame_header,
)
from pipeline.protocol.catalog import KINDS, RESOLUTIONS
from pipeline.protocol.messages import Aggregate, AggregateBatch

NOW = 1_800_000_000_000
ROUND_TRIP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
finite = st.floats(-1e12, 1e12, allow_nan=False)


@st.composite
def aggregates(draw: st.DrawFn, site: str) -> Aggregate:
    known = draw(st.booleans())
    if known:
        kind = KINDS[draw(st.sampled_from(sorted(KINDS)))]
        kind_name, metric = kind.name, draw(st.sampled_from(sorted(kind.metrics)))
        m = kind.metrics[metric]
        value = st.floats(m.low, m.high, allow_nan=False) | st.sampled_from(
            [(k + 0.5) * m.resolution for k in (0, 1, 5, 99)]
        )
    else:
        kind_name, metric, value = draw(ids), draw(ids), finite | st.just(float("nan"))
    start = draw(st.integers(NOW - 10**10, NOW))
    values = {name: draw(value) for name in VALUE_FIELDS}
    return Aggregate(
        v=1,
        site=site,
        device=draw(ids),
        kind=kind_name,
        metric=metric,
        start=start,
        end=start + draw(st.integers(1, 10**7)),
        count=draw(st.integers(1, 10**6)),
        anomalies=draw(st.integers(0, 10**3)),
        **values,
    )


@st.composite
def aggregate_batches(draw: st.DrawFn) -> AggregateBatch:
    site = draw(ids)
    items = draw(st.lists(aggregates(site), max_size=30))
    unique = {(a.device, a.metric, a.start): a for a in items}
    return AggregateBatch(1, site, draw(st.integers(0, 2**63 - 1)), list(unique.values()))


def _same_or_within_half_a_step(decoded: float, original: float, step: float | None) -> bool:
    if decoded != decoded or original != original:
        return decoded != decoded and original != original
    if decoded == original:
        return True
    return step is not None and abs(Fraction(decoded) - Fraction(original)) <= Fraction(step) / 2


@ROUND_TRIP
@given(aggregate_batches())
def test_round_trip_is_exact_but_for_values_within_half_a_step(batch: AggregateBatch) -> None:
    decoded = decode_aggregates(encode_aggregates(batch, RESOLUTIONS))
    assert (decoded.v, decoded.site, decoded.seq) == (batch.v, batch.site, batch.seq)
    expected = sorted(batch.aggregates, key=lambda a: (a.device, a.metric, a.start))
    assert len(decoded.aggregates) == len(expected)
    for got, want in zip(decoded.aggregates, expected, strict=True):
        exact = ("site", "device", "kind", "metric", "start", "end", "count", "anomalies")
        assert [getattr(got, f) for f in exact] == [getattr(want, f) for f in exact]
        step = RESOLUTIONS.get((want.kind, want.metric))
        for field in VALUE_FIELDS:
            assert _same_or_within_half_a_step(getattr(got, field), getattr(want, field), step)


def test_unknown_series_are_carried_losslessly() -> None:
    a = Aggregate(1, "farm", "d1", "mystery", "x", NOW, NOW + 60_000, 3, 0.1, 0.7, 0.3333, 0.2, 0.7, 0)
    decoded = decode_aggregates(encode_aggregates(AggregateBatch(1, "farm", 1, [a]), RESOLUTIONS))
    assert decoded.aggregates == [a]


def test_site_and_seq_are_readable_when_the_body_is_damaged() -> None:
    a = Aggregate(1, "farm", "d1", "soil_probe", "moisture", NOW, NOW + 60_000, 3, 1, 2, 1.5, 0.5, 2, 0)
    frame = encode_aggregates(AggregateBatch(1, "farm", 42, [a]), RESOLUTIONS)
    damaged = frame[:-6] + bytes(6)
    assert read_frame_header(damaged) == ("farm", 42)


def test_older_nodes_json_is_still_understood() -> None:
    a = Aggregate(1, "farm", "d1", "soil_probe", "moisture", NOW, NOW + 60_000, 3, 1, 2, 1.5, 0.5, 2, 0)
    batch = AggregateBatch(1, "farm", 5, [a])
    assert decode_aggregate_message(msgspec.json.encode(batch)) == batch


def test_simulated_windows_are_several_times_smaller_than_json() -> None:
    items = [
        Aggregate(1, "farm", f"soil_probe-{d:04d}", "soil_probe", "moisture", NOW, NOW + 60_000, 12,
                  30.1 + d % 3, 30.9 + d % 3, 30.5 + d % 3, 0.21, 30.4 + d % 3, 0)
        for d in range(500)
    ]
    batch = AggregateBatch(1, "farm", 1, items)
    assert len(encode_aggregates(batch, RESOLUTIONS)) * 5 < len(msgspec.json.encode(batch))


@FUZZ
@given(st.binary(max_size=2048))
def test_decoder_survives_any_bytes(raw: bytes) -> None:
    for framed in (raw, MAGIC + b"\x01" + raw):
        try:
            decode_aggregate_message(framed)
        except ProtocolError:
            pass


columns = st.tuples(
    st.integers(-2, 40),
    st.lists(ids, max_size=5),
    st.lists(st.floats() | st.sampled_from([0.0, 0.1, 1.0]), max_size=4),
    *[st.binary(max_size=40) for _ in range(8)],
    st.binary(max_size=80),
)


@FUZZ
@given(columns, st.integers(-1, 2**64 - 1))
def test_decoder_survives_any_columns(body: tuple[object, ...], seq: int) -> None:
    plain = zstandard.ZstdCompressor().compress(msgspec.msgpack.encode(list(body)))
    frame = MAGIC + b"\x01" + msgspec.msgpack.encode([1, "farm", seq, 1, plain])
    try:
        decode_aggregates(frame)
    except ProtocolError:
        pass


def decimals_of(step: float) -> int:
    """Decimal places of a step as written (0.1 → 1, 0.05 → 2, 10.0 → 0)."""
    return max(0, -int(Decimal(repr(step)).normalize().as_tuple().exponent))


@ROUND_TRIP
@given(aggregate_batches())
def test_decoded_values_sit_on_the_resolution_grid_without_float_noise(
    batch: AggregateBatch,
) -> None:
    """A value is carried exactly (raw) or prints as a decimal of the step (no float noise)."""
    decoded = decode_aggregates(encode_aggregates(batch, RESOLUTIONS)).aggregates
    expected = sorted(batch.aggregates, key=lambda a: (a.device, a.metric, a.start))
    for got, want in zip(decoded, expected, strict=True):
        step = RESOLUTIONS.get((got.kind, got.metric))
        for field in VALUE_FIELDS:
            value, original = getattr(got, field), getattr(want, field)
            if value == original or (math.isnan(value) and math.isnan(original)):
                continue  # carried raw, or already on the grid
            assert step is not None
            places = decimals_of(step)
            assert float(f"{value:.{places}f}") == value, (value, step)


def test_a_mean_on_the_grid_reads_back_as_its_decimal() -> None:
    means = [25.4, 0.3, 17.9, 30.7]
    items = [
        Aggregate(1, "farm", f"d{i}", "soil_probe", "moisture", NOW, NOW + 60_000, 3, 0.1, 99.9,
                  mean, 0.3, 0.7, 0)
        for i, mean in enumerate(means)
    ]  # fmt: skip
    decoded = decode_aggregates(encode_aggregates(AggregateBatch(1, "farm", 1, items), RESOLUTIONS))
    assert [repr(a.mean) for a in decoded.aggregates] == [repr(round(m, 1)) for m in means]
