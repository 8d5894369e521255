"""Decoders turn any bytes into a message or a ProtocolError, and nothing else."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import ProtocolError
from pipeline.protocol import (
    Aggregate,
    AggregateBatch,
    Alert,
    Batch,
    DeadLetter,
    Health,
    Label,
    Reading,
    decode,
    decode_batch,
    decode_reading,
    encode,
    encode_batch,
)

NOW = 1_800_000_000_000
FUZZ = settings(max_examples=10_000, suppress_health_check=[HealthCheck.too_slow], deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
reading_like = st.fixed_dictionaries(
    {},
    optional={
        "v": st.integers(0, 3) | json_values,
        "device": st.sampled_from(["d1", "d2", "a b", ""]) | json_values,
        "kind": st.sampled_from(["soil_probe", "fridge", "nope"]) | json_values,
        "ts": st.integers(NOW - 10**9, NOW + 10**9) | json_values,
        "seq": st.integers(-5, 10**6) | json_values,
        "metrics": st.dictionaries(
            st.sampled_from(["moisture", "soil_temp", "temp", "x"]),
            st.floats(allow_nan=False, allow_infinity=False) | json_values,
            max_size=3,
        )
        | json_values,
        "site": st.sampled_from(["farm", "city"]) | json_values,
    },
)


def _decodes_or_refuses(raw: bytes) -> None:
    try:
        decode_reading(raw, site="farm", device="d1", now_ms=NOW)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=2048))
def test_reading_decoder_survives_any_bytes(raw: bytes) -> None:
    _decodes_or_refuses(raw)


@FUZZ
@given(reading_like)
def test_reading_decoder_survives_json_shaped_input(body: dict[str, object]) -> None:
    _decodes_or_refuses(json.dumps(body).encode())


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([Aggregate, AggregateBatch, Alert, DeadLetter, Health, Label]))
def test_message_decoders_survive_any_bytes(raw: bytes, message_type: type) -> None:
    try:
        decode(raw, message_type)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=2048))
def test_batch_decoder_survives_any_bytes(raw: bytes) -> None:
    for framed in (raw, b"EPB\x01\x01" + raw):
        try:
            decode_batch(framed)
        except ProtocolError:
            pass


readings = st.builds(
    Reading,
    v=st.just(1),
    device=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    kind=st.just("soil_probe"),
    ts=st.integers(0, 2**53),
    seq=st.integers(0, 2**53),
    metrics=st.dictionaries(
        st.sampled_from(["moisture", "soil_temp"]),
        st.floats(allow_nan=False, allow_infinity=False),
        min_size=1,
    ),
)


@settings(max_examples=500)
@given(st.lists(readings, max_size=50), st.integers(0, 2**63 - 1))
def test_batch_round_trip_is_exact(items: list[Reading], seq: int) -> None:
    batch = Batch(v=1, site="farm", seq=seq, readings=items)
    assert decode_batch(encode_batch(batch)) == batch


@settings(max_examples=500)
@given(readings)
def test_reading_json_round_trip_is_exact(reading: Reading) -> None:
    assert decode(encode(reading), Reading) == reading
