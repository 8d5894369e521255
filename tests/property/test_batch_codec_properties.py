"""Codec 2 (delta-zstd): the error bound, exact identities, and a decoder that only refuses.

The bound is checked in exact rational arithmetic on the two doubles, not in floating
point, so a difference that rounds onto ``resolution / 2`` from above cannot slip through.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import ProtocolError
from pipeline.protocol.batch_codec import DELTA_ZSTD, decode_batch, encode_batch
from pipeline.protocol.catalog import KINDS
from pipeline.protocol.delta_codec import _encode_plain
from pipeline.protocol.messages import Batch, Reading

NOW = 1_800_000_000_000
ROUND_TRIP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)


@st.composite
def device_readings(draw: st.DrawFn, device: str) -> list[Reading]:
    """Readings of one device of a catalog kind: increasing ts and seq, any metric subsets."""
    kind = KINDS[draw(st.sampled_from(sorted(KINDS)))]
    names = sorted(kind.metrics)
    count = draw(st.integers(1, 12))
    gaps = draw(st.lists(st.integers(1, 10**7), min_size=count, max_size=count))
    steps = draw(st.lists(st.integers(1, 1000), min_size=count, max_size=count))
    ts = draw(st.integers(NOW - 10**10, NOW))
    seq = draw(st.integers(0, 2**40))
    site = draw(st.sampled_from(["", "farm"]))
    readings = []
    for gap, step in zip(gaps, steps, strict=True):
        ts, seq = ts + gap, seq + step
        subset = draw(st.lists(st.sampled_from(names), unique=True, min_size=1))
        metrics = {
            name: draw(
                st.floats(kind.metrics[name].low, kind.metrics[name].high, allow_nan=False)
                | st.sampled_from(_ties(kind.metrics[name].resolution))
            )
            for name in subset
        }
        readings.append(Reading(1, device, kind.name, ts, seq, metrics, site))
    return readings


def _ties(resolution: float) -> list[float]:
    """Values exactly between two steps, where naive rounding is most fragile."""
    return [(k + 0.5) * resolution for k in (0, 1, 5, 9, 27, 81, 99)]


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    devices = draw(st.lists(ids, unique=True, min_size=0, max_size=12))
    readings = [r for device in devices for r in draw(device_readings(device))]
    readings = draw(st.permutations(readings))
    return Batch(1, draw(ids), draw(st.integers(0, 2**64 - 1)), readings)


def _assert_within_bound(decoded: float, original: float, resolution: float) -> None:
    error = abs(Fraction(decoded) - Fraction(original))
    assert error <= Fraction(resolution) / 2, (decoded, original, resolution)


@ROUND_TRIP
@given(batches())
def test_round_trip_is_exact_but_for_values_within_half_a_step(batch: Batch) -> None:
    decoded = decode_batch(encode_batch(batch, DELTA_ZSTD))
    assert (decoded.v, decoded.site, decoded.seq) == (batch.v, batch.site, batch.seq)
    expected = sorted(batch.readings, key=lambda r: (r.device, r.ts, r.seq))
    assert len(decoded.readings) == len(expected)
    for got, want in zip(decoded.readings, expected, strict=True):
        assert (got.v, got.device, got.kind, got.ts, got.seq, got.site) == (
            want.v,
            want.device,
            want.kind,
            want.ts,
            want.seq,
            want.site,
        )
        assert got.metrics.keys() == want.metrics.keys()
        for name, value in want.metrics.items():
            _assert_within_bound(
                got.metrics[name], value, KINDS[want.kind].metrics[name].resolution
            )


@ROUND_TRIP
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["replay", "no_such_kind"]),
            st.sampled_from(["value", "other"]),
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-(2**63), 2**63 - 1),
        ),
        max_size=30,
    )
)
def test_unknown_metrics_and_unquantisable_values_round_trip_exactly(
    items: list[tuple[str, str, float, int]],
) -> None:
    """The raw-float escape: never wrong, whatever the value (NaN, inf, 1e300, -0.0)."""
    readings = [
        Reading(1, f"d{i % 3}", kind, i, seq, {name: value})
        for i, (kind, name, value, seq) in enumerate(items)
    ]
    decoded = decode_batch(encode_batch(Batch(1, "farm", 0, readings), DELTA_ZSTD))
    expected = sorted(readings, key=lambda r: (r.device, r.ts, r.seq))
    for got, want in zip(decoded.readings, expected, strict=True):
        (name, value), (got_name, got_value) = *want.metrics.items(), *got.metrics.items()
        assert got_name == name and got.seq == want.seq
        if (want.kind, name) == ("replay", "value") and math.isfinite(value):
            _assert_within_bound(got_value, value, KINDS["replay"].metrics["value"].resolution)
        else:
            assert math.copysign(1, got_value) == math.copysign(1, value)
            assert got_value == value or (math.isnan(got_value) and math.isnan(value))


@ROUND_TRIP
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=20)
    | st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20),
    st.lists(st.integers(0, 2**64 - 1), min_size=20, max_size=20),
)
def test_timestamps_and_seqs_are_exact_over_all_64_bits(ts: list[int], seqs: list[int]) -> None:
    """Deltas wrap modulo 2**64 and unwrap exactly, so no int64 or uint64 value is lost."""
    readings = [
        Reading(1, "d", "fridge", t, s, {"temp": 4.0}) for t, s in zip(ts, seqs, strict=False)
    ]
    decoded = decode_batch(encode_batch(Batch(1, "farm", 1, readings), DELTA_ZSTD))
    assert [(r.ts, r.seq) for r in decoded.readings] == sorted(zip(ts, seqs, strict=False))


def _refuses_cleanly(payload: bytes) -> None:
    try:
        decode_batch(payload)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=512))
def test_decoder_survives_any_bytes(raw: bytes) -> None:
    _refuses_cleanly(b"EPB\x01\x02" + raw)
    # Past zstd too: arbitrary plain bodies reach the column decoder.
    _refuses_cleanly(b"EPB\x01\x02" + zstandard.ZstdCompressor().compress(raw))


_SAMPLE = Batch(
    1,
    "farm",
    7,
    [
        Reading(1, "soil-1", "soil_probe", NOW + 1000 * i, i, {"moisture": 30 + 0.1 * i})
        for i in range(6)
    ]
    + [
        Reading(
            1, "ws-1", "weather_station", NOW + 999 * i, 50 + i, {"air_temp": -3.2, "light": 1e4}
        )
        for i in range(0, 6, 2)
    ]
    + [Reading(1, "ws-1", "weather_station", NOW + 5, 3, {"wind": 2.5, "humidity": 40.5})]
    + [
        Reading(1, "r", "replay", NOW, 1, {"value": 1e300}),
        Reading(1, "x", "nope", NOW, 1, {"a": 1.0}),
    ],
)
_PLAIN = _encode_plain(_SAMPLE)

edits = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "truncate"]),
        st.integers(0, len(_PLAIN) - 1),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def _corrupt(plain: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    body = bytearray(plain)
    for op, at, byte in changes:
        at = min(at, max(len(body) - 1, 0))
        if op == "set" and body:
            body[at] = byte
        elif op == "insert":
            body.insert(at, byte)
        elif op == "delete" and body:
            del body[at : at + 1 + byte % 8]
        else:
            del body[at:]
    return bytes(body)


@FUZZ
@given(edits)
def test_decoder_survives_corrupted_frames(changes: list[tuple[str, int, int]]) -> None:
    """Corrupt a valid body before zstd (reaches every column check) and after (zstd's)."""
    plain = _corrupt(_PLAIN, changes)
    _refuses_cleanly(b"EPB\x01\x02" + zstandard.ZstdCompressor().compress(plain))
    frame = encode_batch(_SAMPLE, DELTA_ZSTD)
    _refuses_cleanly(frame[:5] + _corrupt(frame[5:], changes))


def decimals_of(step: float) -> int:
    """Decimal places of a step as written (0.1 → 1, 0.05 → 2, 10.0 → 0)."""
    return max(0, -int(Decimal(repr(step)).normalize().as_tuple().exponent))


def assert_on_the_grid(decoded: float, resolution: float) -> None:
    """``decoded`` prints as a number on the grid of the step (or of the half step a tie
    series falls back to): no float noise such as 25.400000000000002."""
    places = decimals_of(resolution / 2)
    assert float(f"{decoded:.{places}f}") == decoded, (decoded, resolution)


@ROUND_TRIP
@given(batches())
def test_decoded_values_sit_on_the_resolution_grid_without_float_noise(batch: Batch) -> None:
    """A value is carried exactly (a series sent raw) or prints on the grid of its step."""
    decoded = decode_batch(encode_batch(batch, DELTA_ZSTD))
    expected = sorted(batch.readings, key=lambda r: (r.device, r.ts, r.seq))
    for got, want in zip(decoded.readings, expected, strict=True):
        for name, value in got.metrics.items():
            if value != want.metrics[name]:
                assert_on_the_grid(value, KINDS[got.kind].metrics[name].resolution)


def test_a_value_on_a_decimal_step_decodes_to_that_decimal() -> None:
    values = [25.4, 0.3, 0.7, 17.9, -3.3, 99.99]
    readings = [Reading(1, "ws1", "weather_station", NOW + i, i, {"air_temp": v})
                for i, v in enumerate(values)]  # fmt: skip
    decoded = decode_batch(encode_batch(Batch(1, "farm", 0, readings), DELTA_ZSTD))
    got = [r.metrics["air_temp"] for r in decoded.readings]
    assert [repr(v) for v in got] == [repr(round(v, 1)) for v in values]
