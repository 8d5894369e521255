"""The peer band's bench, on a few fridges: every path runs and its figures are consistent."""

from __future__ import annotations

from pathlib import Path

from dashboards.queries import bucket_ms
from pipeline.bench.dashboard import T0, bench_peer_band


def test_the_peer_band_bench_times_the_explorer_with_and_without_the_band(tmp_path: Path) -> None:
    lines: list[str] = []

    figures = bench_peer_band(tmp_path, 2, lines.append, peers=4, windows=90)

    band, baseline = figures["dashboard.peer_band_s"], figures["dashboard.peer_band_baseline_s"]
    for stats in (band, baseline):
        assert 0 < stats["min"] <= stats["median"] <= stats["max"]
    assert figures["dashboard.peer_band_ratio"] == band["median"] / baseline["median"]
    # 90 one-minute windows in the buckets the explorer picks for 7 days (aligned to the epoch)
    every = bucket_ms(7 * 86_400_000)
    assert every is not None
    buckets = {(T0 + i * 60_000) // every for i in range(90)}
    assert figures["dashboard.peer_band_details"]["buckets"] == len(buckets)
    assert any("with the band of 3 peers" in line for line in lines)
