"""``edgepipe bench``: speed and quality, each beside a baseline measured in the same run.

Every figure is the median of several runs, with min and max, because these machines are
noisy; ratios compare two things measured back to back in this run. Parts that are not
built yet report ``null`` with the reason, never an invented number; a part that fails
reports ``null`` with the error, and the other parts still run.

The bench starts its own Mosquitto (and InfluxDB for the cloud part) on free loopback
ports and stops exactly those. docs/benchmarks.md explains every figure.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.ingest.registry import ADAPTERS
from pipeline.protocol import Reading, decode_reading, encode

if TYPE_CHECKING:
    from pipeline.bench.edge import EdgePlan

NOT_YET: dict[str, str] = {}

# The measured keys of each part: when a part fails they are reported null with its error.
PART_KEYS: dict[str, tuple[str, ...]] = {
    "throughput": (
        "broker.ceiling_readings_per_s",
        "edge.readings_per_s",
        "edge.readings_per_s_ratio_to_ceiling",
        "edge.readings_per_s_detect",
        "edge.readings_per_s_detect_ratio_to_ceiling",
    ),
    "codec": (),
    "ingest": (),
    "formats": tuple(f"edge.readings_per_s_{fmt}_ratio" for fmt in ADAPTERS),
    "latency": ("latency.alert_p50_ms", "latency.alert_p99_ms"),
    "latency_nodelay": ("latency.alert_p50_ms_tcp_nodelay", "latency.alert_p99_ms_tcp_nodelay"),
    "latency_offline": ("latency.alert_p50_ms_offline", "latency.alert_p99_ms_offline"),
    "rss": ("edge.rss_mb_10k_devices",),
    "snapshot": ("edge.bytes_per_series_state",),
    "uplink": (
        "uplink.json_bytes_per_reading",
        "uplink.shipped_bytes_per_reading",
        "uplink.reduction_factor",
        "uplink.max_error_over_resolution",
    ),
    "sim": ("sim.readings_per_s", "sim.null_readings_per_s"),
    "cloud": ("cloud.points_per_s", "cloud.raw_post_points_per_s", "cloud.worker_points_per_s"),
    "quality": (
        "quality.sim.f1_1min_plan",
        "quality.sim.precision",
        "quality.sim.recall",
        "quality.sim.median_delay_readings",
        "quality.sim.false_alarms_per_device_day",
        "quality.nab.standard",
        "quality.nab.low_fp",
        "quality.nab.low_fn",
        "quality.sim.f1_river_hst",
        "quality.nab.standard_river_hst",
        "detect.us_per_reading",
    ),
    "analyst": (
        "quality.sim.f1_edge",
        "quality.sim.f1_edge_cloud",
        "quality.sim.precision_edge_cloud",
        "quality.sim.recall_edge_cloud",
        "quality.sim.false_alarms_per_device_day_edge_cloud",
        "quality.sim.recall_by_anomaly_edge_cloud",
        "cloud.analyst_aggregates_per_s",
        "quality.sim.f1_edge_cloud_escalation",
        "quality.sim.escalation_bytes_per_reading",
        "quality.sim.f1_gain_per_escalated_kb",
    ),
    "rates": (
        "quality.sim.f1",
        "quality.sim.f1_worst_rate",
        "quality.sim.rate_1hz.f1",
        "quality.sim.rate_1min.f1",
        "quality.sim.rate_15min.f1",
        "quality.sim.newcomer.precision",
        "quality.sim.newcomer.recall",
    ),
    "warm_start": ("quality.warm_start_speedup",),
    "dashboard": ("dashboard.render_s_1m_points",),
}


@dataclass(frozen=True)
class Plan:
    """How big each part is. ``quick`` stays under 2 minutes, ``full`` under 15, on 2 cores."""

    name: str
    repeats: int
    decode_n: int
    sim_devices_per_site: int
    sim_ticks: int
    latency_load_per_s: float
    latency_probes: int
    cloud_devices: int
    cloud_ticks: int
    variants: bool = False  # also: alert latency on a broker with set_tcp_nodelay true
    dashboard_points: int = 1_000_000
    snapshot_devices: int = 10_000  # learned-state snapshot figures: keys are named for the count
    snapshot_repeats: int = 3

    @classmethod
    def quick(cls) -> Plan:
        return cls("quick", 3, 20_000, 1000, 20, 5000.0, 30, 2000, 30, variants=True)

    @classmethod
    def full(cls) -> Plan:
        return cls("full", 5, 100_000, 1000, 60, 5000.0, 120, 2000, 50, variants=True, snapshot_devices=100_000)

    @classmethod
    def tiny(cls) -> Plan:
        """Every code path with a few hundred readings: for the unit test, not for figures."""
        return cls("tiny", 1, 500, 20, 3, 400.0, 3, 50, 4, dashboard_points=5_000, snapshot_devices=200, snapshot_repeats=1)

    def edge(self) -> EdgePlan:
        from pipeline.bench.edge import EdgePlan

        return {"quick": EdgePlan.quick, "full": EdgePlan.full, "tiny": EdgePlan.tiny}[self.name]()


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


def _first_line(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    influxd = shutil.which("influxd") or "/usr/bin/influxd"
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "mosquitto": _first_line([mosquitto, "-h"]),
        "influxd": _first_line([influxd, "version"]),
    }


def _settings_note() -> dict[str, Any]:
    """The node settings the edge figures depend on (defaults, unless EDGEPIPE_* says otherwise)."""
    from pipeline.config import load_settings

    s = load_settings()
    return {
        "select.method": s.select.method,
        "select.tolerance_resolutions": s.select.tolerance_resolutions,
        "select.heartbeat_s": s.select.heartbeat_s,
        "aggregate.window_s": s.aggregate.window_s,
        "edge.batch_max_readings": s.edge.batch_max_readings,
        "uplink.codec": s.uplink.codec,
        "uplink.commit_interval_ms": s.uplink.commit_interval_ms,
        "uplink.max_inflight": s.uplink.max_inflight,
    }


def run_bench(
    quick: bool = False,
    echo: Callable[[str], object] = print,
    *,
    plan: Plan | None = None,
    nab_dir: str | Path | None = None,
    only_quality: bool = False,
) -> dict[str, Any]:
    """Run every part (or only the quality part), print a table, return one JSON-ready dict.

    ``nab_dir``: the NAB folder for ``quality.nab.*`` (None: those keys are null, with why).
    """
    from pipeline.bench.analyst import ANALYST_CHECK_SEED, bench_quality_analyst
    from pipeline.bench.cloud import bench_cloud
    from pipeline.bench.dashboard import bench_dashboard
    from pipeline.bench.edge import (
        Harness,
        bench_formats,
        bench_rss,
        bench_throughput,
        bench_uplink,
    )
    from pipeline.bench.latency import bench_alert_latency
    from pipeline.bench.quality import bench_quality
    from pipeline.bench.rates import bench_quality_rates
    from pipeline.bench.sim import bench_sim
    from pipeline.bench.stream import sim_stream
    from pipeline.services import Mosquitto

    plan = plan or (Plan.quick() if quick else Plan.full())
    edge_plan = plan.edge()
    began = time.monotonic()
    results: dict[str, Any] = {
        "command": "edgepipe bench" + (" --quick" if plan.name == "quick" else "") + (" --quality" if only_quality else ""),
        "plan": plan.name,
        "machine_note": "medians of repeated runs, with min and max; see docs/benchmarks.md",
        "machine": machine(),
        "settings": _settings_note(),
    }
    failed: dict[str, str] = {}

    def part(name: str, title: str, work: Callable[[], dict[str, Any]]) -> None:
        echo(f"{title} ...")
        started = time.monotonic()
        try:
            results.update(work())
        except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others
            failed[name] = f"failed: {type(exc).__name__}: {exc}"
            echo(f"  FAILED: {type(exc).__name__}: {exc}")
        results.setdefault("part_seconds", {})[name] = round(time.monotonic() - started, 1)

    part("quality", "alert quality on simulated and NAB data", lambda: bench_quality(plan.name, nab_dir, echo))
    part("rates", "alert quality at 1 Hz, 1/min and 1/15 min, and the README's 1 Hz run", lambda: bench_quality_rates(plan.name, echo))
    part(
        "analyst",
        "alert quality of the edge and of edge + cloud (fleet analyst) in one run, and on a seed not tuned on",
        lambda: bench_quality_analyst(plan.name, echo, seed=ANALYST_CHECK_SEED),
    )
    if only_quality:
        return _finish(results, failed, began, echo, only=("quality", "rates", "analyst"))
    part("codec", "reading decode vs json.loads", lambda: bench_reading_decode(plan.decode_n, plan.repeats))
    part("ingest", "ingest adapters: decode cost per format, node rate vs native", lambda: _ingest(plan))
    part("warm_start", "readings to the first correct alert, warm vs cold", _warm_start)
    part(
        "snapshot",
        f"learned-state snapshot of {plan.snapshot_devices:,} devices: write, restore, size",
        lambda: _snapshot(plan, echo),
    )
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as tmp:
        workdir = Path(tmp)
        # Slow subscribers must not make the broker drop QoS 0 readings (its limit is per client).
        broker = Mosquitto(workdir / "mosquitto", max_queued_messages=2_000_000)
        harness: Harness | None = None
        try:
            broker.start()
            harness = Harness(broker.url, workdir)
            h = harness
            part(
                "throughput",
                f"broker ceiling and edge node, {edge_plan.repeats} interleaved rounds",
                lambda: bench_throughput(h, edge_plan, echo),
            )
            part(
                "formats",
                f"edge node fed each ingest format vs native, {edge_plan.repeats} interleaved rounds",
                lambda: bench_formats(h, edge_plan, echo),
            )
            part(
                "latency",
                f"alert latency at {plan.latency_load_per_s:,.0f} readings/s",
                lambda: bench_alert_latency(h, edge_plan, plan.latency_load_per_s, plan.latency_probes, echo),
            )
            part(
                "latency_offline",
                f"alert latency at {plan.latency_load_per_s:,.0f} readings/s with the cloud away (R9)",
                lambda: bench_alert_latency(
                    h, edge_plan, plan.latency_load_per_s, plan.latency_probes, echo, offline=True
                ),
            )
            part("rss", f"node memory with {edge_plan.rss_devices:,} devices", lambda: bench_rss(h, edge_plan, echo))
            part("uplink", "uplink bytes and error on simulator data", lambda: bench_uplink(h, edge_plan, echo))
            harness.close()
            harness = None
            part(
                "sim",
                "simulator publishing vs generating only",
                lambda: bench_sim(broker.url, plan.sim_devices_per_site, plan.sim_ticks, plan.repeats, echo),
            )
        except Exception as exc:  # noqa: BLE001 - the broker or the harness did not start
            for name in ("throughput", "formats", "latency", "latency_offline", "rss", "uplink", "sim"):
                failed.setdefault(name, f"failed: {type(exc).__name__}: {exc}")
            echo(f"  FAILED: {type(exc).__name__}: {exc}")
        finally:
            if harness is not None:
                harness.close()
            broker.stop()
        if plan.variants:
            part(
                "latency_nodelay",
                "alert latency again, on a broker with set_tcp_nodelay true",
                lambda: _latency_nodelay(workdir, edge_plan, plan, echo),
            )
        part(
            "cloud",
            "InfluxStore writes vs raw POSTs",
            lambda: bench_cloud(
                workdir, sim_stream(plan.cloud_devices, plan.cloud_ticks), plan.repeats, echo
            ),
        )
        part(
            "dashboard",
            f"device explorer over {plan.dashboard_points:,} stored points vs 10,000",
            lambda: bench_dashboard(workdir, plan.repeats, echo, plan.dashboard_points),
        )
    return _finish(results, failed, began, echo)


def _finish(
    results: dict[str, Any],
    failed: dict[str, str],
    began: float,
    echo: Callable[[str], object],
    only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Null every missing figure with its reason, add timings, print the table."""
    not_measured = {k: v for k, v in NOT_YET.items() if not only} | results.pop("_not_measured", {})
    for name, reason in failed.items():
        for key in PART_KEYS[name]:
            if results.get(key) is None:
                not_measured[key] = reason
    for key in not_measured:
        results[key] = None
    results["not_measured"] = not_measured
    results["errors"] = failed
    results["bench_seconds"] = round(time.monotonic() - began, 1)
    print_table(results, echo)
    return results


def _ingest(plan: Plan) -> dict[str, Any]:
    from pipeline.bench.ingest import bench_ingest

    return bench_ingest(min(plan.decode_n, 20_000), plan.repeats)


def _snapshot(plan: Plan, echo: Callable[[str], object]) -> dict[str, Any]:
    from pipeline.bench.snapshot import bench_snapshot

    return bench_snapshot(plan.snapshot_devices, 8, plan.snapshot_repeats, echo)


def _warm_start() -> dict[str, Any]:
    from pipeline.bench.warm_start import bench_warm_start

    return bench_warm_start()


def _latency_nodelay(workdir: Path, edge_plan: EdgePlan, plan: Plan, echo: Callable[[str], object]) -> dict[str, Any]:
    """The alert latency part on a second broker whose sockets disable Nagle's algorithm.

    Mosquitto leaves Nagle on by default (``set_tcp_nodelay false``): a small alert may wait
    for the acknowledgement of the previous segment. This variant shows what that costs.
    """
    from pipeline.bench.edge import Harness
    from pipeline.bench.latency import bench_alert_latency
    from pipeline.services import Mosquitto

    broker = Mosquitto(workdir / "mosquitto-nodelay", max_queued_messages=2_000_000, extra_config="set_tcp_nodelay true")
    broker.start()
    try:
        harness = Harness(broker.url, workdir)
        try:
            return bench_alert_latency(
                harness, edge_plan, plan.latency_load_per_s, plan.latency_probes, echo, suffix="_tcp_nodelay"
            )
        finally:
            harness.close()
    finally:
        broker.stop()


def _fmt(value: float) -> str:
    """Plain, with the digits a target needs: an F1 of 0.898 must not print as 0.90."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if 0.01 <= abs(value) < 1:
        return f"{value:.3f}"
    if abs(value) >= 1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"


def print_table(results: dict[str, Any], echo: Callable[[str], object] = print) -> None:
    """One line per figure: median (min, max), plain numbers, or '-' with the reason."""
    echo("")
    reasons = results.get("not_measured", {})
    for key, value in results.items():
        if key.endswith("details") or key in ("machine", "settings", "part_seconds"):
            continue
        if isinstance(value, dict) and "median" in value:
            echo(f"{key:<46} {_fmt(value['median']):>12}  (min {_fmt(value['min'])}, max {_fmt(value['max'])})")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            echo(f"{key:<46} {_fmt(value):>12}")
        elif value is None and key in reasons:
            echo(f"{key:<46} {'-':>12}  {reasons[key]}")
