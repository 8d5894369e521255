"""Through a real node and broker: a device's kind is fixed by its first reading, across restarts."""

from __future__ import annotations

from pathlib import Path

from nodekit import edge_settings, new_site, now_ms, reading, running_node

from pipeline.bench.common import wait_for
from pipeline.mqtt import MqttClient
from pipeline.protocol import DeadLetter, Topics, decode
from pipeline.services import Mosquitto

TOPICS = Topics()
DEVICE = "weather_station-0001"
WEATHER = {"air_temp": 12.0, "humidity": 60.0}
SOIL = {"moisture": 30.0}
WAIT_S = 20.0


def test_a_stray_kind_is_dead_lettered_and_still_refused_after_a_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = new_site()
    settings = edge_settings(mosquitto.url, tmp_path, site)
    topic = TOPICS.reading(site, DEVICE)
    device = MqttClient(mosquitto.url)
    device.connect(timeout=10)
    watcher = MqttClient(mosquitto.url)
    watcher.connect(timeout=10)
    watcher.subscribe(TOPICS.deadletter(site), qos=0)
    t0 = now_ms()
    try:
        with running_node(settings) as node:
            device.publish(topic, reading(DEVICE, "weather_station", t0, WEATHER), qos=1)
            assert wait_for(lambda: node.counters.accepted == 1, WAIT_S)
            device.publish(topic, reading(DEVICE, "soil_probe", t0 + 1000, SOIL), qos=1)
            letter = decode(watcher.messages.get(timeout=WAIT_S).payload, DeadLetter)
            assert letter.reason == "kind_changed"
            device.publish(topic, reading(DEVICE, "weather_station", t0 + 1000, WEATHER), qos=1)
            assert wait_for(lambda: node.counters.accepted == 2, WAIT_S), "its ts was not consumed"
            node.request_drain()  # windows shipped: the journal is trimmed, it cannot tell the kind
            assert node.wait_drained(WAIT_S)
            assert wait_for(lambda: node.queue.stats().journal_items == 0, WAIT_S)
        with running_node(settings) as node:
            device.publish(topic, reading(DEVICE, "soil_probe", t0 + 2000, SOIL), qos=1)
            assert wait_for(lambda: node.counters.received == 1, WAIT_S)
            assert node.counters.dead_letters == {"kind_changed": 1}
            assert node.counters.accepted == 0
    finally:
        device.close(1)
        watcher.close(1)
