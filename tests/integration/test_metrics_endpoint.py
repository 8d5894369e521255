"""/metrics of a real edge node and cloud worker, fed through a real broker, scraped over HTTP."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

from nodekit import edge_settings, new_site, now_ms, reading, running_node
from prometheus_client.parser import text_string_to_metric_families

from pipeline.bench.common import wait_for
from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import open_store
from pipeline.config import load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import Topics
from pipeline.services import Mosquitto, free_port

TOPICS = Topics()
WAIT_S = 30.0
DEVICE = "soil_probe-0001"


def scrape(url: str) -> dict[str, float]:
    """Every sample of the endpoint, keyed name{label="value",...}."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def total(samples: dict[str, float], name: str) -> float:
    """The sum of a family over its labels (0 when it has no sample yet)."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def test_the_edge_metrics_account_for_every_reading_and_the_rate_falls_to_zero(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = new_site()
    settings = edge_settings(mosquitto.url, tmp_path, site, **{"edge.metrics_port": free_port()})
    device = MqttClient(mosquitto.url)
    device.connect(timeout=10)
    topic = TOPICS.reading(site, DEVICE)
    t0 = now_ms()
    good = [reading(DEVICE, "soil_probe", t0 + i * 1000, {"moisture": 30.0 + i}) for i in range(20)]
    bad = [b"{oops", b"", json.dumps({"v": 9}).encode(), reading(DEVICE, "fridge", t0 + 99_000, {"temp": 4.0})]
    try:
        with running_node(settings) as node:
            assert node.metrics is not None and node.metrics.host == "127.0.0.1"
            for payload in good + good[:5] + bad:  # five redeliveries among them
                device.publish(topic, payload, qos=1)
            sent = len(good) + 5 + len(bad)
            assert wait_for(lambda: node.counters.received == sent, WAIT_S)
            m = scrape(node.metrics.url)
            received = m["edgepipe_readings_received_total"]
            assert received == sent
            assert received == (
                m["edgepipe_readings_accepted_total"]
                + total(m, "edgepipe_dead_letters_total")
                + m["edgepipe_readings_duplicate_total"]
                + total(m, "edgepipe_readings_dropped_total")
            )
            assert m["edgepipe_readings_accepted_total"] == len(good)
            assert m["edgepipe_readings_duplicate_total"] == 5
            assert m['edgepipe_dead_letters_total{reason="kind_changed"}'] == 1
            assert m["edgepipe_mqtt_connected"] == 1
            assert f'edgepipe_info{{node="edge-{site}",site="{site}"}}' in m
            assert "process_cpu_seconds_total" in m
            assert wait_for(lambda: scrape(node.metrics.url)["edgepipe_readings_per_second"] > 0, WAIT_S)
            # Nothing arrives any more: the rate must fall to 0, not freeze at its last value.
            assert wait_for(
                lambda: scrape(node.metrics.url)["edgepipe_readings_per_second"] == 0.0, WAIT_S, 0.5
            ), "readings_per_s did not fall to 0 after traffic stopped"
            url = node.metrics.url
        assert wait_for(lambda: _refused(url), WAIT_S), "/metrics still answers after the node stopped"
    finally:
        device.close(1)


def _refused(url: str) -> bool:
    try:
        scrape(url)
    except OSError:
        return True
    return False


def test_the_cloud_worker_metrics_show_what_it_stored_and_acknowledged(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = new_site()
    edge = edge_settings(mosquitto.url, tmp_path, site)
    cloud = load_settings(
        overrides={
            "mqtt.url": mosquitto.url,
            "store.url": f"sqlite:///{tmp_path / 'cloud.db'}",
            "cloud.client_id": f"cloud-{site}",
            "cloud.group": f"g-{site}",
            "cloud.flush_interval_s": 0.1,
            "cloud.buffer_dir": str(tmp_path / "cloud-buffer"),
            "cloud.metrics_port": free_port(),
        }
    )
    worker = IngestWorker(cloud, open_store(cloud.store.url))
    worker.start(timeout=10)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    device = MqttClient(mosquitto.url)
    device.connect(timeout=10)
    t0 = now_ms()
    try:
        assert worker.metrics is not None
        with running_node(edge) as node:
            for i in range(10):
                payload = reading(DEVICE, "soil_probe", t0 + i * 1000, {"moisture": 30.0 + i})
                device.publish(TOPICS.reading(site, DEVICE), payload, qos=1)
            assert wait_for(lambda: node.counters.uplink_acked >= 1, WAIT_S)
            url = worker.metrics.url
            assert wait_for(
                lambda: scrape(url)["edgepipe_cloud_readings_stored_total"] == node.counters.readings_shipped,
                WAIT_S,
                0.2,
            )
            m = scrape(url)
            assert m["edgepipe_cloud_readings_stored_total"] > 0
            assert m["edgepipe_cloud_acks_sent_total"] >= 1
            assert m["edgepipe_cloud_messages_total"] >= 1
            assert m["edgepipe_cloud_buffer_items"] == 0
            assert m["edgepipe_cloud_mqtt_connected"] == 1
    finally:
        stop.set()
        thread.join(15)
        device.close(1)
        worker.store.close()
