"""Batch frame header version 2: site and seq readable even when the body is not (R12)."""

from __future__ import annotations

import pytest
import zstandard

from pipeline.errors import ProtocolError
from pipeline.protocol import Batch, Reading, decode_batch, encode_batch
from pipeline.protocol.batch_codec import DELTA_ZSTD, JSON_ZSTD, peek_batch_header
from pipeline.protocol.reasons import Reason

BATCH = Batch(1, "farm-2", 41, [Reading(1, "d", "fridge", 1_700_000_000_000, 1, {"temp": 4.0})])


@pytest.mark.parametrize("codec", [JSON_ZSTD, DELTA_ZSTD], ids=lambda c: c.name)
def test_the_header_names_site_and_seq_before_the_body(codec: object) -> None:
    frame = encode_batch(BATCH, codec)  # type: ignore[arg-type]

    header = peek_batch_header(frame)

    assert (header.version, header.site, header.seq) == (2, "farm-2", 41)
    assert decode_batch(frame) == decode_batch(frame[: header.body_offset] + frame[header.body_offset :])


def test_site_and_seq_are_readable_when_the_body_is_corrupt() -> None:
    frame = encode_batch(BATCH)
    header = peek_batch_header(frame)
    corrupt = frame[: header.body_offset] + b"\x28\xb5\x2f\xfd junk"

    with pytest.raises(ProtocolError):
        decode_batch(corrupt)
    assert (peek_batch_header(corrupt).site, peek_batch_header(corrupt).seq) == ("farm-2", 41)


def test_a_version_1_frame_still_decodes() -> None:
    """Edges not yet upgraded keep working; only their poison batches cannot be acked."""
    v1 = b"EPB\x01\x01" + zstandard.ZstdCompressor(level=3).compress(
        b'{"v":1,"site":"farm-2","seq":41,"readings":[{"v":1,"device":"d","kind":"fridge",'
        b'"ts":1700000000000,"seq":1,"metrics":{"temp":4.0}}]}'
    )

    assert decode_batch(v1) == BATCH
    assert peek_batch_header(v1).seq is None


def test_a_header_that_disagrees_with_its_body_is_refused() -> None:
    frame = bytearray(encode_batch(BATCH))
    at = peek_batch_header(bytes(frame)).body_offset - 8
    frame[at] = 42  # seq 41 -> 42 in the header only

    with pytest.raises(ProtocolError) as raised:
        decode_batch(bytes(frame))
    assert raised.value.reason == Reason.BAD_JSON


@pytest.mark.parametrize("cut", [5, 6, 10, 14])
def test_a_truncated_header_is_refused(cut: int) -> None:
    with pytest.raises(ProtocolError) as raised:
        peek_batch_header(encode_batch(BATCH)[:cut])
    assert raised.value.reason == Reason.BAD_JSON
