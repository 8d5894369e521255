"""Codec 2, ``delta-zstd``: bounded-error, column-wise compression of a reading batch.

Why: forwarding every reading as JSON costs ~100 bytes; a batch of one site's readings is
mostly the same device ids, metric names, steadily growing timestamps and counters, and values
that move a few sensor steps at a time. Coded as columns of small integers they shrink to a few
bytes per reading, and zstd finds what is left.

What is kept, exactly or within a bound:

* ``site``, batch ``seq``, and every reading's ``device``, ``kind``, ``site``, ``ts``, ``seq``
  and set of metric names: exactly.
* every value: ``|decoded - original| <= resolution / 2`` in exact arithmetic on the two
  doubles, where ``resolution`` is the metric's catalog resolution and the decoded value is
  ``q * step`` on the step's decimal grid (:func:`grid_values`: 254 quanta of 0.1 decode
  to the double nearest 25.4, never 25.400000000000002, so stored values print clean). The encoder checks the bound for every value (vectorised, with an
  error-free subtraction) rather than trusting ``round``: where rounding at a tie broke it,
  it moves ``q`` one step; where no ``q`` can meet it (a value such as 0.55 at step 0.1 lies a
  hair more than half a step from both ``fl(5 * 0.1)`` and ``fl(6 * 0.1)``) the series uses
  half the step. A series it cannot quantise safely (unknown kind or metric, a non-finite
  value, ``|value / step| > 2**52``) is stored as raw float64: lossless, never wrong.

The steps are written in the frame, so decoding needs no catalog (an edge and a cloud with
different catalog versions still agree on every value).

Decoded readings come sorted by ``(device, ts, seq)``; the metrics of a reading are merged
back into one dict. docs/protocol.md (section Batch) has the byte layout. The decoder checks
every count and index against the body and raises only ``ProtocolError``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import lru_cache

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
MAX_STRINGS = MAX_READINGS + 4096  # string table: devices, plus kinds, sites, metric names
MAX_RESOLUTIONS = 4096  # distinct quantisation steps
MAX_BITMAP_BITS = 8 * MAX_POINTS  # presence bits (one per reading of a device, per sparse series)
MIN_RESOLUTION, MAX_RESOLUTION = 1e-12, 1e12  # outside: not a step we can quantise to
QUANT_LIMIT = 2.0**52  # |value / resolution| above this goes raw: q*res must stay exact
_Q_MAX = 2**52 + 1  # the largest quantum the encoder writes (QUANT_LIMIT, nudged once)

FLAG_TS_UNSIGNED = 1  # timestamps are read as uint64 (some were >= 2**63), else int64
FLAG_SEQ_UNSIGNED = 2  # device seqs likewise
FULL_PRESENCE = 1  # low bit of a series' coding: the metric is in every reading of its device

_U64 = np.uint64
_EMPTY_U64 = np.zeros(0, dtype=_U64)


# --- public API ------------------------------------------------------------------------------


def encode_delta_zstd(batch: Batch, resolutions: Mapping[tuple[str, str], float] | None = None) -> bytes:
    """Encode ``batch`` as a codec-2 body (without the ``EPB`` frame header).

    ``resolutions`` maps (kind, metric) to its step (a ``Catalog``'s); None: the built-ins.
    The body carries the steps it used, so the decoder needs no catalogue.

    Raises ``ValueError`` for what no frame can carry: a reading whose ``v`` is not the
    schema version, a ``ts``/``seq`` that is not an integer fitting 64 bits, a non-numeric
    value, or a batch over the caps (``MAX_READINGS``, ``MAX_POINTS``, ``MAX_STRINGS``).
    """
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(_encode_plain(batch, resolutions))


def decode_delta_zstd(body: bytes, max_decoded_bytes: int = MAX_DECODED_BYTES) -> Batch:
    """Decode a codec-2 body; any defect raises ``ProtocolError`` and nothing else."""
    return _decode_plain(decompress_capped(body, max_decoded_bytes))


def decompress_capped(body: bytes, max_bytes: int) -> bytes:
    """zstd-decompress at most ``max_bytes``, or raise ``ProtocolError``.

    Why the header check: python-zstandard honours ``max_output_size`` only for frames that
    do not declare their size; a frame that declares one gets it allocated and filled, so a
    3 KB frame can expand to 100 MB (or claim 4 EB and raise ``MemoryError``).
    """
    try:
        declared = zstandard.frame_content_size(body)
        if declared > max_bytes:
            raise ProtocolError(Reason.TOO_LARGE, f"zstd frame declares {declared} bytes")
        return zstandard.ZstdDecompressor().decompress(body, max_output_size=max_bytes)
    except zstandard.ZstdError as exc:
        raise ProtocolError(Reason.BAD_JSON, f"zstd: {exc}") from None


# --- integer columns: zigzag, LEB128 varints, segmented deltas (all numpy, uint64 wrap) ------


def zigzag(values: np.ndarray) -> np.ndarray:
    """Map int64 bit patterns to uint64 so that small magnitudes of either sign stay small."""
    signed = values.view(np.int64)
    return ((signed << 1) ^ (signed >> 63)).view(_U64)


def unzigzag(values: np.ndarray) -> np.ndarray:
    """Inverse of ``zigzag``; returns int64 bit patterns in a uint64 array."""
    return (values >> _U64(1)) ^ (_U64(0) - (values & _U64(1)))


_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=_U64)


def varint_encode(values: np.ndarray) -> bytes:
    """LEB128: 7 bits a byte, low group first, high bit set on every byte but the last.

    Vectorised: compute each value's byte count, then scatter one 7-bit group at a time.
    """
    values = values.astype(_U64, copy=False)
    if values.size == 0 or int(values.max()) < 0x80:
        return values.astype(np.uint8).tobytes()  # the common case: one byte each
    lengths = np.searchsorted(_VARINT_LIMITS, values, side="right") + 1
    ends = np.cumsum(lengths)
    starts = ends - lengths
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    for k in range(int(lengths.max())):
        sel = np.flatnonzero(lengths > k)
        group = ((values[sel] >> _U64(7 * k)) & _U64(0x7F)).astype(np.uint8)
        more = (lengths[sel] > k + 1).astype(np.uint8) << 7
        out[starts[sel] + k] = group | more
    return out.tobytes()


def varint_decode(buf: np.ndarray, pos: int, count: int) -> tuple[np.ndarray, int]:
    """Read ``count`` varints from ``buf[pos:]``; return them and the position after them."""
    if count > buf.size - pos:
        raise _malformed(f"{count} varints in {buf.size - pos} bytes")
    head = buf[pos : pos + count]
    if not (head & 0x80).any():
        return head.astype(_U64), pos + count  # the common case: one byte each
    window = buf[pos : pos + 10 * count]  # a 64-bit varint is at most 10 bytes
    ends = np.flatnonzero(window < 0x80)[:count]
    if ends.size < count:
        raise _malformed("truncated varint column")
    lengths = np.empty(count, dtype=np.int64)
    lengths[0] = ends[0] + 1
    lengths[1:] = ends[1:] - ends[:-1]
    longest = int(lengths.max())
    if longest > 10:
        raise _malformed("varint longer than 10 bytes")
    starts = ends - lengths + 1
    values = (window[starts] & 0x7F).astype(_U64)
    for k in range(1, longest):
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


def within_bound(decoded: np.ndarray, original: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Exactly ``|decoded - original| <= bound``, element-wise, despite rounding.

    Why: ``fl(decoded - original)`` can round onto ``bound`` when the true difference is a
    hair above it. Knuth's TwoSum gives the rounding error ``err`` of the subtraction, so
    ``diff + err`` is the exact difference; only ``|diff| == bound`` needs ``err``'s sign.
    """
    with np.errstate(all="ignore"):
        neg = -original
        diff = decoded + neg
        virtual = diff - decoded
        err = (decoded - (diff - virtual)) + (neg - virtual)
        size = np.abs(diff)
        within: np.ndarray = (size < bound) | (
            (size == bound) & (np.sign(diff) * np.sign(err) <= 0)
        )
    return within


_MAX_GRID_DECIMALS = 15  # a step needing more decimal places is not treated as decimal
_EXACT_INT = 2**53  # |q * m| up to this converts to float64 exactly


@lru_cache(maxsize=4096)
def decimal_step(step: float) -> tuple[int, int] | None:
    """``(m, places)`` with ``step`` the double nearest ``m / 10**places``, or None.

    >>> decimal_step(0.1), decimal_step(0.05), decimal_step(10.0), decimal_step(1 / 3)
    ((1, 1), (5, 2), (10, 0), None)
    """
    if not (MIN_RESOLUTION <= step <= MAX_RESOLUTION):
        return None
    for places in range(_MAX_GRID_DECIMALS + 1):
        m = round(step * 10**places)
        if m >= 1 and m / 10**places == step:
            return m, places
    return None


def grid_values(q: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The value of ``q`` quanta of ``step``, element-wise, on the step's decimal grid.

    Why: ``fl(254 * 0.1)`` is 25.400000000000002, float noise that every store, query and
    CSV export would then carry. For a decimal step ``m / 10**places`` the value is computed
    as ``(q * m) / 10**places``: an exact integer divided by an exact power of ten, which
    IEEE division rounds correctly, so it is the double nearest the decimal and prints as
    such. The encoder checks its error bound against these same values, so the bound holds
    for exactly what the decoder produces. Steps that are not short decimals, and products
    beyond 2**53, keep ``q * step``.
    """
    q = np.asarray(q, dtype=np.int64)
    step = np.asarray(step, dtype=np.float64)
    values = q * step
    if q.size == 0:
        return values
    unique, inverse = np.unique(step, return_inverse=True)
    grid = [decimal_step(s) for s in unique.tolist()]
    m = np.array([g[0] if g else 0 for g in grid], dtype=np.int64)[inverse.reshape(step.shape)]
    scale = np.array([10.0 ** g[1] if g else 1.0 for g in grid])[inverse.reshape(step.shape)]
    with np.errstate(all="ignore"):
        limit = _EXACT_INT // np.maximum(m, 1)
        exact = (m > 0) & (q <= limit) & (q >= -limit)
        products = np.where(exact, q, 0) * m
        return np.where(exact, products.astype(np.float64) / scale, values)


def quantise(
    values: np.ndarray, step: np.ndarray, bound: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Quanta ``q`` with ``|grid_values(q, step) - value| <= bound`` exactly, and where that holds.

    ``q = round(value / step)``; where the division rounded across a tie, ``q`` moves one
    step toward the value. ``ok`` is False where no safe ``q`` was found: non-finite values,
    ``|value / step| > 2**52``, an unusable step, or a tie that floating point puts a hair
    beyond ``step / 2`` from both neighbours (``bound`` is then met with half the step).
    """
    with np.errstate(all="ignore"):
        scaled = values / step
        usable = (step >= MIN_RESOLUTION) & (step <= MAX_RESOLUTION)
        ok = usable & (np.abs(scaled) <= QUANT_LIMIT)
        q = np.rint(np.where(ok, scaled, 0.0)).astype(np.int64)
        decoded = grid_values(q, step)
        good = within_bound(decoded, values, bound)
        fix = np.flatnonzero(ok & ~good)
        if fix.size:
            q[fix] += np.sign(values[fix] - decoded[fix]).astype(np.int64)
            good[fix] = within_bound(grid_values(q[fix], step[fix]), values[fix], bound[fix])
    return q, ok & good


def series_steps(
    values: np.ndarray, point_series: np.ndarray, resolution: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each series' quantisation step (0 = raw float64) and every point's quantum.

    The step is the metric's resolution. Where a value sits exactly on a rounding tie,
    the grid value may miss ``step / 2`` by an ulp on both sides (0.55 at step 0.1): that
    series is quantised at half the step, which meets the same bound with room to spare.
    A series that still fails goes raw.
    """
    bound = resolution[point_series] * 0.5
    step = resolution.copy()
    q, ok = quantise(values, step[point_series], bound)
    failed = np.bincount(point_series[~ok], minlength=step.size) > 0
    retry = failed & (step * 0.5 >= MIN_RESOLUTION)
    if retry.any():
        step[retry] *= 0.5
        again = retry[point_series]
        q[again], ok[again] = quantise(values[again], step[point_series[again]], bound[again])
    step[np.bincount(point_series[~ok], minlength=step.size) > 0] = 0.0
    return step, q


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

    def ids(self, texts: list[str]) -> np.ndarray:
        return np.array([self.add(text) for text in texts], dtype=_U64)


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


def _resolution(kind: str, metric: str, resolutions: Mapping[tuple[str, str], float] | None = None) -> float:
    """The catalog's step for the metric, NaN when unknown (the series then goes raw)."""
    if resolutions is not None:
        return resolutions.get((kind, metric), float("nan"))
    known = KINDS.get(kind)
    found = known.metrics.get(metric) if known else None
    return found.resolution if found else float("nan")


def _offsets(sizes: np.ndarray) -> np.ndarray:
    """Start of each run in a concatenation of runs of these sizes."""
    starts: np.ndarray = np.cumsum(sizes) - sizes
    return starts


def _run_starts(labels: np.ndarray) -> np.ndarray:
    """True where a run of equal labels begins."""
    starts = np.ones(labels.size, dtype=bool)
    starts[1:] = labels[1:] != labels[:-1]
    return starts


def _encode_plain(batch: Batch, resolution_of: Mapping[tuple[str, str], float] | None = None) -> bytes:
    readings = batch.readings
    n = len(readings)
    if n > MAX_READINGS:
        raise ValueError(f"{n} readings > {MAX_READINGS} per batch")
    if batch.v != SCHEMA_VERSION or any(r.v != SCHEMA_VERSION for r in readings):
        raise ValueError(f"the batch and every reading must have v={SCHEMA_VERSION}")
    _check_types([batch.seq], (int, np.integer), "batch seq")
    if not -(1 << 63) <= batch.seq < 1 << 64:
        raise ValueError(f"batch seq {batch.seq} does not fit 64 bits")
    _check_types([batch.site], (str,), "batch site")

    # Devices: one per (device, kind, reading site), in that order; their readings by (ts, seq).
    keys = [(r.device, r.kind, r.site) for r in readings]
    distinct = set(keys)
    _check_types([text for key in distinct for text in key], (str,), "device, kind or site")
    devices = sorted(distinct)
    rank = {key: i for i, key in enumerate(devices)}
    ts, ts_unsigned = _int_column([r.ts for r in readings], "ts")
    seq, seq_unsigned = _int_column([r.seq for r in readings], "seq")
    order = np.lexsort(
        (
            seq if seq_unsigned else seq.view(np.int64),
            ts if ts_unsigned else ts.view(np.int64),
            np.array([rank[key] for key in keys], dtype=np.int64),
        )
    )
    device_of = np.array([rank[keys[i]] for i in order.tolist()], dtype=np.int64)
    ts, seq = ts[order], seq[order]
    device_size = np.bincount(device_of, minlength=len(devices))
    device_start = _offsets(device_size)
    reading_starts = np.zeros(n, dtype=bool)
    reading_starts[device_start] = True

    # Points (reading, metric, value), gathered per combination of metric names.
    series_ids: dict[tuple[int, str], int] = {}
    combos: dict[tuple[int, tuple[str, ...]], tuple[int, ...]] = {}
    point_series_list: list[int] = []
    point_values: list[float] = []
    per_reading: list[int] = []
    for index, device in zip(order.tolist(), device_of.tolist(), strict=True):
        metrics = readings[index].metrics
        combo = (device, tuple(metrics))
        ids = combos.get(combo)
        if ids is None:
            ids = combos[combo] = tuple(
                series_ids.setdefault((device, name), len(series_ids)) for name in combo[1]
            )
        point_series_list.extend(ids)
        point_values.extend(metrics.values())
        per_reading.append(len(ids))
    if len(point_values) > MAX_POINTS:
        raise ValueError(f"{len(point_values)} values > {MAX_POINTS} per batch")
    _check_types(point_values, (float, int, np.floating, np.integer), "metric value")
    try:
        values = np.array(point_values, dtype=np.float64)
    except OverflowError as exc:
        raise ValueError(f"a metric value overflows a double: {exc}") from None

    # Series in (device, metric name) order; points by series, then by reading.
    _check_types([name for _, name in series_ids], (str,), "metric name")
    series = sorted(series_ids)
    renumber = np.empty(len(series), dtype=np.int64)
    renumber[[series_ids[key] for key in series]] = np.arange(len(series))
    point_series = renumber[np.array(point_series_list, dtype=np.int64)]
    by_series = np.argsort(point_series, kind="stable")
    point_series = point_series[by_series]
    point_reading = np.repeat(np.arange(n), per_reading)[by_series]
    values = values[by_series]
    series_device = np.array([device for device, _ in series], dtype=np.int64)
    series_resolution = np.array(
        [_resolution(devices[device][1], name, resolution_of) for device, name in series], dtype=np.float64
    )

    # Quantise; a series with any value that cannot be quantised safely goes raw (step 0).
    step, q = series_steps(values, point_series, series_resolution)
    raw_series = step == 0.0
    resolutions = np.unique(step[~raw_series])
    slot = np.where(raw_series, 0, np.searchsorted(resolutions, step) + 1)
    full = np.bincount(point_series, minlength=len(series)) == device_size[series_device]
    coding = (slot << 1) | full

    # Presence bitmap: one bit per reading of the device, for the series that skip some.
    block = np.where(full, 0, device_size[series_device])
    in_bitmap = ~full[point_series]
    bit_series = point_series[in_bitmap]
    if int(block.sum()) > MAX_BITMAP_BITS:
        raise ValueError(f"presence bitmap over {MAX_BITMAP_BITS} bits")
    bits = np.zeros(int(block.sum()), dtype=np.uint8)
    bits[
        _offsets(block)[bit_series]
        + point_reading[in_bitmap]
        - device_start[series_device[bit_series]]
    ] = 1

    # Values: quanta as zigzag deltas within each series; raw series as float64.
    quantised = ~raw_series[point_series]
    q_deltas = delta(q[quantised].view(_U64), _run_starts(point_series[quantised]))

    strings = _Strings()
    site_id = strings.add(batch.site)
    device_ids = strings.ids([d for d, _, _ in devices])
    kind_ids = strings.ids([k for _, k, _ in devices])
    reading_site_ids = strings.ids([s for _, _, s in devices])
    metric_ids = strings.ids([name for _, name in series])
    if len(strings.index) > MAX_STRINGS:
        raise ValueError(f"{len(strings.index)} distinct strings > {MAX_STRINGS} per batch")
    blobs = [text.encode("utf-8") for text in strings.index]
    ts_base = int(ts[0]) if n else 0
    seq_base = int(seq[0]) if n else 0
    flags = (FLAG_TS_UNSIGNED if ts_unsigned else 0) | (FLAG_SEQ_UNSIGNED if seq_unsigned else 0)
    stream = np.concatenate(
        (
            np.array([len(b) for b in blobs], dtype=_U64),
            device_ids,
            kind_ids,
            reading_site_ids,
            device_size.astype(_U64),
            zigzag(dod_encode(ts, reading_starts, ts_base)),
            zigzag(dod_encode(seq, reading_starts, seq_base)),
            np.diff(series_device, prepend=0).astype(_U64),
            metric_ids,
            coding.astype(_U64),
            zigzag(q_deltas),
        )
    )
    counts = (len(blobs), resolutions.size, len(devices), n, len(series), int(quantised.sum()))
    return b"".join(
        (
            _uvarint(batch.v),
            _uvarint(_zigzag_int(int(batch.seq))),
            bytes((flags,)),
            _uvarint(ts_base),
            _uvarint(seq_base),
            _uvarint(site_id),
            *map(_uvarint, counts),
            resolutions.astype("<f8").tobytes(),
            varint_encode(stream),
            *blobs,
            np.packbits(bits).tobytes(),
            values[~quantised].astype("<f8").tobytes(),
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

    def uvarint(self, limit: int = 1 << 64) -> int:
        """One header varint, refused unless below ``limit``."""
        value = shift = 0
        for _ in range(10):
            if self.pos >= len(self.raw):
                raise _malformed("truncated header")
            byte = self.raw[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value >= limit:
                    raise _malformed(f"header value {value} >= {limit}")
                return value
            shift += 7
        raise _malformed("varint longer than 10 bytes")

    def count(self, what: str, cap: int) -> int:
        value = self.uvarint(limit=1 << 70)
        if value > cap:
            raise ProtocolError(Reason.TOO_LARGE, f"delta-zstd: {value} {what} > {cap}")
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
    """Indices into a table of ``limit`` entries, as int64; anything beyond is refused."""
    if values.size and int(values.max()) >= limit:
        raise _malformed(f"{what} index out of range")
    return values.astype(np.int64)


def _decode_plain(plain: bytes) -> Batch:
    cur = _Cursor(plain)
    version = cur.uvarint(limit=1 << 70)
    zz = cur.uvarint(limit=1 << 70)
    batch_seq = zz >> 1 if zz % 2 == 0 else -((zz + 1) >> 1)
    flags = cur.take(1)[0]
    if flags & ~(FLAG_TS_UNSIGNED | FLAG_SEQ_UNSIGNED):
        raise _malformed(f"unknown flags {flags:#x}")
    ts_base, seq_base, site_id = cur.uvarint(), cur.uvarint(), cur.uvarint()
    n_strings = cur.count("strings", MAX_STRINGS)
    n_res = cur.count("resolutions", MAX_RESOLUTIONS)
    n_devices = cur.count("devices", MAX_READINGS)
    n = cur.count("readings", MAX_READINGS)
    n_series = cur.count("series", MAX_POINTS)
    n_quantised = cur.count("quantised values", MAX_POINTS)
    if site_id >= n_strings:
        raise _malformed("site index out of range")
    resolutions = cur.floats(n_res)
    if not np.all((resolutions >= MIN_RESOLUTION) & (resolutions <= MAX_RESOLUTION)):
        raise _malformed("resolution outside [1e-12, 1e12]")

    columns = (n_strings, n_devices, n_devices, n_devices, n_devices, n, n, n_series,
               n_series, n_series, n_quantised)  # fmt: skip
    stream = cur.varints(sum(columns))
    (string_lengths, device_col, kind_col, site_col, size_col, ts_dod, seq_dod, step_col,
     metric_col, coding, q_deltas) = np.split(stream, np.cumsum(columns)[:-1])  # fmt: skip

    if n_strings and int(string_lengths.max()) > cur.left:  # also keeps the sum from wrapping
        raise _malformed("a string longer than the body")
    strings = _decode_strings(cur.take(int(string_lengths.sum())), string_lengths.tolist())
    device_ids = _index(device_col, n_strings, "device")
    kind_ids = _index(kind_col, n_strings, "kind")
    site_ids = _index(site_col, n_strings, "site")
    if n_devices and (int(size_col.min()) == 0 or int(size_col.max()) > n):
        raise _malformed("a device with no readings or more than the batch")
    device_size = size_col.astype(np.int64)
    if int(device_size.sum()) != n:
        raise _malformed("device reading counts do not add up")
    device_start = _offsets(device_size)
    reading_starts = np.zeros(n, dtype=bool)
    reading_starts[device_start] = True
    ts = dod_decode(unzigzag(ts_dod), reading_starts, ts_base)
    seq = dod_decode(unzigzag(seq_dod), reading_starts, seq_base)

    series_device = np.cumsum(_index(step_col, n_devices + 1, "series device"))
    if n_series and int(series_device[-1]) >= n_devices:
        raise _malformed("series device index out of range")
    metric_ids = _index(metric_col, n_strings, "metric")
    slot = _index(coding >> _U64(1), n_res + 1, "resolution")
    full = (coding & _U64(FULL_PRESENCE)).astype(bool)
    if np.unique(series_device * n_strings + metric_ids).size != n_series:
        raise _malformed("a device's metric appears twice")

    point_series, point_reading = _presence(cur, series_device, full, device_size, device_start)
    n_points = point_series.size
    point_slot = slot[point_series]
    quantised = point_slot > 0
    if int(quantised.sum()) != n_quantised:
        raise _malformed("quantised value count does not match the series")
    q = undelta(unzigzag(q_deltas), _run_starts(point_series[quantised])).view(np.int64)
    if ((q > _Q_MAX) | (q < -_Q_MAX)).any():
        raise _malformed("quantum out of range")
    values = np.empty(n_points, dtype=np.float64)
    values[quantised] = grid_values(q, resolutions[point_slot[quantised] - 1])
    values[~quantised] = cur.floats(n_points - n_quantised)
    if cur.left:
        raise _malformed(f"{cur.left} trailing bytes")
    if version != SCHEMA_VERSION:
        raise ProtocolError(Reason.UNKNOWN_VERSION, f"v={version}")

    table = np.array(strings, dtype=object)
    readings = _readings(
        (table[device_ids], table[kind_ids], table[site_ids], device_size),
        ts if flags & FLAG_TS_UNSIGNED else ts.view(np.int64),
        seq if flags & FLAG_SEQ_UNSIGNED else seq.view(np.int64),
        (point_reading, table[metric_ids][point_series], values),
    )
    return Batch(v=version, site=strings[site_id], seq=batch_seq, readings=readings)


def _decode_strings(blob: bytes, lengths: list[int]) -> list[str]:
    strings: list[str] = []
    offset = 0
    try:
        for length in lengths:
            strings.append(blob[offset : offset + length].decode("utf-8"))
            offset += length
    except UnicodeDecodeError:
        raise ProtocolError(Reason.NOT_UTF8, "delta-zstd: string table is not UTF-8") from None
    return strings


def _presence(
    cur: _Cursor,
    series_device: np.ndarray,
    full: np.ndarray,
    device_size: np.ndarray,
    device_start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Read the bitmap; return every point's series and reading, ordered by series."""
    series_size = device_size[series_device]
    block = np.where(full, 0, series_size)
    n_bits = int(block.sum())
    if n_bits > MAX_BITMAP_BITS:
        raise ProtocolError(Reason.TOO_LARGE, f"delta-zstd: {n_bits} presence bits")
    packed = np.frombuffer(cur.take((n_bits + 7) // 8), dtype=np.uint8)
    set_bits = np.flatnonzero(np.unpackbits(packed)[:n_bits])
    full_ids = np.flatnonzero(full)
    full_size = series_size[full_ids]
    n_full = int(full_size.sum())
    if n_full + set_bits.size > MAX_POINTS:
        raise ProtocolError(Reason.TOO_LARGE, f"delta-zstd: over {MAX_POINTS} values")
    # Full series: every reading of the device, in order.
    full_series = np.repeat(full_ids, full_size)
    full_reading = np.arange(n_full) + np.repeat(
        device_start[series_device[full_ids]] - _offsets(full_size), full_size
    )
    # Bitmap series: the set bits of their block.
    sparse_ids = np.flatnonzero(block)
    block_start = _offsets(block)
    bit_series = sparse_ids[np.searchsorted(block_start[sparse_ids], set_bits, side="right") - 1]
    bit_reading = set_bits - block_start[bit_series] + device_start[series_device[bit_series]]
    point_series = np.concatenate((full_series, bit_series))
    by_series = np.argsort(point_series, kind="stable")
    return point_series[by_series], np.concatenate((full_reading, bit_reading))[by_series]


def _readings(
    devices: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ts: np.ndarray,
    seq: np.ndarray,
    points: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> list[Reading]:
    """Rebuild readings, each with its metrics merged, sorted by (device, ts, seq)."""
    names, kinds, sites, sizes = devices
    point_reading, point_name, values = points
    metrics: list[dict[str, float]] = [{} for _ in range(ts.size)]
    for reading, name, value in zip(
        point_reading.tolist(), point_name.tolist(), values.tolist(), strict=True
    ):
        metrics[reading][name] = value
    readings = list(
        map(
            Reading,
            itertools.repeat(SCHEMA_VERSION),
            np.repeat(names, sizes).tolist(),
            np.repeat(kinds, sizes).tolist(),
            ts.tolist(),
            seq.tolist(),
            metrics,
            np.repeat(sites, sizes).tolist(),
        )
    )
    if not _in_order(names.tolist(), ts, seq, sizes):
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
    later[_offsets(sizes)] = True
    return bool(later.all())
