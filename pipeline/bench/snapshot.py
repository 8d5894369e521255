"""Snapshot figures of ``edgepipe bench``: write, restore and size of a node's learned state.

Why in-process: the figures are about the snapshot store and the node's state, not MQTT, so
the node takes the bench stream through ``EdgeNode.handle`` (validation, journal, detection,
selection, aggregation: everything that builds state) with no broker. Each run builds the
state of ``devices`` simulated farm devices (``ticks`` readings each), then measures a full
write (every shard, as at the first snapshot after a start), an incremental write after 1 %
of the devices sent one more reading, and a restore into a fresh node (what a start does).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.bench.stream import sim_stream
from pipeline.config import load_settings
from pipeline.edge.node import EdgeNode
from pipeline.protocol import Topics

__all__ = ["bench_snapshot"]


def _count_name(devices: int) -> str:
    return f"{devices // 1000}k" if devices >= 1000 and devices % 1000 == 0 else str(devices)


def _one_run(workdir: Path, devices: int, ticks: int) -> dict[str, float]:
    stream = sim_stream(devices, ticks + 1, site="farm", boundary_at=0.0)  # the last tick: later
    settings = load_settings(
        overrides={
            "edge.site": "farm",
            "edge.state_dir": str(workdir),
            "mqtt.url": "mqtt://127.0.0.1:1",  # never connected: the node is fed in-process
            "edge.snapshot_interval_s": 3600,
        }
    )
    topics = Topics(settings.mqtt.topic_root)
    node = EdgeNode(settings)
    node.recover()
    last_index = {device: i for i, device in enumerate(stream.devices)}
    held = set(last_index.values())
    for i, (device, payload) in enumerate(zip(stream.devices, stream.payloads, strict=True)):
        if i not in held:
            node.handle(topics.reading("farm", device), payload)
    node.commit()
    series = len(node.detectors)
    t0 = time.perf_counter()
    node.write_snapshot()
    full_s = time.perf_counter() - t0
    size = node.snapshot_health.bytes
    # 1 % of the devices send one more reading (a tick later): only their shards are rewritten.
    for device in sorted(last_index)[::100]:
        node.handle(topics.reading("farm", device), stream.payloads[last_index[device]])
    t0 = time.perf_counter()
    node.write_snapshot()
    incremental_s = time.perf_counter() - t0
    node.queue.close()
    node.client.close(0.1)
    t0 = time.perf_counter()
    fresh = EdgeNode(settings)
    fresh.load_snapshot()
    restore_s = time.perf_counter() - t0
    if len(fresh.detectors) != series:
        raise RuntimeError(f"restored {len(fresh.detectors)} series of {series}")
    fresh.queue.close()
    fresh.client.close(0.1)
    return {
        "write_s": full_s,
        "incremental_s": incremental_s,
        "restore_s": restore_s,
        "bytes": float(size),
        "series": float(series),
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def bench_snapshot(devices: int, ticks: int, repeats: int, echo: Any = print) -> dict[str, Any]:
    """Medians over ``repeats`` runs, each in a fresh state dir; keys named for ``devices``."""
    runs = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory(prefix="edgepipe-snapshot-bench-") as tmp:
            run = _one_run(Path(tmp), devices, ticks)
        runs.append(run)
        echo(
            f"  run {r + 1}/{repeats}: write {run['write_s']:.2f} s, incremental {run['incremental_s']:.3f} s, "
            f"restore {run['restore_s']:.2f} s, {run['bytes'] / 2**20:.1f} MiB for {run['series']:.0f} series"
        )
    n = _count_name(devices)
    per_series = [r["bytes"] / r["series"] for r in runs]
    return {
        f"edge.snapshot_seconds_{n}_devices": _summary([r["write_s"] for r in runs]),
        f"edge.snapshot_seconds_incremental_1pct_{n}_devices": _summary([r["incremental_s"] for r in runs]),
        f"edge.restore_seconds_{n}_devices": _summary([r["restore_s"] for r in runs]),
        f"edge.snapshot_bytes_{n}_devices": _summary([r["bytes"] for r in runs]),
        "edge.bytes_per_series_state": _summary(per_series),
        "edge.snapshot_details": {"devices": devices, "ticks": ticks, "series": runs[0]["series"], "repeats": repeats},
    }
