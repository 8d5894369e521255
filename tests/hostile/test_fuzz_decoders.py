"""S7 fuzz: the decoders the existing fuzz file does not cover never raise anything but their
declared error, whatever bytes arrive.

* aggregates (``agg-zstd`` frames and JSON): only ``ProtocolError``;
* model deltas and merged models: only ``ProtocolError``;
* configuration from TOML text: only ``ConfigError``.

Readings, JSON messages and batch frames are fuzzed in
tests/property/test_decoders_never_raise.py. Each strategy runs ``EXAMPLES`` examples in the
fast tier and 10,000 in the slow tier (``pytest -m slow``), RELIABILITY.md S7.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import load_settings
from pipeline.errors import ConfigError, ProtocolError
from pipeline.protocol import Aggregate, AggregateBatch, decode_batch, decode_reading
from pipeline.protocol.agg_codec import MAGIC, decode_aggregate_message, encode_aggregates
from pipeline.protocol.catalog import RESOLUTIONS
from pipeline.protocol.model_codec import decode_delta, decode_merged

EXAMPLES = 500  # fast tier; the slow tier runs 10,000 (RELIABILITY.md S7)
FAST = settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
FULL = settings(max_examples=10_000, suppress_health_check=list(HealthCheck), deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)

_agg = Aggregate(1, "farm", "soil_probe-1", "soil_probe", "moisture", 0, 60_000, 10, 1.0, 2.0, 1.5, 0.3, 1.9, 0)
VALID_AGG_FRAME = encode_aggregates(AggregateBatch(1, "farm", 7, [_agg] * 3), RESOLUTIONS)
VALID_DELTA = (
    b'{"base_version":0,"created_ms":1,"kind":"soil_probe","metrics":{},"node":"edge-farm",'
    b'"seq":1,"sig":"","site":"farm","v":1}'
)


def mutate(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid payload with a few bytes overwritten, cut short, or extended."""

    def apply(edits: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
        data = bytearray(valid)
        for pos, byte in edits:
            data[pos % len(data)] = byte
        return bytes(data[: max(0, len(data) - cut)]) + tail

    return st.builds(
        apply, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
        st.integers(0, 8), st.binary(max_size=8),
    )


def agg_frames() -> st.SearchStrategy[bytes]:
    """Well-framed ``EPA`` messages whose compressed body is any msgpack value."""
    body = st.lists(json_values | st.binary(max_size=32), max_size=14).map(
        lambda cols: zstandard.ZstdCompressor().compress(msgspec.msgpack.encode(cols))
    )
    return st.builds(
        lambda v, site, seq, codec, b: MAGIC + b"\x01" + msgspec.msgpack.encode([v, site, seq, codec, b]),
        st.integers(0, 2), st.text(max_size=8), st.integers(-1, 2**64 - 1), st.integers(0, 2), body,
    )


AGG_INPUTS = st.binary(max_size=2048) | st.binary(max_size=512).map(lambda b: MAGIC + b"\x01" + b) | mutate(VALID_AGG_FRAME) | agg_frames()
MODEL_INPUTS = (
    st.binary(max_size=2048)
    | mutate(VALID_DELTA)
    | st.fixed_dictionaries(
        {},
        optional={
            k: json_values
            for k in ("base_version", "created_ms", "kind", "metrics", "node", "seq", "sig", "site", "v", "version", "sites")
        },
    ).map(lambda d: msgspec.json.encode(d))
)


def refuses_only_with_protocol_error(decoder: Callable[[bytes], Any], raw: bytes) -> None:
    try:
        decoder(raw)
    except ProtocolError:
        pass


def check_aggregates(raw: bytes) -> None:
    refuses_only_with_protocol_error(decode_aggregate_message, raw)


def check_models(raw: bytes) -> None:
    refuses_only_with_protocol_error(decode_delta, raw)
    refuses_only_with_protocol_error(decode_merged, raw)


# -- configuration ---------------------------------------------------------------------------

_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="edgepipe-fuzz-config-"))
SECTIONS = ["mqtt", "store", "edge", "select", "alert", "aggregate", "uplink", "cloud", "sim", "dashboard", "x"]
KEYS = ["url", "site", "keepalive", "budget_mb", "window_s", "rate", "port", "method", "tolerances", "max_inflight", "y"]
toml_scalars = (
    st.integers(-(2**70), 2**70).map(str)
    | st.floats().map(lambda f: repr(f).replace("inf", "inf").replace("nan", "nan"))
    | st.text(max_size=20).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')
    | st.sampled_from(["true", "false", "[]", "[1, 2]", "{}", '{a = 1}', "1979-05-27", '"mqtt://h:1"', '"sqlite:///x"'])
)
toml_docs = st.lists(
    st.tuples(st.sampled_from(SECTIONS), st.lists(st.tuples(st.sampled_from(KEYS), toml_scalars), max_size=4)),
    max_size=4,
).map(lambda secs: "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {v}" for k, v in kv) for s, kv in secs))
CONFIG_INPUTS = toml_docs | st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1"))


def check_config(text: str) -> None:
    path = _CONFIG_DIR / f"c{os.getpid()}.toml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    try:
        load_settings(path)
    except ConfigError:
        pass


# -- the tests -------------------------------------------------------------------------------


@FAST
@given(AGG_INPUTS)
def test_the_aggregate_decoder_refuses_garbage_only_with_protocol_error(raw: bytes) -> None:
    check_aggregates(raw)


@FAST
@given(MODEL_INPUTS)
def test_the_model_decoders_refuse_garbage_only_with_protocol_error(raw: bytes) -> None:
    check_models(raw)


@FAST
@given(CONFIG_INPUTS)
def test_config_loading_refuses_garbage_only_with_config_error(text: str) -> None:
    check_config(text)


@pytest.mark.slow
@FULL
@given(AGG_INPUTS)
def test_the_aggregate_decoder_survives_10_000_examples(raw: bytes) -> None:
    check_aggregates(raw)


@pytest.mark.slow
@FULL
@given(MODEL_INPUTS)
def test_the_model_decoders_survive_10_000_examples(raw: bytes) -> None:
    check_models(raw)


@pytest.mark.slow
@FULL
@given(CONFIG_INPUTS)
def test_config_loading_survives_10_000_examples(text: str) -> None:
    check_config(text)


# -- regressions the fuzzing found -----------------------------------------------------------

BAD_UTF8_IN_STRING = b'{"v":1,"device":"d1","kind":"fridge","ts":1,"seq":1,"metrics":{"temp":1.0},"site":"\x80"}'


@pytest.mark.parametrize(
    "decoder",
    [
        lambda raw: decode_reading(raw, site="farm", device="d1", now_ms=1),
        decode_delta,
        lambda raw: decode_batch(b"EPB\x01\x01" + zstandard.ZstdCompressor().compress(raw)),
    ],
    ids=["reading", "model_delta", "json_zstd_batch"],
)
def test_bad_utf8_inside_a_json_string_is_refused_as_not_utf8(decoder: Callable[[bytes], Any]) -> None:
    # msgspec raises UnicodeDecodeError here, which used to escape the decoders (and would
    # have stopped the edge node's message loop on one crafted reading).
    with pytest.raises(ProtocolError) as refused:
        decoder(BAD_UTF8_IN_STRING)
    assert refused.value.reason in ("not_utf8", "wrong_type")


def test_a_config_file_with_a_lone_carriage_return_is_a_config_error() -> None:
    # read_text() used to turn "\r" into "\n" for the check, and the settings source, which
    # reads bytes, then raised TOMLDecodeError instead of ConfigError
    with pytest.raises(ConfigError):
        check_config_strict("\r")


def check_config_strict(text: str) -> None:
    path = _CONFIG_DIR / f"strict{os.getpid()}.toml"
    path.write_bytes(text.encode())
    load_settings(path)
