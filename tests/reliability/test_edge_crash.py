"""R3: an edge node SIGKILLed with a non-empty outbox, twice, loses nothing and counts nothing twice.

Extends tests/integration/test_edge_reliability.py's single kill: the node runs as its own
process (``python -m pipeline edge``), is killed by PID twice (the first time with the cloud
down, so its outbox holds unacknowledged items), restarts on the same state directory each
time, and after each kill the disk queue passes SQLite's integrity check. The oracle is the
devices' per-window ledger; the restarted node's own counters must account for every
redelivered reading (``received = accepted + duplicates + dead_lettered``).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from edgekit import (
    LedgerDevices,
    running,
    settings_for,
    stored_window_counts,
    verdict,
    wait_store_final,
    wait_until,
)

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import open_store
from pipeline.config import settings_as_toml
from pipeline.edge.uplink import UplinkQueue
from pipeline.mqtt import MqttClient
from pipeline.protocol import Health, Topics, decode
from pipeline.services import Mosquitto

TOPICS = Topics()


def edge_health(url: str, site: str, timeout: float = 5) -> Health | None:
    """The node's retained health message, or None if none came within ``timeout``."""
    client = MqttClient(url)
    client.connect(timeout=5)
    try:
        client.subscribe(TOPICS.edge(site, "health"), qos=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = client.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            return decode(message.payload, Health)
        return None
    finally:
        client.close(1)


@contextmanager
def edge_processes(config: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start edge processes on ``config``; whichever still runs is stopped by PID at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with open(config.with_suffix(".log"), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "edge", "--config", str(config)], stdout=log, stderr=log
            )
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def test_an_edge_killed_twice_with_a_full_outbox_loses_nothing_and_counts_nothing_twice(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    rng = random.Random(os.getpid())
    broker = mosquitto_factory()
    site = f"retail-{uuid.uuid4().hex[:6]}"
    settings = settings_for(broker.url, tmp_path, site, **{"aggregate.idle_s": 0.5})
    config = tmp_path / "edge.toml"
    config.write_text(settings_as_toml(settings))
    queue_file = Path(settings.edge.state_dir) / f"edge-{site}"
    store = open_store(settings.store.url)
    worker = IngestWorker(settings, store)
    kills: list[str] = []
    with ExitStack() as cloud, edge_processes(config) as start_edge:
        node = start_edge()
        assert wait_until(lambda: edge_health(broker.url, site, 1) is not None, 30), "edge never came online"
        with LedgerDevices(broker.url, site) as devices:
            for cloud_up in (False, True):
                if cloud_up:
                    worker.start(timeout=5)
                    cloud.enter_context(running(worker))
                delay = rng.uniform(2, 4)
                time.sleep(delay)
                os.kill(node.pid, signal.SIGKILL)
                assert node.wait(10) == -signal.SIGKILL
                with UplinkQueue.in_state_dir(queue_file) as q:
                    assert q.check(), "PRAGMA integrity_check failed after SIGKILL"
                    items = q.stats().items
                kills.append(f"kill after {delay:.1f}s cloud={'up' if cloud_up else 'down'} outbox={items}")
                if not cloud_up:
                    assert items > 0, "the first kill must find a non-empty outbox"
                time.sleep(0.5)
                node = start_edge()  # same state dir: replays its journal, resends its outbox
            time.sleep(2)
            devices.stop()
            acked = len(devices.acked())
            ok = wait_until(lambda: sum(stored_window_counts(store, site).values()) >= acked, 60, step=0.25)
            wait_store_final(store, site)  # a positive sentinel: anything counted twice shows by then
            v = verdict(devices, store, site)
        health = edge_health(broker.url, site)
    store.close()
    assert health is not None
    c = health.counters
    print(
        v.line("R3 2 SIGKILLs")
        + f" | {'; '.join(kills)} | restarted node received={c['received']} accepted={c['accepted']}"
        f" duplicates={c['duplicates']} replayed={c['replayed']} unaccounted={c['unaccounted']}"
    )
    assert ok, v.line("R3")
    assert v.published == v.acked
    assert (v.lost, v.double, v.windows_wrong) == (0, 0, 0)
    assert c["received"] == c["accepted"] + c["duplicates"] + c["dead_lettered"]
    assert c["unaccounted"] == 0
