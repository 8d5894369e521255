"""Malformed payloads, as faulty or misconfigured devices send them.

With ``bad_rate`` the fleet replaces that fraction of its readings by one of these, so that
an edge node's validation and dead-lettering can be exercised end to end. Every kind maps
to the ``Reason`` the validator (``pipeline.protocol.json_codec.decode_reading``) must give
it, in ``EXPECTED_REASONS``. Payloads stay printable ASCII on one line, so that ``--out``
files keep one publication per line.
"""

from __future__ import annotations

import json

import numpy as np

from pipeline.protocol.reasons import Reason

BAD_KINDS = (
    "not_json",
    "wrong_type",
    "nan",
    "missing_field",
    "unknown_kind",
    "future_ts",
    "oversized",
    "wrong_topic",
)

EXPECTED_REASONS: dict[str, Reason] = {
    "not_json": Reason.BAD_JSON,
    "wrong_type": Reason.WRONG_TYPE,
    "nan": Reason.NON_FINITE,
    "missing_field": Reason.MISSING_FIELD,
    "unknown_kind": Reason.UNKNOWN_KIND,
    "future_ts": Reason.FUTURE_TS,
    "oversized": Reason.TOO_LARGE,
    "wrong_topic": Reason.TOPIC_MISMATCH,
}

CENTURY_MS = 100 * 365 * 86_400_000  # far beyond any clock skew an edge tolerates
REQUIRED = ("v", "device", "kind", "ts", "seq", "metrics")


def malformed(
    bad_kind: str,
    rng: np.random.Generator,
    reading: dict[str, object],
    other_device: str,
) -> bytes:
    """A malformed version of ``reading`` (the dict of a good Reading) of kind ``bad_kind``.

    ``other_device`` is the id a misconfigured device would wrongly put in its payload.
    """
    r = dict(reading)
    metrics = dict(r["metrics"])  # type: ignore[call-overload]
    first = next(iter(metrics))
    match bad_kind:
        case "not_json":
            if rng.random() < 0.5:
                return _dump(r)[: int(rng.integers(5, 40))]  # cut off mid-message
            return " ".join(f"{k}={v}" for k, v in metrics.items()).encode()
        case "wrong_type":
            variant = int(rng.integers(3))
            if variant == 0:
                metrics[first] = str(metrics[first])
                r["metrics"] = metrics
            elif variant == 1:
                r["ts"] = str(r["ts"])
            else:
                r["metrics"] = list(metrics.values())
            return _dump(r)
        case "nan":
            text = ("NaN", "Infinity", "-Infinity", "1e999")[int(rng.integers(4))]
            metrics[first] = 0.0
            r["metrics"] = metrics
            return _dump(r).replace(f'"{first}":0.0'.encode(), f'"{first}":{text}'.encode(), 1)
        case "missing_field":
            del r[REQUIRED[int(rng.integers(len(REQUIRED)))]]
            return _dump(r)
        case "unknown_kind":
            r["kind"] = "toaster"
            return _dump(r)
        case "future_ts":
            r["ts"] = int(r["ts"]) + CENTURY_MS  # type: ignore[call-overload]
            return _dump(r)
        case "oversized":
            r["firmware_log"] = "x" * int(rng.integers(1100, 4000))
            return _dump(r)
        case "wrong_topic":
            r["device"] = other_device
            return _dump(r)
    raise ValueError(f"unknown bad payload kind {bad_kind!r}; known: {', '.join(BAD_KINDS)}")


def _dump(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
