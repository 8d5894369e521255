"""Priors for the built-in device kinds, kept at a few reporting rates (the shipped file's format).

A :class:`~pipeline.learn.sync_stats.DetectorPrior` lets a new detector score after
``PRIOR_WARMUP`` readings instead of a hundred. Model sync makes one from the cloud's merged
model of a kind; a node without model sync (``edgepipe demo``'s first seconds, a new user's
first hour) has none, so the package ships one per built-in kind and metric, learned from
the simulators (``edgepipe priors learn``, docs/detection.md "Built-in priors").

Why several rates: the residual sizes of a prior (``previous_error``, ``residual_top``) come
from the change between a device's successive readings, and that change grows with the
interval (a soil probe's moisture moves 0.1 % in a second, several % in fifteen minutes while
it irrigates). A prior learned at one rate makes a series at another rate either deaf (learned
slower) or jumpy (learned faster). So the rate-free parts (the time-of-day profile, its
error, the range) are kept once and the residual sizes once per learned interval;
:meth:`RatePriors.at` picks the interval nearest to the series' own (by ratio, not by
difference: 30 s is nearer 60 s than 1 s).

No I/O here: the node reads the package file (``pipeline.edge.model_sync``) and passes bytes.

>>> p = RatePriors([1.0] * 96, 0.5, 0.0, 10.0, {1.0: (0.1, [0.3] * 8), 60.0: (0.4, [1.0] * 8)})
>>> p.at(2.0).residual_top[0], p.at(30.0).residual_top[0]
(0.3, 1.0)
>>> decode_priors(encode_priors({("k", "m"): p}, {"seed": 1}))[0][("k", "m")] == p
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from pipeline.learn.sync_stats import DetectorPrior

FORMAT_VERSION = 1
SIGNIFICANT_DIGITS = 4  # the file's floats: 4 significant digits (a prior is a rough start)


@dataclass(frozen=True)
class RatePriors:
    """One kind metric's prior: rate-free parts once, ``rates[interval_s] = (previous_error, residual_top)``."""

    day_profile: list[float]
    day_error: float | None
    low: float
    high: float
    rates: dict[float, tuple[float, list[float]]]

    def at(self, interval_s: float) -> DetectorPrior:
        """The prior for a series reporting every ``interval_s`` seconds: the nearest learned rate."""
        wanted = math.log(max(interval_s, 1e-3))
        nearest = min(self.rates, key=lambda learned: abs(math.log(learned) - wanted))
        previous_error, residual_top = self.rates[nearest]
        return DetectorPrior(
            version=0,  # not a merged model's version: model sync's start at 1
            day_profile=list(self.day_profile),
            day_error=self.day_error,
            previous_error=previous_error,
            residual_top=list(residual_top),
            low=self.low,
            high=self.high,
        )


KindPriors = dict[tuple[str, str], RatePriors]


def _round(x: float) -> float:
    if x == 0.0 or not math.isfinite(x):
        return x
    return round(x, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(x))))


def encode_priors(priors: Mapping[tuple[str, str], RatePriors], learned: Mapping[str, Any]) -> bytes:
    """The shipped JSON: ``learned`` says how (command, seed, dates); floats to 4 digits, NaN as null."""
    kinds: dict[str, dict[str, Any]] = {}
    for (kind, metric), p in sorted(priors.items()):
        kinds.setdefault(kind, {})[metric] = {
            "day_profile": [None if v != v else _round(v) for v in p.day_profile],
            "day_error": None if p.day_error is None else _round(p.day_error),
            "low": p.low,
            "high": p.high,
            "rates": {
                f"{interval:g}": {"previous_error": _round(err), "residual_top": [_round(r) for r in top]}
                for interval, (err, top) in sorted(p.rates.items())
            },
        }
    document = {"format": FORMAT_VERSION, "learned": dict(learned), "kinds": kinds}
    return msgspec.json.encode(document) + b"\n"


def decode_priors(data: bytes) -> tuple[KindPriors, dict[str, Any]]:
    """``encode_priors``'s bytes back: the priors and how they were learned (ValueError if not that format)."""
    document = msgspec.json.decode(data)
    if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
        raise ValueError(f"not a kind priors file of format {FORMAT_VERSION}")
    priors: KindPriors = {}
    for kind, metrics in document["kinds"].items():
        for metric, p in metrics.items():
            priors[(kind, metric)] = RatePriors(
                day_profile=[math.nan if v is None else float(v) for v in p["day_profile"]],
                day_error=None if p["day_error"] is None else float(p["day_error"]),
                low=float(p["low"]),
                high=float(p["high"]),
                rates={
                    float(interval): (float(r["previous_error"]), [float(x) for x in r["residual_top"]])
                    for interval, r in p["rates"].items()
                },
            )
    return priors, dict(document.get("learned", {}))
