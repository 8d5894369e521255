"""``edgepipe priors learn``: the built-in kinds' priors, learned from the simulators.

The node warm-starts a new detector from a prior so that it scores after ``PRIOR_WARMUP``
readings, not a hundred (``pipeline.learn.kind_priors``). Model sync gives one per kind once
the cloud has merged enough; until then (and without model sync) the node takes the one
shipped in the package, ``pipeline/learn/priors/builtin.json``, which this module writes:

* the same mechanism as model sync and the quality bench's warm start: a simulated fleet's
  readings into ``StatsAccumulator`` (``learn_stats``), then ``prior_from_stats``;
* a fleet the quality bench never sees: seed ``LEARN_SEED``, in ``LEARN_YEAR`` (the bench
  runs seeds 11 and 1011 in July 2024);
* one window a month, so that the range and the time-of-day profile hold every season (a
  July-only prior puts a December morning outside the kind's range: an alert);
* at each rate of ``PRIOR_INTERVALS_S``: the residual sizes depend on the reporting rate
  (docs/detection.md, "Built-in priors", has the measurement). The windows are longer at the
  slow rates so that each rate sees about as many readings; the 1 Hz windows start two hours
  later each month, so that together they cover the day.

Deterministic: the same code gives the same file (the simulators are seeded and not paced).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from pipeline.bench.quality import SITES, Pipeline, learn_stats, ours
from pipeline.bench.rates import RATE_INTERVALS_S, RatePlan, figures, simulate
from pipeline.config import AlertSettings
from pipeline.detect.detection import build
from pipeline.detect.registry import EDGE_REFERENCE_INTERVAL_S
from pipeline.learn.kind_priors import KindPriors, RatePriors
from pipeline.learn.sync_stats import (
    PRIOR_EFFECTIVE_N,
    DetectorPrior,
    merge_stats,
    prior_from_stats,
)
from pipeline.protocol.model_codec import MetricStats
from simulators import SimOptions

LEARN_SEED = 20_251_215
LEARN_YEAR = 2025
PRIOR_INTERVALS_S = (1.0, 60.0, 900.0)  # the rates a built-in prior is kept at
WINDOW_S = {1.0: 2 * 3600.0, 60.0: 86_400.0, 900.0: 7 * 86_400.0}  # one window a month, per rate
DEVICES_PER_SITE = 10  # every kind of every domain's mix at least once
HOUR_MS = 3_600_000
MIN_EFFECTIVE_READINGS = 50  # a residual_top of 8 needs a sample well above 8


def window_starts(interval_s: float) -> list[int]:
    """The 15th of each month of ``LEARN_YEAR``; the 1 Hz windows two hours later each month."""
    starts = []
    for month in range(1, 13):
        day = datetime(LEARN_YEAR, month, 15, tzinfo=UTC)
        hour = 2 * (month - 1) if WINDOW_S[interval_s] < 86_400 else 0
        starts.append(int(day.timestamp() * 1000) + hour * HOUR_MS)
    return starts


def learn_at(interval_s: float, echo: Callable[[str], object] = print) -> dict[tuple[str, str], MetricStats]:
    """The merged statistics of the twelve windows at one rate (each window its own fleet run)."""
    merged: dict[tuple[str, str], MetricStats] = {}
    for start_ms in window_starts(interval_s):
        options = SimOptions(
            sites=SITES,
            devices_per_site=DEVICES_PER_SITE,
            rate=1.0 / interval_s,
            duration=WINDOW_S[interval_s],
            seed=LEARN_SEED,
            start_ms=start_ms,
            realtime=False,
        )
        for key, stats in learn_stats(options).items():
            merged[key] = merge_stats(merged[key], stats) if key in merged else stats
    echo(f"  every {interval_s:g} s: {sum(s.n for s in merged.values())} values of {len(merged)} kind metrics")
    return merged


def effective_readings(interval_s: float) -> int:
    """The readings a warm residual memory stands for at this rate (its residuals' sample).

    The edge detector's memory counts time in reference intervals (``EDGE_REFERENCE_INTERVAL_S``,
    a minute), and a warm start makes it stand for ``PRIOR_EFFECTIVE_N`` of them: at 1 Hz that
    is 60,000 readings, whose largest changes include rare ones (a compressor switching on)
    that the largest of 1,000 readings miss (measured: fridge power false alarms on the first
    day 27 with the 1,000-reading residuals, 11 cold). Slower than the reference interval it
    is fewer readings: at 1/15 min, 67 (the largest of 1,000 readings, ten days, made the
    prior deaf: recall 0.02 on the first day).
    """
    return max(MIN_EFFECTIVE_READINGS, round(PRIOR_EFFECTIVE_N * EDGE_REFERENCE_INTERVAL_S / interval_s))


def learn_kind_priors(echo: Callable[[str], object] = print) -> KindPriors:
    """Rate-free parts from the 1/min windows (every 15-minute bin of every month), residuals per rate."""
    by_rate = {interval: learn_at(interval, echo) for interval in PRIOR_INTERVALS_S}
    priors: KindPriors = {}
    for key, stats in sorted(by_rate[60.0].items()):
        base = prior_from_stats(stats, version=1)
        if base is None:
            continue
        rates: dict[float, tuple[float, list[float]]] = {}
        low, high = base.low, base.high
        for interval, learned in by_rate.items():
            n = effective_readings(interval)
            at_rate = prior_from_stats(learned[key], version=1, effective_n=n) if key in learned else None
            if at_rate is not None:
                rates[interval] = (at_rate.previous_error, at_rate.residual_top)
                low, high = min(low, at_rate.low), max(high, at_rate.high)
        priors[key] = RatePriors(base.day_profile, base.day_error, low, high, rates)
    return priors


def how_learned() -> dict[str, object]:
    """The ``learned`` record of the shipped file: enough to learn it again."""
    return {
        "command": "edgepipe priors learn --out pipeline/learn/priors/builtin.json",
        "seed": LEARN_SEED,
        "windows": f"the 15th of each month of {LEARN_YEAR}",
        "devices_per_site": DEVICES_PER_SITE,
        "sites": list(SITES),
        "window_s": {f"{k:g}": v for k, v in WINDOW_S.items()},
    }


# --- the measurement behind the choices (docs/detection.md, "Built-in priors") -----------------

FIRST_HOURS = 1.0  # what a new user watches: the first hour, and the first day beside it


def _with_priors(priors: KindPriors, forced_interval_s: float | None) -> Callable[[str], Pipeline]:
    """The node's path with the built-in priors at each series' own rate (or at a forced one)."""

    def lookup(kind: str, metric: str, interval_s: float) -> DetectorPrior | None:
        p = priors.get((kind, metric))
        return None if p is None else p.at(interval_s if forced_interval_s is None else forced_interval_s)

    def make(site: str) -> Pipeline:
        return Pipeline(site, build(site, AlertSettings(), rate_prior=lookup))

    return make


def cold_start_experiment(
    priors: KindPriors, devices_per_site: int = 10, forced: bool = True, echo: Callable[[str], object] = print
) -> dict[str, dict[str, float | None]]:
    """False alarms in a fleet's first hour and first day, without priors, with them at the
    series' rate, and with them forced to another rate (is keeping several rates needed?).

    The fleets are the rate bench's (``RatePlan``: seed 11, July 2024, anomalies at the
    simulators' default rate), which the priors were not learned from.
    """
    out: dict[str, dict[str, float | None]] = {}
    for name, interval in RATE_INTERVALS_S.items():
        days = 1.0
        devices = devices_per_site if interval >= 60 else max(1, devices_per_site // 5)
        plan = RatePlan(name, interval, devices, days, learning_days=0.0)
        variants: dict[str, Callable[[str], Pipeline]] = {
            "none": ours,
            "at_rate": _with_priors(priors, None),
        }
        for other in PRIOR_INTERVALS_S if forced else ():
            if other != interval:
                variants[f"forced_{other:g}s"] = _with_priors(priors, other)
        for label, variant in variants.items():
            [run] = simulate(plan, variant)
            hour = figures(run, 0.0, FIRST_HOURS / 24)
            day = figures(run, 0.0, days)
            devices_run = len(run.first_ts)
            row = {
                "devices": float(devices_run),
                "false_alarms_first_hour": _count(hour["false_alarms_per_device_day"], devices_run * FIRST_HOURS / 24),
                "false_alarms_first_day": _count(day["false_alarms_per_device_day"], devices_run * days),
                "recall_first_day": day["recall"],
                "precision_first_day": day["precision"],
                "median_delay_s_first_day": day["median_delay_s"],
            }
            out[f"{name}.{label}"] = row
            echo(f"  {name:6} {label:12} " + " ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
    return out


def _count(per_device_day: float | None, device_days: float) -> float | None:
    return None if per_device_day is None else round(per_device_day * device_days, 3)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


if __name__ == "__main__":  # python -m pipeline.bench.priors: the experiment, on the shipped file
    import sys

    from pipeline.edge.model_sync import builtin_priors

    cold_start_experiment(builtin_priors(), forced="--no-forced" not in sys.argv)
