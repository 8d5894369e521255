"""``quality.warm_start_speedup``: readings a new device needs before its first correct alert.

Two sites of 10 fridges each learn for two simulated days (1-minute readings) and ship
hourly model deltas; they are quantised, merged as the cloud merges them, and the merged
model becomes each new device's prior (:mod:`pipeline.learn.sync_stats`). Then 20 new fridges
(another seed: a daily temperature cycle, a per-device offset, noise) are scored by a cold
detector and by a warm-started one on the same values.

* **Readings to the first correct alert**: for each device, the first spike (+1.5 °C for 3
  readings) is placed at reading k = 1, 2, 3, ...; the figure is the smallest k + 1 at
  which the detector raises an alert inside the spike, i.e. how many readings of a new
  device the node needs before an anomaly is caught. Median over devices.
* **False alarms**: the same devices over 720 readings with spikes every 20 to 80
  readings; an alert (a score reaching ``alert.raise_score``, 0.9, after one below it)
  outside a spike and the 3 readings after it is a false alarm. Summed over devices.

The speedup is the cold median over the warm median; the target is at least 5 with no more
false alarms. Synthetic on purpose: the anomaly times are known exactly and both detectors
see the same values. ``python -m pipeline.bench.warm_start`` prints the figures.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import numpy as np

from pipeline.detect.seasonal import SeasonalResidualDetector
from pipeline.edge.model_sync import ModelSync
from pipeline.learn.sync_stats import StatsAccumulator, merge_stats, prior_from_stats
from pipeline.protocol.model_codec import quantise_stats

MINUTE_MS = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % 86_400_000
RAISE = 0.9


def fridge(rng: np.random.Generator, n: int, start_ms: int, spikes: bool) -> tuple[list[int], list[float], set[int]]:
    """One fridge's timestamps, values and the indexes inside (or just after) an anomaly."""
    ts = [start_ms + i * MINUTE_MS for i in range(n)]
    offset = rng.normal(0, 0.3)
    day = np.array([(t % 86_400_000) / 86_400_000 for t in ts])
    values = 4.0 + offset + 0.5 * np.sin(2 * math.pi * day) + rng.normal(0, 0.1, n)
    anomalous: set[int] = set()
    if spikes:
        i = int(rng.integers(20, 81))
        while i + 3 < n:
            values[i : i + 3] += 1.5
            anomalous.update(range(i, i + 6))
            i += int(rng.integers(20, 81))
    return ts, [round(float(v), 1) for v in values], anomalous


def merged_prior(sites: int = 2, devices: int = 10, days: int = 2, seed: int = 1) -> Any:
    rng = np.random.default_rng(seed)
    merged = StatsAccumulator().to_stats()
    for s in range(sites):
        sync = ModelSync(f"shop{s}", f"edge-shop{s}", key=b"k", cloud_key=b"", interval_ms=1)
        streams = [fridge(rng, days * 1440, T0, spikes=False) for _ in range(devices)]
        for i in range(days * 1440):
            for d, (ts, xs, _) in enumerate(streams):
                sync.learn_one(f"f{s}-{d}", "fridge", "temp", xs[i], ts[i])
            if (i + 1) % 60 == 0:
                for metrics in sync.take_deltas(0).values():
                    merged = merge_stats(merged, metrics["temp"])
    return prior_from_stats(quantise_stats(merged), version=1)


def score_device(ts: list[int], xs: list[float], anomalous: set[int], prior: Any) -> tuple[int, int]:
    """(readings to the first correct alert, false alarms) of one detector over one stream."""
    d = SeasonalResidualDetector()
    if prior is not None:
        d.warm_start(prior)
    first, false_alarms, above = len(xs) + 1, 0, False  # len + 1: never
    for i, (t, x) in enumerate(zip(ts, xs, strict=True)):
        score = d.score_value(x, t)
        d.learn_value(x, t)
        if score >= RAISE and not above:
            if i in anomalous:
                first = min(first, i + 1)
            else:
                false_alarms += 1
        above = score >= RAISE
    return first, false_alarms


def first_detectable(ts: list[int], xs: list[float], prior: Any, limit: int = 300) -> int:
    """Smallest k + 1 such that a spike starting at reading k is alerted on (``limit``: never)."""
    for k in range(1, limit):
        spiked = xs[: k + 3]
        spiked[k : k + 3] = [x + 1.5 for x in spiked[k : k + 3]]
        first, _ = score_device(ts[: k + 3], spiked, set(range(k, k + 3)), prior)
        if first <= k + 3:
            return k + 1
    return limit


def bench_warm_start(devices: int = 20, readings: int = 720, seed: int = 7) -> dict[str, Any]:
    prior = merged_prior()
    rng = np.random.default_rng(seed)
    cold_first, warm_first, cold_fa, warm_fa = [], [], 0, 0
    for k in range(devices):
        ts, xs, anomalous = fridge(rng, readings, T0 + 5 * 86_400_000 + k * 7 * MINUTE_MS, spikes=True)
        clean_ts, clean, _ = fridge(rng, 310, ts[0], spikes=False)
        cold_first.append(first_detectable(clean_ts, clean, None))
        warm_first.append(first_detectable(clean_ts, clean, prior))
        cold_fa += score_device(ts, xs, anomalous, None)[1]
        warm_fa += score_device(ts, xs, anomalous, prior)[1]
    cold, warm = statistics.median(cold_first), statistics.median(warm_first)
    return {
        "quality.warm_start_speedup": cold / warm,
        "quality.warm_start_details": {
            "cold_readings_to_first_alert_median": cold,
            "warm_readings_to_first_alert_median": warm,
            "cold_readings_to_first_alert_max": max(cold_first),
            "warm_readings_to_first_alert_max": max(warm_first),
            "cold_false_alarms": cold_fa,
            "warm_false_alarms": warm_fa,
            "devices": devices,
            "readings_per_device": readings,
            "target": "speedup >= 5 with warm_false_alarms <= cold_false_alarms",
        },
    }


if __name__ == "__main__":
    print(json.dumps(bench_warm_start(), indent=2))
