"""quality.warm_start_speedup: a warm node needs at most a fifth of the readings, no more false alarms."""

from __future__ import annotations

from pipeline.bench.warm_start import bench_warm_start


def test_a_warm_node_alerts_five_times_sooner_without_more_false_alarms() -> None:
    result = bench_warm_start()
    details = result["quality.warm_start_details"]
    print(f"\nspeedup {result['quality.warm_start_speedup']:.1f}: {details}")

    assert result["quality.warm_start_speedup"] >= 5
    assert details["warm_false_alarms"] <= details["cold_false_alarms"]
