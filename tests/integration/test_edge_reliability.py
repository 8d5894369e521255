"""The edge loses nothing it accepted: through a broker outage, and through its own SIGKILL.

The oracle is exact: the aggregates' counts in the store must equal the readings the node
accepted (or the device saw acknowledged), no more (double counting) and no less (loss).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import Store, open_store
from pipeline.config import Settings, load_settings
from pipeline.demo import readings_in_aggregates
from pipeline.edge.node import EdgeNode
from pipeline.mqtt import MqttClient
from pipeline.protocol import Health, Reading, Topics, decode, encode
from pipeline.services import Mosquitto

TOPICS = Topics()
DEVICES = ("fridge-1", "fridge-2", "fridge-3")


def settings_for(broker: Mosquitto, tmp_path: Path, site: str, idle_s: float) -> Settings:
    return load_settings(
        overrides={
            "mqtt.url": broker.url,
            "store.url": f"sqlite:///{tmp_path / 'cloud.db'}",
            "edge.site": site,
            "edge.state_dir": str(tmp_path / "state"),
            "edge.batch_interval_s": 0.2,
            "aggregate.window_s": 1.0,
            "aggregate.lateness_s": 0.0,
            "aggregate.idle_s": idle_s,
            "cloud.client_id": f"cloud-{site}",
            "cloud.group": f"g-{site}",
            "cloud.flush_interval_s": 0.1,
            "uplink.ack_timeout_s": 3.0,
        }
    )


class Devices:
    """Three fridges publishing at QoS 1 from one connection, in their own thread."""

    def __init__(self, url: str, site: str, rate_hz: float = 50.0) -> None:
        self.client = MqttClient(url, reconnect_delay=(1, 1))
        self.site, self.period = site, 1.0 / rate_hz
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.time_ns() // 1_000_000
        while not self._stop.is_set() and self.sent < 20_000:  # bounded
            ts = max(t0 + self.sent, time.time_ns() // 1_000_000)
            for device in DEVICES:
                reading = Reading(
                    v=1, device=device, kind="fridge", ts=ts, seq=self.sent, metrics={"temp": 4.0 + (self.sent % 9) / 10}
                )
                self.client.publish(TOPICS.reading(self.site, device), encode(reading), qos=1)
            self.sent += 1
            time.sleep(self.period)

    def __enter__(self) -> Devices:
        self.client.connect(timeout=5)
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop publishing; wait until every reading is acknowledged; return how many."""
        self._stop.set()
        self._thread.join(5)
        assert self.client.flush(timeout=60), "device readings never acknowledged"
        return self.sent * len(DEVICES)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.client.close(timeout=1)


@contextmanager
def running(role: EdgeNode | IngestWorker) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=role.run, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stored(store: Store, site: str) -> int:
    return readings_in_aggregates(store, site, since_ms=time.time_ns() // 1_000_000 - 3_600_000)


def test_a_30_s_broker_outage_loses_nothing_the_node_accepted(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    site = f"retail-{uuid.uuid4().hex[:6]}"
    settings = settings_for(broker, tmp_path, site, idle_s=5.0)  # x10 > the outage: no window cut short
    store = open_store(settings.store.url)
    node, worker = EdgeNode(settings), IngestWorker(settings, store)
    worker.start(timeout=5)
    node.start(timeout=5)
    with running(worker), running(node), Devices(broker.url, site) as devices:
        time.sleep(2)
        broker.kill(signal.SIGTERM)
        time.sleep(30)
        broker.start()
        time.sleep(2)
        published = devices.stop()
        # accepted, not received: received counts the readings the broker redelivers after
        # its restart (duplicates), so it can reach `published` while some wait in the inbox
        assert wait_until(lambda: node.counters.accepted >= published, 60), node.counters
        node.request_drain()
        accepted = node.counters.accepted
        assert wait_until(lambda: stored(store, site) >= accepted, 60), (stored(store, site), accepted, node.counters.late)
        assert stored(store, site) == accepted == published, node.counters
        assert node.counters.unaccounted == 0
    store.close()


def edge_health(broker: Mosquitto, site: str, timeout: float = 5) -> dict[str, object]:
    """The node's retained health (it is published once the node has subscribed)."""
    client = MqttClient(broker.url)
    client.connect(timeout=5)
    try:
        client.subscribe(TOPICS.edge(site, "health"), qos=1)
        return msgspec.to_builtins(decode(client.messages.get(timeout=timeout).payload, Health))
    finally:
        client.close(1)


def edge_process(config: Path) -> subprocess.Popen[bytes]:
    with open(config.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "edge", "--config", str(config)],
            stdout=log,
            stderr=log,
        )


def write_config(settings: Settings, path: Path) -> Path:
    from pipeline.config import settings_as_toml

    path.write_text(settings_as_toml(settings))
    return path


def test_a_sigkilled_node_sends_its_queue_after_restart(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    site = f"retail-{uuid.uuid4().hex[:6]}"
    settings = settings_for(broker, tmp_path, site, idle_s=0.5)  # last windows close 5 s after the end
    config = write_config(settings, tmp_path / "edge.toml")
    node = edge_process(config)
    try:
        edge_health(broker, site, timeout=30)  # online (subscribed) before any device publishes
        with Devices(broker.url, site) as devices:
            time.sleep(3)  # the cloud is not running: the node's outbox fills
            os.kill(node.pid, signal.SIGKILL)
            node.wait(10)
            time.sleep(1)
            node = edge_process(config)  # same state dir: replays its journal, resends its outbox
            time.sleep(2)
            published = devices.stop()
        store = open_store(settings.store.url)
        worker = IngestWorker(settings, store)
        worker.start(timeout=5)
        with running(worker):
            ok = wait_until(lambda: stored(store, site) >= published, 60)
            assert ok, f"stored {stored(store, site)} of {published}; edge health: {edge_health(broker, site)}"
            time.sleep(2)  # anything extra would be double counting
            assert stored(store, site) == published
        store.close()
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(5)
