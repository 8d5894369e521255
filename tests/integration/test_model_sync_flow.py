"""Model sync over a real Mosquitto: two sites ship deltas, the cloud merges, a third warm-starts.

Edge nodes of sites A and B learn soil probes and ship signed deltas every 0.5 s; the cloud
worker verifies and merges them and publishes the merged model retained on
``cloud/model/soil_probe``; then a fresh node of site C starts, receives the retained model,
and the detector it makes for a device it never saw starts from the prior.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import open_store
from pipeline.config import Settings, load_settings
from pipeline.detect.seasonal import SeasonalResidualDetector
from pipeline.edge.node import EdgeNode
from pipeline.learn.sync_stats import PRIOR_WARMUP
from pipeline.mqtt import MqttClient
from pipeline.protocol import Reading, Topics, encode
from pipeline.protocol.model_codec import decode_merged, verify
from pipeline.services import Mosquitto

TOPICS = Topics()
CLOUD_KEY = "cloud-key-for-tests"


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture
def fleet(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[dict[str, object]]:
    tag = uuid.uuid4().hex[:8]
    sites = [f"farm-{tag}-{x}" for x in "abc"]
    keys = {s: f"key-of-{s}" for s in sites}
    base = {"mqtt.url": mosquitto.url, "cloud.model_keys": keys, "cloud.model_key": CLOUD_KEY}
    cloud_settings = load_settings(overrides={**base, "cloud.client_id": f"cloud-{tag}",
                                              "cloud.group": f"g-{tag}", "cloud.flush_interval_s": 0.1})  # fmt: skip
    store = open_store(f"sqlite:///{tmp_path / 'cloud.db'}")
    worker = IngestWorker(cloud_settings, store)
    worker.start(timeout=5)
    stop = threading.Event()
    threads = [threading.Thread(target=worker.run, args=(stop,))]

    def edge_settings(site: str) -> Settings:
        return load_settings(overrides={**base, "edge.site": site, "edge.model_key": keys[site],
                                        "edge.cloud_model_key": CLOUD_KEY, "edge.model_interval_s": 0.5,
                                        "edge.state_dir": str(tmp_path / "state")})  # fmt: skip

    nodes: dict[str, EdgeNode] = {}

    def start_node(site: str) -> EdgeNode:
        node = nodes[site] = EdgeNode(edge_settings(site))
        node.start(timeout=5)
        threads.append(threading.Thread(target=node.run, args=(stop,)))
        threads[-1].start()
        return node

    threads[0].start()
    device = MqttClient(mosquitto.url)
    device.connect(timeout=5)
    yield {"sites": sites, "start_node": start_node, "device": device, "worker": worker, "store": store}
    stop.set()
    for thread in threads:
        thread.join(10)
    device.close(1)
    store.close()


def send_history(device: MqttClient, site: str, devices: int, readings: int) -> None:
    now = time.time_ns() // 1_000_000
    for i in range(readings):
        ts = now - (readings - i) * 60_000
        for d in range(devices):
            moisture = 30.0 + 5 * d + (i % 10) * 0.1
            reading = Reading(v=1, device=f"soil_probe-{d:04d}", kind="soil_probe", ts=ts, seq=i,
                              metrics={"moisture": round(moisture, 1)})  # fmt: skip
            device.publish(TOPICS.reading(site, f"soil_probe-{d:04d}"), encode(reading), qos=1)


def test_two_sites_merge_and_a_new_node_warm_starts(fleet: dict[str, object]) -> None:
    site_a, site_b, site_c = fleet["sites"]  # type: ignore[misc]
    start_node: Callable[[str], EdgeNode] = fleet["start_node"]  # type: ignore[assignment]
    device: MqttClient = fleet["device"]  # type: ignore[assignment]
    worker: IngestWorker = fleet["worker"]  # type: ignore[assignment]
    for site in (site_a, site_b):
        start_node(site)
        send_history(device, site, devices=3, readings=150)

    def merged_from_both() -> bool:
        state = worker.models.kinds.get("soil_probe")
        return state is not None and {site_a, site_b} <= state.sites and (
            state.metrics["moisture"].n == 900
        )

    wait_for(merged_from_both)
    store_models = fleet["store"].latest_merged_models()  # type: ignore[attr-defined]
    model = decode_merged(store_models[0].payload.encode())
    print(f"\nmerged soil_probe version {model.version} from {model.sites}, "
          f"n={model.metrics['moisture'].n}, rejected={dict(worker.models.counters.rejected)}")  # fmt: skip
    assert verify(model, CLOUD_KEY.encode())
    assert worker.models.counters.rejected == {}

    node_c = start_node(site_c)
    wait_for(lambda: "soil_probe" in node_c.model_sync.merged)
    device.publish(TOPICS.reading(site_c, "soil_probe-0099"), encode(Reading(
        v=1, device="soil_probe-0099", kind="soil_probe", ts=time.time_ns() // 1_000_000, seq=1,
        metrics={"moisture": 41.0})), qos=1)  # fmt: skip
    wait_for(lambda: ("soil_probe-0099", "moisture") in node_c.detectors)

    detector = node_c.detectors[("soil_probe-0099", "moisture")]
    assert isinstance(detector, SeasonalResidualDetector)
    assert detector.active_warmup == PRIOR_WARMUP
    assert node_c.model_sync.warm_started == 1
