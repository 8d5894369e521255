"""Model deltas and merged models on the wire: canonical JSON, float16 precision, HMAC-SHA256.

An edge node ships on ``{site}/edge/model`` what it learned about one device kind since its
last delta (:class:`ModelDelta`); the cloud publishes the merge of all sites' deltas, retained,
on ``cloud/model/{kind}`` (:class:`MergedModel`). Both carry :class:`MetricStats` per metric:
sufficient statistics that merge by addition (docs/decisions/0004-model-deltas.md).

* **Canonical bytes**: the message encoded by msgspec with ``sig`` empty and every key sorted.
  The signer and the verifier both encode the decoded values again, so whitespace, key order
  or number spelling in the received bytes can never change what is verified. Never pickle.
* **Quantised**: every float is rounded to float16 precision, 11 significant bits
  (:func:`quantise`, relative error at most 2**-11 = 4.9e-4), keeping float64's exponent so
  that no value overflows (a light sensor's M2 is far above float16's 65504). Counts are ints.
* **Signed**: ``sig`` is the hex HMAC-SHA256 of the canonical bytes with the site's key
  (the cloud's key for a merged model); compared with ``hmac.compare_digest``.

Examples
--------
>>> quantise(0.1)
0.0999755859375
>>> abs(quantise(123456.789) - 123456.789) <= 2**-11 * 123456.789
True
>>> d = ModelDelta(v=1, site="farm", node="edge-farm", kind="soil_probe", seq=3,
...                base_version=0, created_ms=1, metrics={})
>>> signed = sign(d, b"k")
>>> verify(signed, b"k"), verify(signed, b"other")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import TypeVar

import msgspec

from pipeline.errors import ProtocolError
from pipeline.protocol.json_codec import decode
from pipeline.protocol.reasons import Reason

DAY_BINS = 96  # 15-minute time-of-day bins (the detector's day profile)
DAY_BIN_MS = 86_400_000 // DAY_BINS
# Residual histogram: bin 0 holds residuals of exactly 0; bin i >= 1 holds
# 2**((i - 1) / 4 + RES_MIN_EXP) <= r < 2**(i / 4 + RES_MIN_EXP), clamped at both ends.
RES_PER_OCTAVE = 4
RES_MIN_EXP = -16
RES_BINS = 1 + 40 * RES_PER_OCTAVE  # 2**-16 .. 2**24
MAX_MODEL_BYTES = 48 * 1024  # RELIABILITY.md S6: model deltas at most 48 KiB
F16_BITS = 11  # significant bits of float16, the implicit one included

_canonical = msgspec.json.Encoder(order="sorted")
M = TypeVar("M", "ModelDelta", "MergedModel")


class MetricStats(msgspec.Struct, frozen=True):
    """Sufficient statistics of one metric of one device kind (mergeable by addition).

    ``n``, ``mean``, ``m2``: count, mean and sum of squared deviations of the values (Welford).
    ``low``, ``high``: the smallest and largest value. ``day_n``, ``day_mean``, ``day_m2``:
    the same per 15-minute time-of-day bin (UTC), :data:`DAY_BINS` each. ``res``: histogram
    of the absolute change from the same device's previous value, :data:`RES_BINS` counts.
    """

    n: int
    mean: float
    m2: float
    low: float
    high: float
    day_n: list[int]
    day_mean: list[float]
    day_m2: list[float]
    res: list[int]


class ModelDelta(msgspec.Struct, frozen=True):
    """What one edge node learned about one device kind since its previous delta.

    ``seq`` is the node's uplink sequence number (unique per site, never reused): the cloud
    applies a delta only if ``seq`` is above the last one it applied for (site, kind).
    ``base_version`` is the merged model version the node had seen (0: none).
    """

    v: int
    site: str
    node: str
    kind: str
    seq: int
    base_version: int
    created_ms: int
    metrics: dict[str, MetricStats]
    sig: str = ""


class MergedModel(msgspec.Struct, frozen=True):
    """The cloud's merge of every site's deltas for one device kind, ``version`` from 1 up."""

    v: int
    kind: str
    version: int
    created_ms: int
    sites: list[str]
    metrics: dict[str, MetricStats]
    sig: str = ""


def quantise(x: float) -> float:
    """``x`` rounded to 11 significant bits (float16 precision), exponent kept; 0 stays 0."""
    if x == 0.0 or not math.isfinite(x):
        return x
    mantissa, exponent = math.frexp(x)
    return math.ldexp(round(mantissa * (1 << F16_BITS)), exponent - F16_BITS)


def quantise_stats(s: MetricStats) -> MetricStats:
    """Every float of ``s`` quantised; counts untouched."""
    q = quantise
    return MetricStats(
        n=s.n,
        mean=q(s.mean),
        m2=q(s.m2),
        low=q(s.low),
        high=q(s.high),
        day_n=list(s.day_n),
        day_mean=[q(x) for x in s.day_mean],
        day_m2=[q(x) for x in s.day_m2],
        res=list(s.res),
    )


def canonical_bytes(message: ModelDelta | MergedModel) -> bytes:
    """The bytes that are signed: the message with ``sig`` empty, keys sorted."""
    return _canonical.encode(msgspec.structs.replace(message, sig=""))


def signature(message: ModelDelta | MergedModel, key: bytes) -> str:
    return hmac.new(key, canonical_bytes(message), hashlib.sha256).hexdigest()


def sign(message: M, key: bytes) -> M:
    """``message`` with ``sig`` set (HMAC-SHA256 of its canonical bytes under ``key``)."""
    return msgspec.structs.replace(message, sig=signature(message, key))


def verify(message: ModelDelta | MergedModel, key: bytes) -> bool:
    """True when ``sig`` is the HMAC of the canonical bytes under ``key`` (constant time)."""
    return bool(message.sig) and hmac.compare_digest(message.sig, signature(message, key))


def encode_model(message: ModelDelta | MergedModel) -> bytes:
    return _canonical.encode(message)


def decode_delta(payload: bytes) -> ModelDelta:
    """Size and schema of a delta (``ProtocolError`` with the reason otherwise)."""
    delta = decode(payload, ModelDelta, max_bytes=MAX_MODEL_BYTES)
    check_shape(delta.metrics)
    return delta


def decode_merged(payload: bytes) -> MergedModel:
    merged = decode(payload, MergedModel, max_bytes=4 * MAX_MODEL_BYTES)
    check_shape(merged.metrics)
    return merged


def check_shape(metrics: dict[str, MetricStats]) -> None:
    """Array lengths as specified (``bad_shape``), every float finite (``non_finite``)."""
    for name, s in metrics.items():
        if (len(s.day_n), len(s.day_mean), len(s.day_m2), len(s.res)) != (
            DAY_BINS,
            DAY_BINS,
            DAY_BINS,
            RES_BINS,
        ):
            raise ProtocolError(Reason.BAD_SHAPE, f"{name}: array lengths")
        if s.n < 0 or min(s.day_n) < 0 or min(s.res) < 0 or sum(s.day_n) != s.n:
            raise ProtocolError(Reason.BAD_SHAPE, f"{name}: counts")
        floats = [s.mean, s.m2, s.low, s.high, *s.day_mean, *s.day_m2]
        if not all(math.isfinite(x) for x in floats):
            raise ProtocolError(Reason.NON_FINITE, f"{name}: a value is not finite")
        if s.m2 < 0 or min(s.day_m2) < 0 or (s.n and s.low > s.high):
            raise ProtocolError(Reason.BAD_SHAPE, f"{name}: negative spread or low > high")


def residual_bin(r: float) -> int:
    """Histogram bin of an absolute residual ``r`` (>= 0)."""
    if r <= 0.0:
        return 0
    i = math.floor((math.log2(r) - RES_MIN_EXP) * RES_PER_OCTAVE) + 1
    return min(max(i, 1), RES_BINS - 1)


def residual_bin_value(i: int) -> float:
    """A representative residual of bin ``i`` (its geometric middle; 0 for bin 0)."""
    if i == 0:
        return 0.0
    return 2.0 ** ((i - 0.5) / RES_PER_OCTAVE + RES_MIN_EXP)
