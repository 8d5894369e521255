"""Outages and recoveries an operator must read in the log: the edge's uplink, the cloud's store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from nodekit import edge_settings, new_site, now_ms, reading, running_node

from pipeline.bench.common import wait_for
from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import open_store
from pipeline.config import load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import SCHEMA_VERSION, Ack, Topics, encode
from pipeline.protocol.messages import seq_ranges
from pipeline.services import Influxd, Mosquitto

TOPICS = Topics()
WAIT_S = 30.0
DEVICE = "soil_probe-0001"


def _events(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == what]


def test_the_edge_logs_an_uplink_outage_once_and_its_end(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No cloud answers: one warning (not one per resend); the first ack after it: one info."""
    caplog.set_level(logging.INFO)
    site = new_site()
    settings = edge_settings(mosquitto.url, tmp_path, site, **{"uplink.ack_timeout_s": 0.3})
    client = MqttClient(mosquitto.url)
    client.connect(timeout=10)
    try:
        with running_node(settings) as node:
            client.publish(TOPICS.reading(site, DEVICE), reading(DEVICE, "soil_probe", now_ms(), {"moisture": 30.0}))
            assert wait_for(lambda: node.counters.uplink_requeued >= 3, WAIT_S), "no resend"
            (down,) = _events(caplog, "uplink: no ack from the cloud")
            assert down.levelno == logging.WARNING and down.fields["requeued"] >= 1  # type: ignore[attr-defined]
            seqs = list(node.queue.seqs())
            ack = Ack(v=SCHEMA_VERSION, site=site, seq=max(seqs), ranges=seq_ranges(seqs))
            client.publish(TOPICS.cloud_ack(site), encode(ack), qos=1)
            assert wait_for(lambda: bool(_events(caplog, "uplink: the cloud acknowledges again")), WAIT_S)
        assert len(_events(caplog, "uplink: no ack from the cloud")) == 1
    finally:
        client.close(1)


def test_the_cloud_logs_a_store_outage_its_end_a_summary_and_its_final_counters(
    mosquitto: Mosquitto,
    influxd_factory: Callable[..., Influxd],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    influxd = influxd_factory()
    influxd.create_database("edgepipe")
    site = new_site()
    cloud = load_settings(
        overrides={
            "mqtt.url": mosquitto.url,
            "store.url": f"influxdb://127.0.0.1:{influxd.port}/edgepipe?timeout=2",
            "cloud.client_id": f"cloud-{site}",
            "cloud.group": f"g-{site}",
            "cloud.flush_interval_s": 0.1,
            "cloud.buffer_dir": str(tmp_path / "cloud-buffer"),
            "log.summary_interval_s": 0.5,
        }
    )
    worker = IngestWorker(cloud, open_store(cloud.store.url))
    worker.start(timeout=10)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with running_node(edge_settings(mosquitto.url, tmp_path, site)) as node:
            send = MqttClient(mosquitto.url)
            send.connect(timeout=10)
            t0 = now_ms()
            send.publish(TOPICS.reading(site, DEVICE), reading(DEVICE, "soil_probe", t0, {"moisture": 30.0}))
            assert wait_for(lambda: node.counters.uplink_acked >= 1, WAIT_S)
            influxd.stop()
            send.publish(TOPICS.reading(site, DEVICE), reading(DEVICE, "soil_probe", t0 + 1000, {"moisture": 31.0}))
            assert wait_for(lambda: worker.counters.store_errors.total() >= 1, WAIT_S)
            influxd.start()
            assert wait_for(lambda: bool(_events(caplog, "store accepts writes again")), WAIT_S * 2)
            assert wait_for(lambda: bool(_events(caplog, "summary")), WAIT_S)
            send.close(1)
    finally:
        stop.set()
        thread.join(15)
        worker.store.close()
    (stopped,) = _events(caplog, "cloud worker stopped")
    fields = stopped.fields  # type: ignore[attr-defined]
    assert fields["stored"]["readings"] == worker.counters.readings >= 1
    assert fields["acks_sent"] == worker.counters.acks_sent >= 1
    assert sum(fields["store_errors"].values()) >= 1 and fields["buffer_items"] == 0
