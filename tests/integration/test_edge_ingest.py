"""Foreign formats through a real Mosquitto into a real edge node: TTN, ChirpStack,
Zigbee2MQTT, line protocol and a vendor's JSON arrive as readings; malformed ones are
dead-lettered with their reason and the hash of their bytes; the site's catalogue is
retained on {site}/edge/catalog."""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from pathlib import Path

import pytest
from nodekit import new_site, now_ms, running_node

from pipeline.bench.common import Deadline, wait_for
from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import open_store
from pipeline.config import load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import DeadLetter, Topics, decode, decode_batch
from pipeline.protocol.catalog import Catalog, CatalogMessage, Metric
from pipeline.services import Influxd, Mosquitto

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
TOPICS = Topics()
WAIT_S = 30.0


def _config(site: str) -> str:
    return f"""
[[ingest]]
format = "edgepipe"

[[ingest]]
format = "ttn"
topic = "v3/{site}@ttn/devices/+/up"
kind = "soil_probe"
metrics = {{ moisture = "soil_moisture", soil_temp = "soil_temperature" }}
ignore = ["battery"]

[[ingest]]
format = "chirpstack"
topic = "application/{site}/device/+/event/up"
kind_field = "/deviceInfo/deviceProfileName"

[[ingest]]
format = "zigbee2mqtt"
topic = "z2m-{site}/#"
kind = "cold_room"
metrics = {{ temp = "temperature", door = "contact" }}

[[ingest]]
format = "influx-line"
topic = "telegraf-{site}/#"

[[ingest]]
format = "json"
topic = "sensors/{{site}}/{{device}}/state"
kind = "air_quality"
timestamp_field = "/meta/time"
metrics = {{ pm25 = "/pm/2_5", no2 = "no2_ppb" }}

[kinds.cold_room]
domain = "retail"
[kinds.cold_room.metrics.temp]
unit = "°C"
resolution = 0.1
low = -40.0
high = 30.0
[kinds.cold_room.metrics.door]
unit = "open"
resolution = 1.0
low = 0.0
high = 1.0
"""


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def test_every_format_reaches_the_node_and_bad_ones_are_dead_lettered(mosquitto: Mosquitto, tmp_path: Path) -> None:
    site = new_site()
    config = tmp_path / "edgepipe.toml"
    config.write_text(_config(site))
    settings = load_settings(
        config,
        overrides={
            "mqtt.url": mosquitto.url,
            "edge.site": site,
            "edge.state_dir": str(tmp_path / "state"),
            "edge.batch_interval_s": 0.2,
        },
    )
    t0 = now_ms()
    ttn = json.loads((FIXTURES / "ttn_uplink.json").read_text())
    ttn["received_at"] = _iso(t0)
    chirpstack = json.loads((FIXTURES / "chirpstack_up.json").read_text())
    chirpstack["time"] = _iso(t0 + 1)
    lines = (FIXTURES / "telegraf_batch.lp").read_text().replace("1709633742000000000", str(t0 * 1_000_000))
    vendor = json.loads((FIXTURES / "custom_air.json").read_text())
    vendor["meta"]["time"] = _iso(t0 + 2)
    bad_line = "fridge,device=fridge-03 temp=oops"
    good = [
        (f"v3/{site}@ttn/devices/soil-probe-07/up", json.dumps(ttn).encode()),
        (f"application/{site}/device/0101010101010103/event/up", json.dumps(chirpstack).encode()),
        (f"z2m-{site}/cold room 1", (FIXTURES / "zigbee2mqtt_state.json").read_bytes()),
        (f"telegraf-{site}/shop-gw/fridge", (lines + bad_line + "\n").encode()),
        (f"sensors/{site}/aq-box-11/state", json.dumps(vendor).encode()),
    ]
    bad = [
        (f"v3/{site}@ttn/devices/soil-probe-07/up", b'{"end_device_ids": {'),  # bad_json
        (f"application/{site}/device/01/event/up", json.dumps({**chirpstack, "object": None}).encode()),
        (f"sensors/{site}/aq-box-12/state", b'{"meta":{"time":"now"},"no2_ppb":3}'),  # bad_timestamp
        (f"z2m-{site}/cold room 1/availability", b'{"state":"online"}'),  # ignored
    ]
    device = MqttClient(mosquitto.url)
    device.connect(timeout=10)
    watcher = MqttClient(mosquitto.url)
    watcher.connect(timeout=10)
    watcher.subscribe(TOPICS.deadletter(site), qos=1)
    watcher.subscribe(TOPICS.edge(site, "batch"), qos=1)
    watcher.subscribe(TOPICS.edge(site, "catalog"), qos=1)
    try:
        with running_node(settings) as node:
            # The node publishes its catalogue after subscribing, on the same connection: once
            # it is retained, the broker has taken every subscription (no timed wait needed).
            catalog = _wait_for_catalog(watcher, site)
            for topic, payload in good + bad:
                device.publish(topic, payload, qos=1)
            assert wait_for(lambda: node.counters.received == 11, WAIT_S), (node.summary(), dict(node.counters.dropped))
            c = node.counters
            assert c.accepted == 6, dict(c.dead_letters)
            assert dict(c.dead_letters) == {"bad_json": 1, "missing_field": 1, "bad_timestamp": 1, "bad_line": 1}
            assert dict(c.dropped) == {"ingest_availability": 1}
            assert dict(c.ingest_readings) == {"ttn": 1, "chirpstack": 1, "zigbee2mqtt": 1, "influx-line": 2, "json": 1}
            assert c.unaccounted == 0
            node.request_drain()
            assert node.wait_drained(WAIT_S)
            letters, shipped = _collect(watcher, site, letters_wanted=4)
    finally:
        device.close(1)
        watcher.close(1)
    by_reason = {letter.reason: letter for letter in letters}
    assert set(by_reason) == {"bad_json", "missing_field", "bad_timestamp", "bad_line"}
    assert by_reason["bad_line"].sha256 == hashlib.sha256(bad_line.encode()).hexdigest()
    assert by_reason["bad_line"].topic == f"telegraf-{site}/shop-gw/fridge"
    assert by_reason["bad_json"].detail.startswith("ttn: ")
    assert {"soil-probe-07", "0101010101010103", "fridge-02", "aq-box-11"} <= shipped
    assert any(d.startswith("cold_room_1-") for d in shipped) and any(d.startswith("fridge_back-") for d in shipped)
    assert catalog is not None and catalog.site == site
    assert catalog.kinds["cold_room"].metrics["temp"].unit == "°C"
    assert "fridge" in catalog.kinds  # the built-ins are part of the site's catalogue


def _wait_for_catalog(watcher: MqttClient, site: str) -> CatalogMessage | None:
    deadline = Deadline(WAIT_S)
    for _ in range(1000):
        if deadline.expired:
            break
        try:
            message = watcher.messages.get(timeout=0.5)
        except queue.Empty:
            continue
        if message.topic == TOPICS.edge(site, "catalog"):
            return decode(message.payload, CatalogMessage)
    return None


def _collect(watcher: MqttClient, site: str, letters_wanted: int) -> tuple[list[DeadLetter], set[str]]:
    """Dead letters and shipped devices seen by the watcher (bounded in count and time)."""
    letters: list[DeadLetter] = []
    shipped: set[str] = set()
    deadline = Deadline(WAIT_S)
    for _ in range(1000):
        if deadline.expired or (len(letters) >= letters_wanted and len(shipped) >= 7):
            break
        try:
            message = watcher.messages.get(timeout=0.5)
        except queue.Empty:
            continue
        if message.topic == TOPICS.deadletter(site):
            letters.append(decode(message.payload, DeadLetter))
        elif message.topic == TOPICS.edge(site, "batch"):
            shipped |= {r.device for r in decode_batch(message.payload).readings}
    return letters, shipped


@pytest.mark.parametrize("backend", ["sqlite", "influx"])
def test_the_cloud_keeps_the_catalogue_the_edge_published(
    mosquitto: Mosquitto, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    site = new_site()
    config = tmp_path / "edgepipe.toml"
    config.write_text(_config(site))
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.db'}"
    else:
        influxdb: Influxd = request.getfixturevalue("influxdb")
        url = f"influxdb://127.0.0.1:{influxdb.port}/{request.getfixturevalue('influx_db')}"
    common = {"mqtt.url": mosquitto.url, "edge.site": site, "edge.state_dir": str(tmp_path / "state")}
    cloud_settings = load_settings(
        overrides={
            **common,
            "store.url": url,
            "cloud.client_id": f"cloud-{site}",
            "cloud.group": f"g-{site}",
            "cloud.flush_interval_s": 0.1,
            "cloud.buffer_dir": str(tmp_path / "buffer"),
        }
    )
    store = open_store(url)
    worker = IngestWorker(cloud_settings, store)
    worker.start(timeout=10)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with running_node(load_settings(config, overrides=common)):
            assert wait_for(lambda: site in store.latest_catalogs(), WAIT_S)
        stored = Catalog.from_message(store.latest_catalogs()[site])
        assert stored.metric("cold_room", "temp") == Metric("temp", "°C", 0.1, -40.0, 30.0)
        assert wait_for(lambda: worker.counters.catalogs >= 1, WAIT_S)  # counted after the write
    finally:
        stop.set()
        thread.join(15)
        store.close()
    assert not thread.is_alive()
