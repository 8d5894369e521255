"""An edge node on its own thread over a real broker, for the tests of what an operator sees."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.clock import Clock
from pipeline.config import Settings, load_settings
from pipeline.edge.node import EdgeNode
from pipeline.protocol import Reading, encode


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_site() -> str:
    return f"farm-{uuid.uuid4().hex[:8]}"


def edge_settings(url: str, tmp_path: Path, site: str, **extra: Any) -> Settings:
    """A node for ``site`` on ``url`` keeping its state in ``tmp_path``."""
    overrides: dict[str, Any] = {
        "mqtt.url": url,
        "edge.site": site,
        "edge.state_dir": str(tmp_path / "state"),
        "edge.batch_interval_s": 0.2,
    }
    overrides.update(extra)
    return load_settings(overrides=overrides)


@contextmanager
def running_node(settings: Settings, clock: Clock | None = None, start_timeout_s: float = 10) -> Iterator[EdgeNode]:
    """A started node (on ``clock``, if given) handling messages on a thread; stopped (bounded join) on exit."""
    node = EdgeNode(settings) if clock is None else EdgeNode(settings, clock=clock)
    node.start(timeout=start_timeout_s)
    stop = threading.Event()
    thread = threading.Thread(target=node.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield node
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the node did not stop within 15 s"


def reading(device: str, kind: str, ts: int, metrics: dict[str, float]) -> bytes:
    return encode(Reading(v=1, device=device, kind=kind, ts=ts, seq=ts % 1_000_000, metrics=metrics))


@contextmanager
def edgepipe_process(
    out: Path, *args: str, env: Mapping[str, str] = {}
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``edgepipe ARGS`` as a child, stdout and stderr in ``out``, no ``EDGEPIPE_*`` of ours
    but ``env``; killed (by its pid) if still running at the end."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPIPE_")} | dict(env)
    with open(out, "wb") as f:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args], env=child_env, stdout=f, stderr=subprocess.STDOUT
        )
    try:
        yield proc, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
