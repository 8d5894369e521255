"""Binary framing of reading batches: a versioned header, then a codec-specific body.

    offset  size  field
    0       3     magic b"EPB"
    3       1     header version (1)
    4       1     codec id (see CODECS)
    5       ...   body

The header lets the cloud refuse what it does not understand (``unknown_version``) instead
of guessing, and lets new codecs arrive without breaking old edge nodes: the decoder
dispatches on the codec id. Codec 1 (``json-zstd``) is lossless JSON; codec 2
(``delta-zstd``, ``pipeline.protocol.delta_codec``) is the bounded-error column coding,
about 25 times smaller (docs/protocol.md, section Batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import msgspec
import zstandard

from pipeline.errors import ProtocolError
from pipeline.protocol.delta_codec import decode_delta_zstd, decompress_capped, encode_delta_zstd
from pipeline.protocol.messages import SCHEMA_VERSION, Batch
from pipeline.protocol.reasons import Reason

MAGIC = b"EPB"
HEADER_VERSION = 1
HEADER_SIZE = 5
MAX_DECODED_BYTES = 16 * 1024 * 1024  # refuse zstd bombs

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(Batch)


@dataclass(frozen=True, slots=True)
class Codec:
    id: int
    name: str
    encode: Callable[[Batch], bytes]
    decode: Callable[[bytes], Batch]


def _encode_json_zstd(batch: Batch) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(_json_encoder.encode(batch))


def _decode_json_zstd(body: bytes) -> Batch:
    raw = decompress_capped(body, MAX_DECODED_BYTES)
    try:
        return _json_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(Reason.WRONG_TYPE, str(exc)[:200]) from None


JSON_ZSTD = Codec(1, "json-zstd", _encode_json_zstd, _decode_json_zstd)
DELTA_ZSTD = Codec(
    2,
    "delta-zstd",
    encode_delta_zstd,
    partial(decode_delta_zstd, max_decoded_bytes=MAX_DECODED_BYTES),
)
CODECS: dict[int, Codec] = {codec.id: codec for codec in (JSON_ZSTD, DELTA_ZSTD)}
CODECS_BY_NAME: dict[str, Codec] = {codec.name: codec for codec in CODECS.values()}


def encode_batch(batch: Batch, codec: Codec = JSON_ZSTD) -> bytes:
    """Frame ``batch`` with ``codec`` (``JSON_ZSTD`` or ``DELTA_ZSTD``, see ``CODECS``)."""
    return MAGIC + bytes((HEADER_VERSION, codec.id)) + codec.encode(batch)


def decode_batch(payload: bytes) -> Batch:
    """Decode a framed batch; raise ``ProtocolError`` with the reason on any defect."""
    if len(payload) < HEADER_SIZE or payload[:3] != MAGIC:
        raise ProtocolError(Reason.BAD_JSON, "not an edgepipe batch (bad magic)")
    if payload[3] != HEADER_VERSION:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"batch header version {payload[3]}")
    codec = CODECS.get(payload[4])
    if codec is None:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"batch codec {payload[4]}")
    batch = codec.decode(payload[HEADER_SIZE:])
    if batch.v != SCHEMA_VERSION:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"v={batch.v}")
    return batch
