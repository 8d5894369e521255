"""Codec 2, ``delta-zstd``: bounded-error, column-wise compression of a reading batch.

Why: forwarding every reading as JSON costs ~100 bytes; a batch of one site's readings is
mostly the same device ids, metric names, steadily growing timestamps and counters, and values
that move a few sensor steps at a time. Coded as columns of small integers they shrink to a few
bytes per reading, and zstd finds what is left.

What is kept, exactly or within a bound:

* ``site``, batch ``seq``, and every reading's ``device``, ``kind``, ``site``, ``ts``, ``seq``
  and set of metric names: exactly.
* every value: ``|decoded - original| <= resolution / 2`` in exact arithmetic on the two
  doubles, where ``resolution`` is the metric's catalog resolution. The encoder checks this
  for every value (vectorised, with an error-free subtraction) and moves a quantum by one step
  where floating point rounding at a tie would have broken it. A series it cannot quantise
  safely (unknown kind or metric, a non-finite value, ``|value / resolution| > 2**52``) is
  stored as raw float64: lossless, never wrong.

Decoded readings come sorted by ``(device, ts, seq)``; the metrics of a reading are merged
back into one dict. docs/protocol.md (section Batch) has the byte layout. The decoder checks
every count and index against the body and raises only ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zstandard

from pipeline.errors import ProtocolError
from pipeline.protocol.catalog import KINDS
from pipeline.protocol.messages import SCHEMA_VERSION, Batch, Reading
from pipeline.protocol.reasons import Reason

ZSTD_LEVEL = 3
MAX_DECODED_BYTES = 16 * 1024 * 1024  # default cap on the decompressed body (zstd bombs)
MAX_READINGS = 250_000  # per batch (edge.batch_max_readings is at most 100,000)
MAX_POINTS = 1_000_000  # metric values per batch
MAX_STRINGS = 1 << 20  # entries of the string table
MIN_RESOLUTION, MAX_RESOLUTION = 1e-12, 1e12  # outside: not a step we can quantise to
QUANT_LIMIT = 2.0**52  # |value / resolution| above this goes raw: q*res must stay exact
_Q_MAX = 2**52 + 1  # the largest quantum the encoder writes (QUANT_LIMIT, nudged once)

FLAG_TS_UNSIGNED = 1  # timestamps are read as uint64 (some were >= 2**63), else int64
FLAG_SEQ_UNSIGNED = 2  # device seqs likewise
FULL_PRESENCE = 1  # low bit of a series' coding: the metric is in every reading of its device

_U64 = np.uint64
_EMPTY_U64 = np.zeros(0, dtype=_U64)


# --- public API ------------------------------------------------------------------------------


def encode_delta_zstd(batch: Batch) -> bytes:
    """Encode ``batch`` as a codec-2 body (without the ``EPB`` frame header).

    Raises ``ValueError`` for what no frame can carry: a reading whose ``v`` is not the
    schema version, a ``ts``/``seq`` that is not an integer fitting 64 bits, a non-numeric
    value, or a batch over the caps (``MAX_READINGS``, ``MAX_POINTS``, ``MAX_STRINGS``).
    """
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(_encode_plain(batch))


def decode_delta_zstd(body: bytes, max_decoded_bytes: int = MAX_DECODED_BYTES) -> Batch:
    """Decode a codec-2 body; any defect raises ``ProtocolError`` and nothing else."""
    try:
        plain = zstandard.ZstdDecompressor().decompress(body, max_output_size=max_decoded_bytes)
    except zstandard.ZstdError as exc:
        raise ProtocolError(Reason.BAD_JSON, f"zstd: {exc}") from None
    return _decode_plain(plain)


# --- integer columns: zigzag, LEB128 varints, segmented deltas (all numpy, uint64 wrap) ------


def zigzag(values: np.ndarray) -> np.ndarray:
    """Map int64 bit patterns to uint64 so that small magnitudes of either sign stay small."""
    signed = values.view(np.int64)
    return ((signed << 1) ^ (signed >> 63)).view(_U64)


def unzigzag(values: np.ndarray) -> np.ndarray:
    """Inverse of ``zigzag``; returns int64 bit patterns in a uint64 array."""
    return (values >> _U64(1)) ^ (_U64(0) - (values & _U64(1)))


def varint_encode(values: np.ndarray) -> bytes:
    """LEB128: 7 bits a byte, low group first, high bit set on every byte but the last.

    Vectorised: compute each value's byte count, then scatter one 7-bit group at a time.
    """
    values = values.astype(_U64, copy=False)
    lengths = np.ones(values.size, dtype=np.int64)
    for k in range(1, 10):
        lengths += values >= _U64(1 << (7 * k))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    out = np.empty(int(ends[-1]) if values.size else 0, dtype=np.uint8)
    for k in range(10):
        sel = np.flatnonzero(lengths > k)
        if sel.size == 0:
            break
        group = ((values[sel] >> _U64(7 * k)) & _U64(0x7F)).astype(np.uint8)
        more = (lengths[sel] > k + 1).astype(np.uint8) << 7
        out[starts[sel] + k] = group | more
    return out.tobytes()


def varint_decode(buf: np.ndarray, pos: int, count: int) -> tuple[np.ndarray, int]:
    """Read ``count`` varints from ``buf[pos:]``; return them and the position after them."""
    if count == 0:
        return _EMPTY_U64, pos
    if count > buf.size - pos:
        raise _malformed(f"{count} varints in {buf.size - pos} bytes")
    window = buf[pos : pos + 10 * count]  # a 64-bit varint is at most 10 bytes
    ends = np.flatnonzero(window < 0x80)[:count]
    if ends.size < count:
        raise _malformed("truncated varint column")
    lengths = np.diff(ends, prepend=-1)
    longest = int(lengths.max())
    if longest > 10:
        raise _malformed("varint longer than 10 bytes")
    starts = ends - lengths + 1
    values = np.zeros(count, dtype=_U64)
    for k in range(longest):
        sel = np.flatnonzero(lengths > k)
        values[sel] |= (window[starts[sel] + k] & 0x7F).astype(_U64) << _U64(7 * k)
    if longest == 10 and (window[starts[lengths == 10] + 9] > 1).any():
        raise _malformed("varint overflows 64 bits")
    return values, pos + int(ends[-1]) + 1


def delta(values: np.ndarray, resets: np.ndarray, base: int = 0) -> np.ndarray:
    """Differences to the previous element; at a reset the previous element is ``base``."""
    prev = np.empty_like(values)
    prev[1:] = values[:-1]
    prev[resets] = _U64(base)
    differences: np.ndarray = values - prev
    return differences


def undelta(deltas: np.ndarray, resets: np.ndarray, base: int = 0) -> np.ndarray:
    """Inverse of ``delta``: a cumulative sum restarting at every reset (``resets[0]`` set)."""
    if deltas.size == 0:
        return deltas
    total = np.cumsum(deltas, dtype=_U64)
    last_reset = np.maximum.accumulate(np.where(resets, np.arange(deltas.size), 0))
    sums: np.ndarray = total - (total[last_reset] - deltas[last_reset]) + _U64(base)
    return sums


def dod_encode(values: np.ndarray, starts: np.ndarray, base: int) -> np.ndarray:
    """Delta-of-delta per segment: first element minus ``base``, second a delta, then dods."""
    deltas = delta(values, starts, base)
    return delta(deltas, starts | _second(starts))


def dod_decode(dods: np.ndarray, starts: np.ndarray, base: int) -> np.ndarray:
    return undelta(undelta(dods, starts | _second(starts)), starts, base)


def _second(starts: np.ndarray) -> np.ndarray:
    """The second element of every segment (segments are marked by their first element)."""
    second = np.zeros_like(starts)
    second[1:] = starts[:-1] & ~starts[1:]
    return second


# --- error bound -----------------------------------------------------------------------------


def within_half_step(decoded: np.ndarray, original: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Exactly ``|decoded - original| <= half``, element-wise, despite rounding.

    Why: ``fl(decoded - original)`` can round onto ``half`` when the true difference is a
    hair above it. Knuth's TwoSum gives the rounding error ``err`` of the subtraction, so
    ``diff + err`` is the exact difference; only ``|diff| == half`` needs ``err``'s sign.
    """
    with np.errstate(all="ignore"):
        neg = -original
        diff = decoded + neg
        virtual = diff - decoded
        err = (decoded - (diff - virtual)) + (neg - virtual)
        size = np.abs(diff)
        within: np.ndarray = (size < half) | ((size == half) & (np.sign(diff) * np.sign(err) <= 0))
    return within


def quantise(values: np.ndarray, resolution: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quanta ``q`` with ``|q * resolution - value| <= resolution / 2``, and where that holds.

    ``q = round(value / resolution)``; where the division rounded across a tie, ``q`` moves
    one step toward the value. ``ok`` is False where no safe ``q`` exists (non-finite,
    ``|value / resolution| > 2**52``, an unusable resolution); those series go raw.
    """
    with np.errstate(all="ignore"):
        scaled = values / resolution
        usable = (resolution >= MIN_RESOLUTION) & (resolution <= MAX_RESOLUTION)
        ok = usable & (np.abs(scaled) <= QUANT_LIMIT)
        q = np.rint(np.where(ok, scaled, 0.0)).astype(np.int64)
        half = resolution * 0.5
        decoded = q * resolution
        good = within_half_step(decoded, values, half)
        fix = np.flatnonzero(ok & ~good)
        if fix.size:
            q[fix] += np.sign(values[fix] - decoded[fix]).astype(np.int64)
            good[fix] = within_half_step(q[fix] * resolution[fix], values[fix], half[fix])
    return q, ok & good


# --- encoder ---------------------------------------------------------------------------------


class _Strings:
    """The string table: each distinct string once, referred to by index."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def add(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.index)
        return found

    def encode(self) -> bytes:
        blobs = [text.encode("utf-8") for text in self.index]
        lengths = np.array([len(b) for b in blobs], dtype=_U64)
        return _uvarint(len(blobs)) + varint_encode(lengths) + b"".join(blobs)


def _int_column(values: list[int], what: str) -> tuple[np.ndarray, bool]:
    """64-bit integers as uint64 bit patterns, and whether they must be read as unsigned."""
    _check_types(values, (int, np.integer), what)
    try:
        return np.array(values, dtype=np.int64).view(_U64), False
    except OverflowError:
        pass
    try:
        return np.array(values, dtype=_U64), True
    except OverflowError:
        raise ValueError(f"reading {what}s do not fit one 64-bit integer type") from None


def _check_types(values: Sequence[object], allowed: tuple[type, ...], what: str) -> None:
    """Refuse what numpy would silently coerce (``None`` to NaN, ``"1.5"`` to 1.5, 2.7 to 2)."""
    for found in set(map(type, values)):
        if not issubclass(found, allowed) or issubclass(found, (bool, np.bool_)):
            raise ValueError(f"a reading's {what} is a {found.__name__}")


def _resolution(kind: str, metric: str) -> float:
    """The catalog's step for the metric, NaN when unknown (the series then goes raw)."""
    known = KINDS.get(kind)
    found = known.metrics.get(metric) if known else None
    return found.resolution if found else float("nan")


def _encode_plain(batch: Batch) -> bytes:
    readings = batch.readings
    n = len(readings)
    if n > MAX_READINGS:
        raise ValueError(f"{n} readings > {MAX_READINGS} per batch")
    if any(r.v != SCHEMA_VERSION for r in readings):
        raise ValueError(f"every reading must have v={SCHEMA_VERSION}")

    # Series groups: one per (device, kind, reading site), ordered, readings by (ts, seq).
    keys = [(r.device, r.kind, r.site) for r in readings]
    group_keys = sorted(set(keys))
    rank = {key: i for i, key in enumerate(group_keys)}
    group_of = np.array([rank[key] for key in keys], dtype=np.int64)
    ts, ts_unsigned = _int_column([r.ts for r in readings], "ts")
    seq, seq_unsigned = _int_column([r.seq for r in readings], "seq")
    ts_key = ts if ts_unsigned else ts.view(np.int64)
    seq_key = seq if seq_unsigned else seq.view(np.int64)
    order = np.lexsort((seq_key, ts_key, group_of))
    group_of, ts, seq = group_of[order], ts[order], seq[order]
    group_sizes = np.bincount(group_of, minlength=len(group_keys))
    starts = np.zeros(n, dtype=bool)
    starts[np.cumsum(group_sizes) - group_sizes] = True

    # Points: every (reading, metric, value), collected per combination of metric names.
    series_index: dict[tuple[int, str], int] = {}
    combos: dict[tuple[int, tuple[str, ...]], tuple[int, ...]] = {}
    point_series: list[int] = []
    point_values: list[float] = []
    per_reading: list[int] = []
    for index, group in zip(order.tolist(), group_of.tolist(), strict=True):
        metrics = readings[index].metrics
        combo = (group, tuple(metrics))
        ids = combos.get(combo)
        if ids is None:
            ids = combos[combo] = tuple(
                series_index.setdefault((group, name), len(series_index)) for name in combo[1]
            )
        point_series.extend(ids)
        point_values.extend(metrics.values())
        per_reading.append(len(ids))
    if len(point_values) > MAX_POINTS:
        raise ValueError(f"{len(point_values)} values > {MAX_POINTS} per batch")
    _check_types(point_values, (float, int, np.floating, np.integer), "metric value")
    try:
        values = np.array(point_values, dtype=np.float64)
    except OverflowError as exc:
        raise ValueError(f"a metric value overflows a double: {exc}") from None

    # Series in (group, metric name) order; points by series, then reading position.
    series_keys = sorted(series_index)
    renumber = np.empty(len(series_keys), dtype=np.int64)
    renumber[[series_index[key] for key in series_keys]] = np.arange(len(series_keys))
    point_position = np.repeat(np.arange(n), per_reading)
    point_series_arr = renumber[np.array(point_series, dtype=np.int64)]
    by_series = np.argsort(point_series_arr, kind="stable")
    point_series_arr, point_position, values = (
        point_series_arr[by_series],
        point_position[by_series],
        values[by_series],
    )
    series_group = np.array([g for g, _ in series_keys], dtype=np.int64)
    series_points = np.bincount(point_series_arr, minlength=len(series_keys))
    series_resolution = np.array(
        [_resolution(group_keys[g][1], name) for g, name in series_keys], dtype=np.float64
    )

    # Quantise; a series with any value that cannot be quantised safely goes raw.
    q, ok = quantise(values, series_resolution[point_series_arr])
    raw_series = np.bincount(point_series_arr[~ok], minlength=len(series_keys)) > 0
    resolutions = np.unique(series_resolution[~raw_series])
    slot = np.where(
        raw_series, 0, np.searchsorted(resolutions, np.nan_to_num(series_resolution)) + 1
    )
    full = series_points == group_sizes[series_group]
    coding = slot * 2 + full

    # Presence bitmap: one bit per reading of the device, for the series that skip some.
    block = np.where(full, 0, group_sizes[series_group])
    block_start = np.cumsum(block) - block
    group_start = np.cumsum(group_sizes) - group_sizes
    in_bitmap = ~full[point_series_arr]
    bits = np.zeros(int(block.sum()), dtype=np.uint8)
    bit_series = point_series_arr[in_bitmap]
    bits[
        block_start[bit_series] + point_position[in_bitmap] - group_start[series_group[bit_series]]
    ] = 1

    # Values: zigzag deltas of quanta per series; raw series as float64.
    quantised_point = ~raw_series[point_series_arr]
    q_series = point_series_arr[quantised_point]
    q_resets = np.ones(q_series.size, dtype=bool)
    q_resets[1:] = q_series[1:] != q_series[:-1]
    q_deltas = delta(q[quantised_point].view(_U64), q_resets)

    strings = _Strings()
    site_id = strings.add(batch.site)
    group_columns = np.array(
        [[strings.add(d), strings.add(k), strings.add(s)] for d, k, s in group_keys],
        dtype=_U64,
    ).reshape(-1, 3)
    metric_ids = np.array([strings.add(name) for _, name in series_keys], dtype=_U64)
    if len(strings.index) > MAX_STRINGS:
        raise ValueError(f"{len(strings.index)} distinct strings > {MAX_STRINGS} per batch")
    ts_base = int(ts[0]) if n else 0
    seq_base = int(seq[0]) if n else 0
    flags = (FLAG_TS_UNSIGNED if ts_unsigned else 0) | (FLAG_SEQ_UNSIGNED if seq_unsigned else 0)
    group_step = np.diff(series_group, prepend=0).astype(_U64)
    return b"".join(
        (
            _uvarint(batch.v),
            _uvarint(_zigzag_int(batch.seq)),
            bytes((flags,)),
            _uvarint(ts_base),
            _uvarint(seq_base),
            strings.encode(),
            _uvarint(site_id),
            _uvarint(resolutions.size),
            resolutions.astype("<f8").tobytes(),
            _uvarint(len(group_keys)),
            *(varint_encode(group_columns[:, c]) for c in range(3)),
            varint_encode(group_sizes.astype(_U64)),
            varint_encode(zigzag(dod_encode(ts, starts, ts_base))),
            varint_encode(zigzag(dod_encode(seq, starts, seq_base))),
            _uvarint(len(series_keys)),
            varint_encode(group_step),
            varint_encode(metric_ids),
            varint_encode(coding.astype(_U64)),
            np.packbits(bits).tobytes(),
            varint_encode(zigzag(q_deltas)),
            values[~quantised_point].astype("<f8").tobytes(),
        )
    )


def _uvarint(value: int) -> bytes:
    """One unsigned varint, for header scalars (any non-negative Python int)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag_int(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


# --- decoder ---------------------------------------------------------------------------------


def _malformed(detail: str) -> ProtocolError:
    return ProtocolError(Reason.BAD_JSON, f"delta-zstd: {detail}")


class _Cursor:
    """Reads the plain body front to back; every read is bounds-checked."""

    def __init__(self, plain: bytes) -> None:
        self.raw = plain
        self.buf = np.frombuffer(plain, dtype=np.uint8)
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.raw) - self.pos

    def uvarint(self) -> int:
        value = shift = 0
        for _ in range(10):
            if self.pos >= len(self.raw):
                raise _malformed("truncated")
            byte = self.raw[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise _malformed("varint longer than 10 bytes")

    def count(self, what: str, cap: int, unit_bytes: int = 1) -> int:
        """A count that must fit the cap and the bytes left (each item needs ``unit_bytes``)."""
        value = self.uvarint()
        if value > cap:
            raise ProtocolError(Reason.TOO_LARGE, f"delta-zstd: {value} {what} > {cap}")
        if value * unit_bytes > self.left:
            raise _malformed(f"{value} {what} cannot fit in {self.left} bytes")
        return value

    def take(self, size: int) -> bytes:
        if size > self.left:
            raise _malformed(f"{size} bytes wanted, {self.left} left")
        chunk = self.raw[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def varints(self, count: int) -> np.ndarray:
        values, self.pos = varint_decode(self.buf, self.pos, count)
        return values

    def floats(self, count: int) -> np.ndarray:
        return np.frombuffer(self.take(8 * count), dtype="<f8").astype(np.float64)


def _index(values: np.ndarray, limit: int, what: str) -> np.ndarray:
    if values.size and int(values.max()) >= limit:
        raise _malformed(f"{what} index out of range")
    return values.astype(np.int64)


def _decode_plain(plain: bytes) -> Batch:
    cur = _Cursor(plain)
    version = cur.uvarint()
    zz = cur.uvarint()
    batch_seq = zz >> 1 if zz % 2 == 0 else -((zz + 1) >> 1)
    flags = cur.take(1)[0]
    if flags & ~(FLAG_TS_UNSIGNED | FLAG_SEQ_UNSIGNED):
        raise _malformed(f"unknown flags {flags:#x}")
    ts_base, seq_base = cur.uvarint(), cur.uvarint()
    if ts_base >= 1 << 64 or seq_base >= 1 << 64:
        raise _malformed("base overflows 64 bits")

    n_strings = cur.count("strings", MAX_STRINGS)
    lengths = cur.varints(n_strings)
    if n_strings and int(lengths.max()) > cur.left:
        raise _malformed("string longer than the body")
    blob = cur.take(int(lengths.sum()))
    strings: list[str] = []
    offset = 0
    try:
        for length in lengths.tolist():
            strings.append(blob[offset : offset + length].decode("utf-8"))
            offset += length
    except UnicodeDecodeError:
        raise ProtocolError(Reason.NOT_UTF8, "delta-zstd: string table is not UTF-8") from None
    site_id = cur.uvarint()
    if site_id >= n_strings:
        raise _malformed("site index out of range")
    site = strings[site_id]

    n_res = cur.count("resolutions", 1 << 16, 8)
    resolutions = cur.floats(n_res)
    if not np.all((resolutions >= MIN_RESOLUTION) & (resolutions <= MAX_RESOLUTION)):
        raise _malformed("resolution outside [1e-12, 1e12]")

    n_groups = cur.count("devices", MAX_READINGS, 4)
    device_ids = _index(cur.varints(n_groups), n_strings, "device")
    kind_ids = _index(cur.varints(n_groups), n_strings, "kind")
    site_ids = _index(cur.varints(n_groups), n_strings, "site")
    sizes = cur.varints(n_groups)
    if n_groups and (int(sizes.min()) == 0 or int(sizes.max()) > MAX_READINGS):
        raise _malformed("device with no or too many readings")
    group_sizes = sizes.astype(np.int64)
    n = int(group_sizes.sum())
    if n > MAX_READINGS:
        raise ProtocolError(Reason.TOO_LARGE, f"delta-zstd: {n} readings > {MAX_READINGS}")
    if 2 * n > cur.left:
        raise _malformed(f"{n} readings cannot fit in {cur.left} bytes")
    group_start = np.cumsum(group_sizes) - group_sizes
    starts = np.zeros(n, dtype=bool)
    starts[group_start] = True
    ts = dod_decode(unzigzag(cur.varints(n)), starts, ts_base)
    seq = dod_decode(unzigzag(cur.varints(n)), starts, seq_base)

    n_series = cur.count("series", MAX_POINTS, 3)
    series_group = np.cumsum(_index(cur.varints(n_series), n_groups + 1, "series device"))
    if n_series and int(series_group[-1]) >= n_groups:
        raise _malformed("series device index out of range")
    metric_ids = _index(cur.varints(n_series), n_strings, "metric")
    coding = cur.varints(n_series)
    slot = _index(coding >> _U64(1), n_res + 1, "resolution")
    full = (coding & _U64(FULL_PRESENCE)).astype(bool)
    pairs = series_group * n_strings + metric_ids
    if np.unique(pairs).size != n_series:
        raise _malformed("a device's metric appears twice")

    # Presence: full series take every reading of their device; others read the bitmap.
    series_size = group_sizes[series_group]
    block = np.where(full, 0, series_size)
    n_bits = int(block.sum())
    bits = np.unpackbits(np.frombuffer(cur.take((n_bits + 7) // 8), dtype=np.uint8))[:n_bits]
    set_bits = np.flatnonzero(bits)
    full_points = int(series_size[full].sum())
    n_points = full_points + set_bits.size
    if n_points > MAX_POINTS:
        raise ProtocolError(Reason.TOO_LARGE, f"delta-zstd: {n_points} values > {MAX_POINTS}")
    full_ids = np.flatnonzero(full)
    full_len = series_size[full_ids]
    full_offset = np.cumsum(full_len) - full_len
    full_series = np.repeat(full_ids, full_len)
    full_position = np.arange(full_points) + np.repeat(
        group_start[series_group[full_ids]] - full_offset, full_len
    )
    block_start = np.cumsum(block) - block
    bit_series = np.flatnonzero(block)[
        np.searchsorted(block_start[block > 0], set_bits, side="right") - 1
    ]
    bit_position = set_bits - block_start[bit_series] + group_start[series_group[bit_series]]
    point_series = np.concatenate((full_series, bit_series))
    by_series = np.argsort(point_series, kind="stable")
    point_series = point_series[by_series]
    point_position = np.concatenate((full_position, bit_position))[by_series]

    # Values: quanta of quantised series, then raw float64 of the others.
    point_slot = slot[point_series]
    quantised_point = point_slot > 0
    q_series = point_series[quantised_point]
    q_resets = np.ones(q_series.size, dtype=bool)
    q_resets[1:] = q_series[1:] != q_series[:-1]
    q = undelta(unzigzag(cur.varints(q_series.size)), q_resets).view(np.int64)
    if ((q > _Q_MAX) | (q < -_Q_MAX)).any():
        raise _malformed("quantum out of range")
    values = np.empty(n_points, dtype=np.float64)
    values[quantised_point] = q.astype(np.float64) * resolutions[point_slot[quantised_point] - 1]
    values[~quantised_point] = cur.floats(n_points - q_series.size)
    if cur.left:
        raise _malformed(f"{cur.left} trailing bytes")
    if version != SCHEMA_VERSION:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"v={version}")

    return Batch(
        v=version,
        site=site,
        seq=batch_seq,
        readings=_readings(
            strings,
            (device_ids, kind_ids, site_ids, group_sizes),
            ts if flags & FLAG_TS_UNSIGNED else ts.view(np.int64),
            seq if flags & FLAG_SEQ_UNSIGNED else seq.view(np.int64),
            (point_position, point_series, values),
            [strings[i] for i in metric_ids.tolist()],
        ),
    )


def _readings(
    strings: list[str],
    groups: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ts: np.ndarray,
    seq: np.ndarray,
    points: tuple[np.ndarray, np.ndarray, np.ndarray],
    metric_names: list[str],
) -> list[Reading]:
    """Rebuild readings, each with its metrics merged, sorted by (device, ts, seq)."""
    device_ids, kind_ids, site_ids, group_sizes = groups
    point_position, point_series, values = points
    n = ts.size
    by_reading = np.argsort(point_position, kind="stable")  # series order within a reading
    names = [metric_names[s] for s in point_series[by_reading].tolist()]
    vals = values[by_reading].tolist()
    ends = np.cumsum(np.bincount(point_position, minlength=n)).tolist()
    ts_list, seq_list = ts.tolist(), seq.tolist()
    readings: list[Reading] = []
    i = begin = 0
    for device_id, kind_id, site_id, size in zip(
        device_ids.tolist(), kind_ids.tolist(), site_ids.tolist(), group_sizes.tolist(), strict=True
    ):
        device, kind, reading_site = strings[device_id], strings[kind_id], strings[site_id]
        for _ in range(size):
            end = ends[i]
            metrics = dict(zip(names[begin:end], vals[begin:end], strict=True))
            readings.append(
                Reading(SCHEMA_VERSION, device, kind, ts_list[i], seq_list[i], metrics, reading_site)
            )
            begin = end
            i += 1
    if not _in_order([strings[d] for d in device_ids.tolist()], ts, seq, group_sizes):
        readings.sort(key=lambda r: (r.device, r.ts, r.seq))
    return readings


def _in_order(devices: list[str], ts: np.ndarray, seq: np.ndarray, sizes: np.ndarray) -> bool:
    """Whether the frame's order already is (device, ts, seq), as our encoder writes it.

    Only a hand-made frame, or a device reported under two kinds, needs the Python sort.
    """
    if any(a >= b for a, b in zip(devices, devices[1:], strict=False)):
        return False
    later = np.ones(ts.size, dtype=bool)
    later[1:] = (ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (seq[1:] >= seq[:-1]))
    later[np.cumsum(sizes) - sizes] = True
    return bool(later.all())
