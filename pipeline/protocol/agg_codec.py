"""``agg-zstd``: aggregate batches as quantised columns, about 10 times smaller than JSON.

Why: aggregates are most of what an edge ships once selection has thinned the readings (a
window of a quiet metric is one aggregate and no reading). As JSON each costs ~250 bytes of
repeated keys, ids and 17-digit floats. As columns of small integers (string-table indices,
window starts as deltas, values as quanta of the metric's resolution) zstd leaves a few
bytes of each.

Frame (docs/protocol.md, section Aggregate)::

    b"EPA" | version (1) | msgpack [v, site, seq, codec, body]

``site`` and ``seq`` sit outside the compressed body so that the cloud can acknowledge (and
dead-letter) a batch whose body is damaged instead of leaving the edge to resend it forever.

What is kept: ``site``, ``seq``, every aggregate's ``device``, ``kind``, ``metric``,
``start``, ``end``, ``count`` and ``anomalies`` exactly; ``min``, ``max``, ``mean``,
``last`` and ``std`` within ``resolution / 2`` of the metric (the bound readings have, from
the same ``quantise``), decoded onto the step's decimal grid (``grid_values``: 25.4, not
25.400000000000002), or exactly (raw float64) where the metric is unknown or a value
cannot be quantised safely. The steps travel in the body, so decoding needs no catalog.
Aggregates decode in ``(device, metric, start)`` order. Any defect raises ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import numpy as np
import zstandard

from pipeline.errors import ProtocolError
from pipeline.protocol.delta_codec import (
    decompress_capped,
    grid_values,
    quantise,
    unzigzag,
    varint_decode,
    varint_encode,
    zigzag,
)
from pipeline.protocol.json_codec import decode
from pipeline.protocol.messages import SCHEMA_VERSION, Aggregate, AggregateBatch
from pipeline.protocol.reasons import Reason

MAGIC = b"EPA"
FRAME_VERSION = 1
CODEC_ID = 1
ZSTD_LEVEL = 9  # aggregates leave once a window; the extra CPU is small and buys bytes
MAX_AGGREGATES = 100_000
MAX_DECODED_BYTES = 16 * 1024 * 1024
VALUE_FIELDS = ("min", "max", "mean", "last", "std")

_U64 = np.uint64
_I64 = np.int64


class _Frame(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    v: int
    site: str
    seq: int
    codec: int
    body: bytes


class _Columns(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """The body before zstd: counts, the string table, the steps and varint columns."""

    n: int
    strings: list[str]
    steps: list[float]  # per (kind, metric) pair, in first-seen order; 0.0 = raw float64
    pairs: bytes  # varints: kind index, metric index, for each pair
    row_pair: bytes  # varint per aggregate: its pair
    device: bytes  # varint per aggregate: string index
    start: bytes  # zigzag delta to the previous aggregate's start
    length: bytes  # end - start
    count: bytes
    anomalies: bytes
    quanta: bytes  # zigzag: q(min), q(max)-q(min), q(mean)-q(min), q(last)-q(min), q(std)
    raw: bytes  # float64 little-endian, five per aggregate whose pair's step is 0.0


_frame_encoder = msgspec.msgpack.Encoder()
_frame_decoder = msgspec.msgpack.Decoder(_Frame)
_columns_decoder = msgspec.msgpack.Decoder(_Columns)


def decode_aggregate_message(payload: bytes, max_json_bytes: int = 1 << 20) -> AggregateBatch:
    """What arrives on ``{site}/edge/agg``: an ``agg-zstd`` frame, or JSON from older nodes."""
    if payload[:3] == MAGIC:
        return decode_aggregates(payload)
    return decode(payload, AggregateBatch, max_bytes=max_json_bytes)


def encode_aggregates(batch: AggregateBatch, resolution_of: Mapping[tuple[str, str], float]) -> bytes:
    """Frame ``batch``; ``resolution_of[(kind, metric)]`` is the step (missing: lossless)."""
    aggs = sorted(batch.aggregates, key=lambda a: (a.device, a.metric, a.start))
    if len(aggs) > MAX_AGGREGATES:
        raise ValueError(f"{len(aggs)} aggregates > {MAX_AGGREGATES} per message")
    strings: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}

    def sid(text: str) -> int:
        return strings.setdefault(text, len(strings))

    device = np.array([sid(a.device) for a in aggs], dtype=_U64)
    row_pair = np.array([pairs.setdefault((a.kind, a.metric), len(pairs)) for a in aggs], dtype=_U64)
    pair_ids = np.array([i for kind, metric in pairs for i in (sid(kind), sid(metric))], dtype=_U64)
    steps = np.array([resolution_of.get(pair, 0.0) for pair in pairs], dtype=np.float64)
    values = np.array([[getattr(a, f) for f in VALUE_FIELDS] for a in aggs], dtype=np.float64)
    values = values.reshape(len(aggs), len(VALUE_FIELDS))
    step = np.repeat(steps[row_pair.astype(_I64)], len(VALUE_FIELDS))
    q, ok = quantise(values.reshape(-1), step, step * 0.5)
    q, ok = q.reshape(values.shape), ok.reshape(values.shape)
    raw_pairs = np.unique(row_pair[~ok.all(axis=1)]).astype(_I64)
    steps[raw_pairs] = 0.0
    quantised = steps[row_pair.astype(_I64)] > 0.0 if aggs else np.zeros(0, dtype=bool)
    q = q[quantised]
    q[:, 1:4] -= q[:, :1]
    starts = np.array([a.start for a in aggs], dtype=_I64)
    start_deltas = np.diff(starts, prepend=_I64(0))
    columns = _Columns(
        n=len(aggs),
        strings=list(strings),
        steps=steps.tolist(),
        pairs=varint_encode(pair_ids),
        row_pair=varint_encode(row_pair),
        device=varint_encode(device),
        start=varint_encode(zigzag(start_deltas)),
        length=varint_encode(np.array([a.end - a.start for a in aggs], dtype=_U64)),
        count=varint_encode(np.array([a.count for a in aggs], dtype=_U64)),
        anomalies=varint_encode(np.array([a.anomalies for a in aggs], dtype=_U64)),
        quanta=varint_encode(zigzag(q.reshape(-1).astype(_I64))),
        raw=values[~quantised].astype("<f8").tobytes(),
    )
    body = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(_frame_encoder.encode(columns))
    frame = _Frame(batch.v, batch.site, batch.seq, CODEC_ID, body)
    return MAGIC + bytes((FRAME_VERSION,)) + _frame_encoder.encode(frame)


def read_frame_header(payload: bytes) -> tuple[str, int]:
    """``(site, seq)`` of a frame, readable even when its body is damaged."""
    frame = _outer(payload)
    return frame.site, frame.seq


def decode_aggregates(payload: bytes) -> AggregateBatch:
    """Decode a framed aggregate batch; raise ``ProtocolError`` with the reason on any defect."""
    frame = _outer(payload)
    if frame.codec != CODEC_ID:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"aggregate codec {frame.codec}")
    try:
        c = _columns_decoder.decode(decompress_capped(frame.body, MAX_DECODED_BYTES))
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise _malformed(str(exc)[:200]) from None
    if not 0 <= c.n <= MAX_AGGREGATES:
        raise ProtocolError(Reason.TOO_LARGE, f"agg-zstd: {c.n} aggregates")
    n = c.n
    pairs = _index(_column(c.pairs, 2 * len(c.steps)), len(c.strings), "pair").reshape(-1, 2)
    row_pair = _index(_column(c.row_pair, n), len(c.steps), "pair")
    device = _index(_column(c.device, n), len(c.strings), "device")
    starts = np.cumsum(unzigzag(_column(c.start, n)).view(_I64))
    ends = starts + _column(c.length, n).view(_I64)
    counts = _column(c.count, n)
    anomalies = _column(c.anomalies, n)
    steps = np.array(c.steps, dtype=np.float64)
    if not np.isfinite(steps).all() or (steps < 0).any():
        raise _malformed("bad step")
    quantised = steps[row_pair] > 0.0
    k = int(quantised.sum())
    values = np.empty((n, len(VALUE_FIELDS)), dtype=np.float64)
    q = unzigzag(_column(c.quanta, k * len(VALUE_FIELDS))).view(_I64).reshape(k, len(VALUE_FIELDS))
    q[:, 1:4] += q[:, :1]
    row_steps = np.broadcast_to(steps[row_pair[quantised]][:, None], q.shape)
    values[quantised] = grid_values(q, row_steps)
    raw = n - k
    if len(c.raw) != 8 * len(VALUE_FIELDS) * raw:
        raise _malformed(f"{len(c.raw)} raw bytes for {raw} aggregates")
    values[~quantised] = np.frombuffer(c.raw, dtype="<f8").reshape(raw, len(VALUE_FIELDS))
    s = c.strings
    aggregates = [
        Aggregate(
            v=SCHEMA_VERSION,
            site=frame.site,
            device=s[d],
            kind=s[pairs[p][0]],
            metric=s[pairs[p][1]],
            start=int(start),
            end=int(end),
            count=int(count),
            min=lo,
            max=hi,
            mean=mean,
            std=std,
            last=last,
            anomalies=int(anomaly_count),
        )
        for d, p, start, end, count, anomaly_count, (lo, hi, mean, last, std) in zip(
            device.tolist(),
            row_pair.tolist(),
            starts.tolist(),
            ends.tolist(),
            counts.tolist(),
            anomalies.tolist(),
            values.tolist(),
            strict=True,
        )
    ]
    return AggregateBatch(frame.v, frame.site, frame.seq, aggregates)


def _outer(payload: bytes) -> _Frame:
    if payload[:3] != MAGIC or len(payload) < 4:
        raise ProtocolError(Reason.BAD_JSON, "not an edgepipe aggregate frame (bad magic)")
    if payload[3] != FRAME_VERSION:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"aggregate frame version {payload[3]}")
    try:
        frame = _frame_decoder.decode(payload[4:])
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise _malformed(str(exc)[:200]) from None
    if frame.v != SCHEMA_VERSION:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"v={frame.v}")
    return frame


def _column(blob: bytes, count: int) -> np.ndarray:
    buf = np.frombuffer(blob, dtype=np.uint8)
    values, end = varint_decode(buf, 0, count)
    if end != buf.size:
        raise _malformed(f"{buf.size - end} trailing bytes in a column")
    return values


def _index(values: np.ndarray, limit: int, what: str) -> np.ndarray:
    if values.size and int(values.max()) >= limit:
        raise _malformed(f"{what} index out of range")
    return values.astype(_I64)


def _malformed(detail: str) -> ProtocolError:
    return ProtocolError(Reason.BAD_JSON, f"agg-zstd: {detail}")
