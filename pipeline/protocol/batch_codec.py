"""Binary framing of reading batches: a versioned header, then a codec-specific body.

    offset  size  field
    0       3     magic b"EPB"
    3       1     header version (2; 1 is still decoded)
    4       1     codec id (see CODECS)
    5       1     L, length of the site id (version 2 only)
    6       L     site, ASCII (version 2 only)
    6+L     8     uplink seq, unsigned 64-bit little endian (version 2 only)
    ...     ...   body

The header lets the cloud refuse what it does not understand (``unknown_version``) instead
of guessing, and lets new codecs arrive without breaking old edge nodes: the decoder
dispatches on the codec id. Version 2 repeats the site and seq outside the compressed body
so that a cloud that cannot decode the body can still acknowledge the seq to the edge and
dead-letter the frame (:func:`peek_batch_header`); otherwise the edge would resend a poison
batch forever (RELIABILITY.md R12). The decoder checks that header and body agree. Codec 1 (``json-zstd``) is lossless JSON; codec 2
(``delta-zstd``, ``pipeline.protocol.delta_codec``) is the bounded-error column coding,
about 25 times smaller (docs/protocol.md, section Batch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import msgspec
import zstandard

from pipeline.errors import ProtocolError
from pipeline.protocol.delta_codec import decode_delta_zstd, decompress_capped, encode_delta_zstd
from pipeline.protocol.messages import SCHEMA_VERSION, Batch
from pipeline.protocol.reasons import Reason

MAGIC = b"EPB"
HEADER_VERSION = 2
HEADER_VERSIONS = (1, 2)
HEADER_SIZE = 5  # the fixed part; version 2 adds 1 + len(site) + 8
_U64 = 2**64
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
    except UnicodeDecodeError:  # msgspec's error for bad UTF-8 inside a JSON string
        raise ProtocolError(Reason.NOT_UTF8, "a string in the body is not UTF-8") from None
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


def codec_for(name: str, resolutions: Mapping[tuple[str, str], float] | None = None) -> Codec:
    """The codec ``name``, quantising with ``resolutions`` (a ``Catalog``'s) when it quantises."""
    codec = CODECS_BY_NAME[name]
    if codec is DELTA_ZSTD and resolutions is not None:
        return Codec(codec.id, codec.name, partial(encode_delta_zstd, resolutions=resolutions), codec.decode)
    return codec


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """What a frame says before its body: enough to acknowledge it without decoding it."""

    version: int
    codec_id: int
    site: str | None  # None in a version 1 header
    seq: int | None  # unsigned 64-bit; None in a version 1 header
    body_offset: int


def encode_batch(batch: Batch, codec: Codec = JSON_ZSTD) -> bytes:
    """Frame ``batch`` with ``codec`` (``JSON_ZSTD`` or ``DELTA_ZSTD``, see ``CODECS``).

    A site or seq the version 2 header cannot carry (not 1-255 ASCII bytes, outside 64
    bits) gets a version 1 header, and the codec decides whether the body can carry it.
    """
    site = batch.site.encode("ascii") if batch.site.isascii() else b""
    if not 1 <= len(site) <= 255 or not -(2**63) <= batch.seq < _U64:
        return MAGIC + bytes((1, codec.id)) + codec.encode(batch)
    return (
        MAGIC
        + bytes((HEADER_VERSION, codec.id, len(site)))
        + site
        + (batch.seq % _U64).to_bytes(8, "little")
        + codec.encode(batch)
    )


def peek_batch_header(payload: bytes) -> BatchHeader:
    """Read a frame's header without touching its body; ``ProtocolError`` if it is bad.

    An unknown codec id is not an error here: the seq can still be acknowledged.
    """
    if len(payload) < HEADER_SIZE or payload[:3] != MAGIC:
        raise ProtocolError(Reason.BAD_JSON, "not an edgepipe batch (bad magic)")
    version, codec_id = payload[3], payload[4]
    if version not in HEADER_VERSIONS:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"batch header version {version}")
    if version == 1:
        return BatchHeader(1, codec_id, None, None, HEADER_SIZE)
    if len(payload) < HEADER_SIZE + 1:
        raise ProtocolError(Reason.BAD_JSON, "batch header truncated")
    n = payload[HEADER_SIZE]
    offset = HEADER_SIZE + 1 + n + 8
    if n == 0 or len(payload) < offset:
        raise ProtocolError(Reason.BAD_JSON, "batch header truncated")
    raw_site = payload[HEADER_SIZE + 1 : HEADER_SIZE + 1 + n]
    if not raw_site.isascii():
        raise ProtocolError(Reason.BAD_JSON, "batch header site is not ASCII")
    seq = int.from_bytes(payload[offset - 8 : offset], "little")
    return BatchHeader(2, codec_id, raw_site.decode("ascii"), seq, offset)


def decode_batch(payload: bytes) -> Batch:
    """Decode a framed batch; raise ``ProtocolError`` with the reason on any defect."""
    header = peek_batch_header(payload)
    codec = CODECS.get(header.codec_id)
    if codec is None:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"batch codec {header.codec_id}")
    batch = codec.decode(payload[header.body_offset :])
    if batch.v != SCHEMA_VERSION:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"v={batch.v}")
    if header.seq is not None and (
        header.site != batch.site or (batch.seq - header.seq) % _U64 != 0
    ):
        raise ProtocolError(Reason.BAD_JSON, "batch header and body disagree on site or seq")
    return batch
