"""``edgepipe bench``: speed and quality, each beside a baseline measured in the same run.

Every figure is the median of several runs, with min and max, because these machines are
noisy; ratios compare two things measured back to back in this process. Parts that are not
built yet report ``null`` with the reason, never an invented number.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from pipeline.protocol import Reading, decode_reading, encode

NOT_YET: dict[str, str] = {
    "broker.ceiling_readings_per_s": "not built yet (issue 8)",
    "edge.readings_per_s": "not built yet (issue 8)",
    "edge.readings_per_s_detect": "not built yet (issue 8)",
    "edge.rss_mb_10k_devices": "not built yet (issue 8)",
    "latency.alert_p50_ms": "alerts not built yet (issue 5)",
    "latency.alert_p99_ms": "alerts not built yet (issue 5)",
    "uplink.json_bytes_per_reading": "bounded-error compression not built yet (issue 4)",
    "uplink.shipped_bytes_per_reading": "bounded-error compression not built yet (issue 4)",
    "uplink.reduction_factor": "bounded-error compression not built yet (issue 4)",
    "uplink.max_error_over_resolution": "bounded-error compression not built yet (issue 4)",
    "cloud.points_per_s": "not built yet (issue 6)",
    "cloud.raw_post_points_per_s": "not built yet (issue 6)",
    "quality.sim.f1": "detector scoring not built yet (issue 5)",
    "quality.nab.standard": "NAB scorer not built yet (issue 8)",
    "quality.warm_start_speedup": "model deltas not built yet (issue 5)",
    "dashboard.render_s_1m_points": "not built yet (issue 7)",
}


def _median_rate(work: Callable[[], int], repeats: int) -> dict[str, float]:
    """Run ``work`` (which returns how many items it did) ``repeats`` times; items/s stats."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        items = work()
        rates.append(items / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def bench_reading_decode(n: int, repeats: int) -> dict[str, Any]:
    """Validated decode of device readings against plain ``json.loads`` of the same bytes."""
    now = time.time_ns() // 1_000_000
    payloads = [
        encode(
            Reading(
                v=1,
                device=f"soil_probe-{i % 500:04d}",
                kind="soil_probe",
                ts=now - n + i,
                seq=i,
                metrics={"moisture": 30.0 + (i % 7) / 10, "soil_temp": 12.5},
            )
        )
        for i in range(n)
    ]
    devices = [f"soil_probe-{i % 500:04d}" for i in range(n)]

    def validated() -> int:
        for payload, device in zip(payloads, devices, strict=True):
            decode_reading(payload, site="farm", device=device, now_ms=now)
        return n

    def baseline() -> int:
        for payload in payloads:
            json.loads(payload)
        return n

    ours = _median_rate(validated, repeats)
    base = _median_rate(baseline, repeats)
    return {
        "codec.decode_readings_per_s": ours,
        "codec.json_loads_per_s": base,
        "codec.decode_ratio_to_json_loads": ours["median"] / base["median"],
    }


def run_bench(quick: bool = False, echo: Callable[[str], object] = print) -> dict[str, Any]:
    repeats = 3 if quick else 7
    n = 20_000 if quick else 100_000
    results: dict[str, Any] = {"machine_note": "medians of repeated runs; see docs/benchmarks.md"}
    results.update(bench_reading_decode(n, repeats))
    results.update({key: None for key in NOT_YET})
    results["not_measured"] = NOT_YET
    for key, value in results.items():
        if isinstance(value, dict) and "median" in value:
            echo(f"{key:<40} {value['median']:>14,.0f}  (min {value['min']:,.0f}, max {value['max']:,.0f})")
        elif isinstance(value, float):
            echo(f"{key:<40} {value:>14.2f}")
        elif value is None:
            echo(f"{key:<40} {'-':>14}  {NOT_YET[key]}")
    return results
