"""``edgepipe bench`` runs every part end to end on a tiny plan and reports every key.

No timing thresholds here: speed is only ever measured by the benchmark itself. These
tests check that each figure is produced, positive, and honest (the error check can fail,
missing parts say why).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import msgspec
import pytest

from pipeline.bench import NOT_YET, Plan, run_bench
from pipeline.bench.common import ratio, summarise
from pipeline.bench.edge import BenchError, uplink_figures
from pipeline.bench.latency import percentile
from pipeline.bench.stream import Stream, sim_stream
from pipeline.ingest.registry import ADAPTERS
from pipeline.protocol import Reading, encode

MEASURED = [
    "broker.ceiling_readings_per_s",
    "edge.readings_per_s",
    "edge.readings_per_s_detect",
    "edge.rss_mb_10k_devices",
    "sim.readings_per_s",
    "sim.null_readings_per_s",
    "cloud.points_per_s",
    "cloud.raw_post_points_per_s",
    *(f"edge.readings_per_s_{fmt}_ratio" for fmt in ADAPTERS),
]
PLAIN = [
    "edge.readings_per_s_ratio_to_ceiling",
    "edge.readings_per_s_detect_ratio_to_ceiling",
    "latency.alert_p50_ms",
    "latency.alert_p99_ms",
    "latency.alert_p50_ms_offline",
    "latency.alert_p99_ms_offline",
    "uplink.json_bytes_per_reading",
    "uplink.shipped_bytes_per_reading",
    "uplink.reduction_factor",
]


@pytest.fixture(scope="module")
def tiny_results() -> dict[str, Any]:
    lines: list[str] = []
    results = run_bench(plan=Plan.tiny(), echo=lines.append)
    results["_printed"] = lines
    return results


def test_every_part_runs_and_reports_positive_figures(tiny_results: dict[str, Any]) -> None:
    assert tiny_results["errors"] == {}, tiny_results["errors"]
    for key in MEASURED:
        stats = tiny_results[key]
        assert stats["median"] > 0, key
        assert stats["min"] <= stats["median"] <= stats["max"], key
    for key in PLAIN:
        assert tiny_results[key] > 0, key


def test_the_shipped_values_keep_the_error_bound(tiny_results: dict[str, Any]) -> None:
    assert 0 <= tiny_results["uplink.max_error_over_resolution"] <= 0.5
    details = tiny_results["uplink.details"]
    assert details["points_compared"] == details["points_shipped"] > 0
    assert details["aggregated_points"] == details["points_in"]  # nothing late, nothing lost


def test_parts_not_built_are_null_with_a_reason(tiny_results: dict[str, Any]) -> None:
    for key in NOT_YET:
        assert tiny_results[key] is None
        assert tiny_results["not_measured"][key]
    assert not set(tiny_results["not_measured"]) & set(MEASURED + PLAIN)


def test_the_results_are_json_and_printed(tiny_results: dict[str, Any]) -> None:
    printed = "\n".join(tiny_results.pop("_printed"))
    json.dumps(tiny_results)
    for key in MEASURED + PLAIN + list(NOT_YET):
        assert key in printed


# -- the pieces, without a broker ---------------------------------------------------------


class FakeTap:
    """What ``UplinkTap`` would hold after a run, written by hand."""

    def __init__(self, shipped: dict[tuple[str, int], tuple[str, dict[str, float]]]) -> None:
        self.shipped = shipped
        self.points = sum(len(v) for _, v in shipped.values())
        self.errors: list[str] = []
        self.bytes = Counter({"batch": 40, "agg": 60})
        self.messages = Counter({"batch": 1, "agg": 1})
        self.resent = 0
        self.aggregated_points = 4
        self.agg_zstd_bytes = 30


def _stream() -> Stream:
    readings = [
        Reading(v=1, device="fridge-0001", kind="fridge", ts=1000 + i, seq=i, metrics={"temp": 4.0, "door": 0.0})
        for i in range(2)
    ]
    return Stream(["fridge-0001"] * 2, [encode(r) for r in readings], 1, 2, 1.0)


def _result(tap: FakeTap) -> dict[str, Any]:
    stopped = {"readings_shipped": tap.points, "points_in": 4, "alerts": {}}
    return {"accepted": 2, "stopped": stopped, "late": 0}


def test_the_error_check_sees_a_value_off_by_one_resolution() -> None:
    tap = FakeTap({("fridge-0001", 1000): ("fridge", {"temp": 4.1}), ("fridge-0001", 1001): ("fridge", {"door": 0.0})})
    figures = uplink_figures(_stream(), tap, _result(tap))  # type: ignore[arg-type]
    assert figures["uplink.max_error_over_resolution"] == pytest.approx(1.0)
    assert figures["uplink.shipped_bytes_per_reading"] == 50.0
    assert figures["uplink.reduction_factor"] == pytest.approx(_stream().json_bytes / 100)


def test_a_shipped_point_without_an_original_is_an_error() -> None:
    tap = FakeTap({("fridge-0001", 999): ("fridge", {"temp": 4.0})})
    with pytest.raises(BenchError, match="match no original"):
        uplink_figures(_stream(), tap, _result(tap))  # type: ignore[arg-type]


def test_simulated_streams_stay_in_the_accepted_time_range() -> None:
    now = 1_800_000_000_000
    stream = sim_stream(30, 5, now_ms=now, boundary_at=0.5)
    assert stream.n == 150 and stream.json_bytes > 0
    last: dict[str, int] = {}
    for device, payload in zip(stream.devices, stream.payloads, strict=True):
        reading = msgspec.json.decode(payload, type=Reading)
        assert reading.device == device
        assert now - 7 * 86_400_000 < reading.ts < now  # not stale, not in the future
        assert reading.ts > last.get(device, 0)  # strictly increasing per device
        last[device] = reading.ts


def test_summaries_ratios_and_percentiles() -> None:
    stats = summarise([3.0, 1.0, 2.0])
    assert (stats["median"], stats["min"], stats["max"]) == (2.0, 1.0, 3.0)
    assert ratio(stats, {"median": 4.0}) == 0.5
    assert ratio(stats, None) is None
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([7.0, 1.0], 99) == 7.0
