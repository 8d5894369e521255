"""Batch frames: codec 2 (delta-zstd) edge cases, and the framing both codecs share."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import zstandard

from pipeline.errors import ProtocolError
from pipeline.protocol import Reason, encode
from pipeline.protocol.batch_codec import (
    CODECS,
    DELTA_ZSTD,
    JSON_ZSTD,
    MAX_DECODED_BYTES,
    decode_batch,
    encode_batch,
)
from pipeline.protocol.catalog import KINDS
from pipeline.protocol.delta_codec import (
    _decode_plain,
    _encode_plain,
    unzigzag,
    varint_decode,
    varint_encode,
    zigzag,
)
from pipeline.protocol.messages import Batch, Reading

NOW = 1_800_000_000_000


def round_trip(readings: list[Reading], site: str = "farm", seq: int = 7) -> Batch:
    return decode_batch(encode_batch(Batch(1, site, seq, readings), DELTA_ZSTD))


def within_half_step(decoded: float, original: float, resolution: float) -> bool:
    """The bound in exact arithmetic on the two doubles."""
    return abs(Fraction(decoded) - Fraction(original)) <= Fraction(resolution) / 2


def reason_of(payload: bytes) -> Reason:
    with pytest.raises(ProtocolError) as info:
        decode_batch(payload)
    return info.value.reason


def test_the_registry_has_both_codecs() -> None:
    assert {c.id: c.name for c in CODECS.values()} == {1: "json-zstd", 2: "delta-zstd"}


def test_an_empty_batch_round_trips() -> None:
    assert round_trip([], site="city-3", seq=0) == Batch(1, "city-3", 0, [])


def test_a_single_reading_round_trips_within_half_a_step() -> None:
    reading = Reading(1, "soil_probe-0001", "soil_probe", NOW, 42, {"moisture": 31.2}, "farm")
    (decoded,) = round_trip([reading]).readings
    assert (decoded.device, decoded.kind, decoded.ts, decoded.seq, decoded.site) == (
        "soil_probe-0001",
        "soil_probe",
        NOW,
        42,
        "farm",
    )
    assert within_half_step(decoded.metrics["moisture"], 31.2, 0.1)


def test_one_device_with_every_metric_and_changing_subsets() -> None:
    kind = KINDS["weather_station"]
    subsets = [["air_temp", "humidity", "light", "wind"], ["wind"], ["light", "air_temp"], []]
    readings = [
        Reading(
            1,
            "ws-1",
            "weather_station",
            NOW + 1000 * i,
            i,
            {name: kind.metrics[name].low + 1.37 * i for name in subsets[i % len(subsets)]},
        )
        for i in range(40)
    ]
    decoded = round_trip(readings).readings
    for got, want in zip(decoded, readings, strict=True):
        assert got.metrics.keys() == want.metrics.keys()
        for name, value in want.metrics.items():
            assert within_half_step(got.metrics[name], value, kind.metrics[name].resolution)


def test_readings_come_back_sorted_by_device_then_ts_with_metrics_merged() -> None:
    readings = [
        Reading(1, "b", "fridge", NOW + 2, 1, {"temp": 4.0}),
        Reading(1, "a", "fridge", NOW + 9, 3, {"door": 1.0, "temp": 5.0}),
        Reading(1, "b", "fridge", NOW + 1, 9, {"power": 80.0}),
        Reading(1, "a", "fridge", NOW + 3, 2, {"power": 81.0}),
    ]
    decoded = round_trip(readings).readings
    assert [(r.device, r.ts) for r in decoded] == [
        ("a", NOW + 3),
        ("a", NOW + 9),
        ("b", NOW + 1),
        ("b", NOW + 2),
    ]
    assert decoded[1].metrics == {"door": 1.0, "temp": 5.0}


def test_a_device_reported_under_two_kinds_is_still_in_order() -> None:
    readings = [
        Reading(1, "d", "fridge", NOW + 2, 2, {"temp": 4.0}),
        Reading(1, "d", "freezer", NOW + 1, 1, {"temp": -18.0}),
        Reading(1, "d", "fridge", NOW + 3, 3, {"temp": 4.1}),
    ]
    decoded = round_trip(readings).readings
    assert [(r.kind, r.ts) for r in decoded] == [
        ("freezer", NOW + 1),
        ("fridge", NOW + 2),
        ("fridge", NOW + 3),
    ]


@pytest.mark.parametrize(
    ("kind", "metric", "value"),
    [
        pytest.param("replay", "value", 1e300, id="replay-huge"),
        pytest.param("replay", "value", -1.2345678901234567e200, id="replay-huge-negative"),
        pytest.param("no_such_kind", "x", 3.14159, id="unknown-kind"),
        pytest.param("fridge", "humidity", 55.5, id="unknown-metric"),
        pytest.param("fridge", "temp", math.inf, id="infinite"),
        pytest.param("fridge", "temp", 1e30, id="out-of-range"),
    ],
)
def test_values_that_cannot_be_quantised_go_raw_and_come_back_exactly(
    kind: str, metric: str, value: float
) -> None:
    readings = [
        Reading(1, "d", kind, NOW, 1, {metric: value}),
        Reading(1, "d", kind, NOW + 1, 2, {metric: 2.0}),
    ]
    decoded = round_trip(readings).readings
    assert [r.metrics[metric] for r in decoded] == [value, 2.0]


def test_nan_goes_raw_and_stays_nan() -> None:
    (decoded,) = round_trip([Reading(1, "d", "fridge", NOW, 1, {"temp": math.nan})]).readings
    assert math.isnan(decoded.metrics["temp"])


def test_replay_values_of_ordinary_size_are_quantised_to_a_micro_step() -> None:
    values = [1234.5678912345, -0.000000499, 98765.4321]
    readings = [Reading(1, "r", "replay", NOW + i, i, {"value": v}) for i, v in enumerate(values)]
    decoded = round_trip(readings).readings
    assert all(
        within_half_step(r.metrics["value"], v, 1e-6) for r, v in zip(decoded, values, strict=True)
    )


def test_a_value_exactly_at_a_rounding_tie_stays_within_the_bound() -> None:
    """0.55 at step 0.1: fl(5 * 0.1) and fl(6 * 0.1) are both a hair more than 0.05 away."""
    value, resolution = 0.55, 0.1
    naive = [q * resolution for q in (5, 6)]
    assert not any(within_half_step(d, value, resolution) for d in naive)  # the trap is real
    (decoded,) = round_trip([Reading(1, "s", "soil_probe", NOW, 1, {"moisture": value})]).readings
    assert within_half_step(decoded.metrics["moisture"], value, resolution)


def test_ties_across_a_whole_range_stay_within_the_bound() -> None:
    ties = [(k + 0.5) * 0.1 for k in range(0, 20_000)]
    readings = [
        Reading(1, "aq", "air_quality", NOW + i, i, {"pm25": v}) for i, v in enumerate(ties)
    ]
    decoded = round_trip(readings).readings
    assert all(
        within_half_step(r.metrics["pm25"], v, 0.1) for r, v in zip(decoded, ties, strict=True)
    )


@pytest.mark.parametrize(
    ("ts", "seq"),
    [
        pytest.param([-(2**63), 2**63 - 1, 0], [0, 1, 2], id="int64-extremes"),
        pytest.param([NOW, NOW + 1], [2**64 - 1, 2**63], id="uint64-seqs"),
        pytest.param([NOW, NOW, NOW], [3, 1, 2], id="equal-ts"),
    ],
)
def test_timestamps_and_seqs_are_exact(ts: list[int], seq: list[int]) -> None:
    readings = [
        Reading(1, "d", "fridge", t, s, {"temp": 1.0}) for t, s in zip(ts, seq, strict=True)
    ]
    decoded = round_trip(readings, seq=2**64 - 1).readings
    assert [(r.ts, r.seq) for r in decoded] == sorted(zip(ts, seq, strict=True))


def unchecked(ts: Any = 1, value: Any = 1.0, v: int = 1) -> Reading:
    """A reading with fields of the wrong type, as Python lets anyone build one."""
    return Reading(v, "d", "fridge", ts, 1, {"temp": value})


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param(Batch(2, "farm", 1, []), id="batch-v"),
        pytest.param(Batch(1, "farm", 1, [unchecked(v=2)]), id="reading-v"),
        pytest.param(Batch(1, "farm", 1, [unchecked(ts=1.5)]), id="float-ts"),
        pytest.param(Batch(1, "farm", 1, [unchecked(value="1.5")]), id="text-value"),
        pytest.param(Batch(1, "farm", 1, [unchecked(value=None)]), id="none-value"),
        pytest.param(Batch(1, "farm", 2**64, []), id="seq-over-64-bits"),
        pytest.param(
            Batch(1, "farm", 1, [unchecked(ts=-1), unchecked(ts=2**63)]), id="ts-over-64-bits"
        ),
    ],
)
def test_the_encoder_refuses_what_no_frame_can_carry(batch: Batch) -> None:
    with pytest.raises(ValueError):
        encode_batch(batch, DELTA_ZSTD)


def test_codec_1_still_round_trips_exactly() -> None:
    batch = Batch(1, "farm", 3, [Reading(1, "d", "fridge", NOW, 1, {"temp": 4.123456789})])
    frame = encode_batch(batch, JSON_ZSTD)
    assert frame[:5] == b"EPB\x02\x01"
    assert decode_batch(frame) == batch


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b"EPB\x01\x09" + b"\x00" * 8, Reason.UNKNOWN_VERSION, id="unknown-codec"),
        pytest.param(b"EPB\x01\x00", Reason.UNKNOWN_VERSION, id="codec-0"),
        pytest.param(b"EPB\x03\x02", Reason.UNKNOWN_VERSION, id="unknown-header-version"),
        pytest.param(b"EPX\x01\x02", Reason.BAD_JSON, id="bad-magic"),
        pytest.param(b"EPB\x01", Reason.BAD_JSON, id="short"),
        pytest.param(b"EPB\x01\x02not zstd", Reason.BAD_JSON, id="not-zstd"),
    ],
)
def test_bad_frames_are_refused_with_their_reason(payload: bytes, reason: Reason) -> None:
    assert reason_of(payload) == reason


@pytest.mark.parametrize("codec_id", [1, 2])
def test_a_zstd_bomb_is_refused_before_it_expands(codec_id: int) -> None:
    """The frame declares 100 MiB; python-zstandard would allocate it despite the cap."""
    bomb = zstandard.ZstdCompressor().compress(bytes(MAX_DECODED_BYTES * 6))
    assert len(bomb) < 10_000
    assert reason_of(b"EPB\x01" + bytes((codec_id,)) + bomb) == Reason.TOO_LARGE


def _frame(plain: bytes) -> bytes:
    return b"EPB\x01\x02" + zstandard.ZstdCompressor().compress(plain)


SAMPLE = Batch(
    1,
    "farm",
    5,
    [
        Reading(1, "a", "fridge", NOW + i, i, {"temp": 4.0 + i / 10, "power": 80.0 + i})
        for i in range(5)
    ],
)


@pytest.mark.parametrize(
    ("plain", "reason"),
    [
        pytest.param(_encode_plain(SAMPLE)[:-1], Reason.BAD_JSON, id="truncated"),
        pytest.param(_encode_plain(SAMPLE) + b"\x00", Reason.BAD_JSON, id="trailing-byte"),
        pytest.param(
            b"\x01\x00\x00\x00\x00\x00" + b"\xff" * 10 + b"\x01", Reason.BAD_JSON, id="long-varint"
        ),
        # v, seq, flags, ts/seq base, site, then counts: 10**9 readings in a few bytes.
        pytest.param(
            b"\x01\x00\x00\x00\x00\x00\x01\x00\x01\x80\x94\xeb\xdc\x03\x00\x00",
            Reason.TOO_LARGE,
            id="count-over-cap",
        ),
        pytest.param(
            b"\x01\x00\x00\x00\x00\x00\x01\x00\x01\xe8\x07\x00\x00",
            Reason.BAD_JSON,
            id="count-over-body",
        ),
        pytest.param(
            b"\x01\x00\x04\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00",
            Reason.BAD_JSON,
            id="unknown-flag",
        ),
        pytest.param(
            b"\x01\x00\x00\x00\x00\x05\x01\x00\x00\x00\x00\x00\x00",
            Reason.BAD_JSON,
            id="site-index",
        ),
        pytest.param(
            b"\x02\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00",
            Reason.UNKNOWN_VERSION,
            id="batch-v",
        ),
        pytest.param(
            b"\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x02\xff\xfe",
            Reason.NOT_UTF8,
            id="not-utf8",
        ),
    ],
)
def test_malformed_bodies_are_refused_with_their_reason(plain: bytes, reason: Reason) -> None:
    assert reason_of(_frame(plain)) == reason


def test_a_minimal_hand_made_body_decodes() -> None:
    """The layout in docs/protocol.md, byte by byte: an empty batch of site "x", seq 3."""
    plain = b"\x01\x06\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01x"
    assert _decode_plain(plain) == Batch(1, "x", 3, [])


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([0, 1, 127], id="one-byte"),
        pytest.param([128, 300, 2**35, 2**63, 2**64 - 1], id="multi-byte"),
        pytest.param([], id="empty"),
    ],
)
def test_varints_round_trip(values: list[int]) -> None:
    array = np.array(values, dtype=np.uint64)
    raw = varint_encode(array)
    decoded, end = varint_decode(np.frombuffer(raw, dtype=np.uint8), 0, len(values))
    assert decoded.tolist() == values and end == len(raw)
    assert raw == b"".join(_leb128(v) for v in values)


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_zigzag_keeps_small_magnitudes_small() -> None:
    signed = np.array([0, -1, 1, -2, 2**63 - 1, -(2**63)], dtype=np.int64)
    encoded = zigzag(signed.view(np.uint64))
    assert encoded.tolist() == [0, 1, 2, 3, 2**64 - 2, 2**64 - 1]
    assert unzigzag(encoded).view(np.int64).tolist() == signed.tolist()


def test_a_realistic_batch_is_far_smaller_than_json() -> None:
    """500 readings, 50 devices, 2 to 4 metrics random-walking at their resolution."""
    rng = random.Random(4)
    kinds = [k for k in KINDS.values() if len(k.metrics) >= 2]
    readings = []
    for d in range(50):
        kind = kinds[d % len(kinds)]
        state = {m.name: (m.low + m.high) / 3 for m in kind.metrics.values()}
        ts = NOW + rng.randrange(1000)
        for i in range(10):
            ts += 1000 + rng.randrange(-20, 21)
            names = rng.sample(sorted(state), rng.randint(2, len(state)))
            for name in names:
                res = kind.metrics[name].resolution
                state[name] = round(state[name] / res + rng.randint(-3, 3)) * res
            readings.append(
                Reading(1, f"{kind.name}-{d:04d}", kind.name, ts, i, {n: state[n] for n in names})
            )
    batch = Batch(1, "farm", 1, readings)
    as_json = sum(len(encode(r)) for r in readings)
    delta = len(encode_batch(batch, DELTA_ZSTD))
    assert as_json / delta > 20
    assert delta < len(encode_batch(batch, JSON_ZSTD)) / 3
