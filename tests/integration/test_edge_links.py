"""Through a real Mosquitto and a real edge node: a farm whose valves and probes are kinds of
its own (``valve_v2.water_flow``, ``probe_v2.vwc``), linked by ``[[links]]`` in its TOML
file, gets leak alerts on its probes' alert topics.

The stream is the farm of test_fleet_alerts.py (two simulated days, one reading a minute,
leaks only), renamed on the way to the broker (tests/renamed_farm.py): the built-in kinds
never reach the node. The node believes it is the end of the simulated span (``OffsetClock``)
so its clock checks accept the readings. Nothing is judged until the node has received every
published reading and drained (the valves' and probes' last readings are held for event-time
order); then the alerts are collected until one with cause ``leak`` is in, within a generous
bound. Offline, the same stream raises 12 leak alerts (tests/unit/detect/test_detection.py).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest
from renamed_farm import DAYS, SITE, START_MS, Renaming, farm_options, toml_v2
from waiting import GENEROUS_S, wait_until

from pipeline.clock import OffsetClock
from pipeline.config import load_settings
from pipeline.edge.node import EdgeNode
from pipeline.mqtt import MqttClient
from pipeline.protocol import Alert, Topics, decode
from pipeline.services import Mosquitto
from simulators import run

# A fleet of two simulated days takes 20-30 s on a quiet machine; a busy one may take minutes.
pytestmark = pytest.mark.timeout(900)

TOPICS = Topics()
MINUTE_MS = 60_000
ALERTS_WITHIN_S = 5 * GENEROUS_S


def test_a_configured_link_between_kinds_of_ones_own_raises_leak_alerts_on_the_alert_topic(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = tmp_path / "edgepipe.toml"
    config.write_text(toml_v2())
    settings = load_settings(
        config,
        overrides={
            "mqtt.url": mosquitto.url,
            "edge.site": SITE,
            "edge.state_dir": str(tmp_path / "edge"),
        },
    )
    end_ms = START_MS + int(DAYS * 86_400_000)
    watcher = MqttClient(mosquitto.url)
    watcher.connect(timeout=10)
    watcher.subscribe(TOPICS.alerts(SITE), qos=1)
    node = EdgeNode(settings, clock=OffsetClock(end_ms + MINUTE_MS - time.time_ns() // 1_000_000))
    assert node.sequencer.kinds == {
        "valve_v2",
        "probe_v2",
    }  # the linked kinds are put in event-time order
    node.start(timeout=10)
    stop = threading.Event()
    thread = threading.Thread(target=node.run, args=(stop,), daemon=True)
    thread.start()
    publisher = MqttClient(mosquitto.url, client_id=f"sim-{SITE}-links")
    publisher.connect(timeout=10)
    alerts: list[tuple[str, Alert]] = []

    def take() -> None:
        while True:
            try:
                m = watcher.messages.get_nowait()
            except queue.Empty:
                return
            alerts.append((m.topic, decode(m.payload, Alert)))

    def leaks() -> list[tuple[str, Alert]]:
        take()
        return [
            (t, a)
            for t, a in alerts
            if a.data.state == "raised" and a.data.reason.startswith("leak")
        ]

    try:
        report = run(farm_options(), Renaming(publisher))
        publisher.flush(timeout=60)
        assert wait_until(
            lambda: node.counters.received >= report.readings_published, ALERTS_WITHIN_S
        )
        assert node.counters.accepted == report.readings_published  # every renamed reading is valid
        node.request_drain()
        assert node.wait_drained(ALERTS_WITHIN_S), "the node did not drain"
        assert wait_until(lambda: bool(leaks()), ALERTS_WITHIN_S), "no leak alert arrived"
    finally:
        stop.set()
        thread.join(15)
        publisher.close(1)
        watcher.close(1)
    assert not thread.is_alive(), "the node did not stop within 15 s"
    for topic, alert in leaks():
        assert alert.data.kind == "probe_v2" and alert.data.metric == "vwc", alert.data
        assert alert.data.device.startswith("probe_v2-")
        assert topic == TOPICS.alert(SITE, alert.data.device)
    assert not any(a.data.kind in ("irrigation_valve", "soil_probe") for _, a in alerts)
