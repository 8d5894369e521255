"""JSON encode and decode of protocol messages, with validation.

Decoding never raises anything but ``ProtocolError``, whose ``reason`` says why: message loops
turn it into a dead letter. Good payloads take one typed ``msgspec`` pass; only a payload that
fails it pays for the slower pass that works out the precise reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from pipeline.errors import ProtocolError
from pipeline.protocol.catalog import BUILTIN, Catalog, DeviceKind
from pipeline.protocol.messages import SCHEMA_VERSION, Reading
from pipeline.protocol.reasons import Reason
from pipeline.protocol.topics import is_valid_id

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_reading_decoder = msgspec.json.Decoder(Reading)
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}

MAX_DEPTH = 8


def encode(message: msgspec.Struct) -> bytes:
    """Encode any protocol message to compact JSON."""
    return _encoder.encode(message)


@dataclass(frozen=True, slots=True)
class ReadingLimits:
    """What the validator accepts; defaults follow docs/protocol.md."""

    max_bytes: int = 1024
    future_skew_ms: int = 300_000  # a reading more than 5 min ahead of the edge clock is refused
    max_age_ms: int = 7 * 24 * 3_600_000  # older than the retention period: refused


def decode_reading(
    payload: bytes,
    *,
    site: str,
    device: str,
    now_ms: int,
    limits: ReadingLimits = ReadingLimits(),
    catalog: Catalog = BUILTIN,
) -> Reading:
    """Decode and validate a device reading that arrived on ``{site}/dev/{device}``.

    ``catalog`` says which kinds and metrics exist and their physical ranges.
    """
    if not payload:
        raise ProtocolError(Reason.EMPTY)
    if len(payload) > limits.max_bytes:
        raise ProtocolError(Reason.TOO_LARGE, f"{len(payload)} bytes > {limits.max_bytes}")
    try:
        reading = _reading_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        # msgspec raises UnicodeDecodeError for bad UTF-8 inside a JSON string (S7 fuzz)
        raise ProtocolError(*_classify(payload, Reading, exc)) from None
    _check_reading(reading, site, device, now_ms, limits, catalog.kinds)
    return reading


def check_reading(
    reading: Reading,
    *,
    size_bytes: int,
    site: str,
    now_ms: int,
    limits: ReadingLimits = ReadingLimits(),
    catalog: Catalog = BUILTIN,
) -> None:
    """Validate a reading built in memory (an ingest adapter's) by ``decode_reading``'s rules.

    ``size_bytes`` is its encoded size, so that a foreign reading obeys the same byte limit
    as a native one; the topic is its own device's, so only the payload's checks apply.
    """
    if size_bytes > limits.max_bytes:
        raise ProtocolError(Reason.TOO_LARGE, f"{size_bytes} bytes > {limits.max_bytes}")
    _check_reading(reading, site, reading.device, now_ms, limits, catalog.kinds)


def _check_reading(
    r: Reading, site: str, device: str, now_ms: int, limits: ReadingLimits, kinds: Mapping[str, DeviceKind]
) -> None:
    if r.v != SCHEMA_VERSION:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"v={r.v}")
    if not is_valid_id(r.device):
        raise ProtocolError(Reason.BAD_ID, f"device {r.device[:80]!r}")
    if r.device != device or (r.site and r.site != site):
        raise ProtocolError(Reason.TOPIC_MISMATCH, f"payload {r.site}/{r.device} on topic {site}/{device}")
    kind = kinds.get(r.kind)
    if kind is None:
        raise ProtocolError(Reason.UNKNOWN_KIND, f"kind {r.kind[:80]!r}")
    if not r.metrics:
        raise ProtocolError(Reason.NO_METRICS)
    for name, value in r.metrics.items():
        metric = kind.metrics.get(name)
        if metric is None:
            raise ProtocolError(Reason.UNKNOWN_METRIC, f"{r.kind} has no metric {name[:80]!r}")
        if not math.isfinite(value):
            raise ProtocolError(Reason.NON_FINITE, f"{name}={value}")
        if not metric.low <= value <= metric.high:
            raise ProtocolError(
                Reason.OUT_OF_RANGE, f"{name}={value} outside [{metric.low}, {metric.high}]"
            )
    if r.seq < 0:
        raise ProtocolError(Reason.WRONG_TYPE, "seq < 0")
    if r.ts > now_ms + limits.future_skew_ms:
        raise ProtocolError(Reason.FUTURE_TS, f"ts {r.ts} is {r.ts - now_ms} ms ahead")
    if r.ts < now_ms - limits.max_age_ms:
        raise ProtocolError(Reason.STALE_TS, f"ts {r.ts} is {now_ms - r.ts} ms old")


def decode(payload: bytes, message_type: type[T], *, max_bytes: int = 65536) -> T:
    """Decode a protocol message of ``message_type`` (any struct in ``messages``)."""
    if not payload:
        raise ProtocolError(Reason.EMPTY)
    if len(payload) > max_bytes:
        raise ProtocolError(Reason.TOO_LARGE, f"{len(payload)} bytes > {max_bytes}")
    decoder = _decoders.get(message_type)
    if decoder is None:
        decoder = _decoders[message_type] = msgspec.json.Decoder(message_type)
    try:
        message = decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ProtocolError(*_classify(payload, message_type, exc)) from None
    version = getattr(message, "v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"v={version}")
    return message


def _classify(payload: bytes, message_type: type, exc: Exception) -> tuple[Reason, str]:
    """Work out why ``payload`` failed the typed decode (the slow path, bad input only)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Reason.NOT_UTF8, "payload is not UTF-8"
    if json_depth(text) > MAX_DEPTH:
        return Reason.TOO_DEEP, f"nesting deeper than {MAX_DEPTH}"
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except _NonFinite as nf:
        return Reason.NON_FINITE, str(nf)
    except (ValueError, RecursionError):
        return Reason.BAD_JSON, str(exc)[:200]
    if _has_non_finite(obj):
        return Reason.NON_FINITE, "a number overflows a double"
    if not isinstance(obj, dict):
        return Reason.NOT_OBJECT, f"JSON {type(obj).__name__}, expected an object"
    if "v" in obj and obj["v"] != SCHEMA_VERSION:
        return Reason.UNKNOWN_VERSION, f"v={obj['v']!r}"
    required = [f.name for f in msgspec.structs.fields(message_type) if f.required]
    missing = [f for f in required if f not in obj]
    if missing:
        return Reason.MISSING_FIELD, f"missing {', '.join(missing)}"
    return Reason.WRONG_TYPE, str(exc)[:200]


def _has_non_finite(obj: object) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_has_non_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_non_finite(v) for v in obj)
    return False


class _NonFinite(ValueError):
    pass


def _reject_constant(token: str) -> float:
    raise _NonFinite(f"{token} is not a finite number")


def json_depth(text: str) -> int:
    """Greatest nesting depth of arrays and objects in ``text``, ignoring string contents."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest
