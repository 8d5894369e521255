"""``edgepipe sim``: the simulators wired to a real MQTT connection.

The simulators are pure (they publish through any object with ``publish``); this module owns
the connection and adds what only the connection knows: how many QoS 1 publishes the broker
acknowledged.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, TextIO

import simulators
from pipeline.config import Settings
from pipeline.mqtt import MqttClient


def run_sim(
    settings: Settings,
    *,
    publish: bool,
    duration: float,
    start_ms: int | None = None,
    out: TextIO | None = None,
    labels_out: TextIO | None = None,
    replay: str | None = None,
    replay_site: str = "replay",
    replay_device: str = "replay-1",
    stop: threading.Event | None = None,
    realtime: bool = True,
) -> dict[str, Any]:
    """Run the simulated fleet (or a CSV replay) and return its report as a dict."""
    client: MqttClient | None = None
    if publish:
        client = MqttClient(
            settings.mqtt.url,
            protocol=settings.mqtt.protocol_for("device"),
            keepalive=settings.mqtt.keepalive,
            tls_ca=settings.mqtt.tls_ca,
            max_payload=settings.mqtt.max_payload,
            max_inflight=1000,
        )
        client.connect()
    sim = settings.sim
    now_ms = time.time_ns() // 1_000_000
    try:
        if replay is not None:
            report = simulators.replay(
                replay,
                site=replay_site,
                device=replay_device,
                speed=sim.speed if realtime else 0.0,
                publisher=client,
                out=out,
                qos=sim.qos,
                topic_root=settings.mqtt.topic_root,
                realtime=realtime,
                stop=stop,
                start_ms=start_ms if start_ms is not None else now_ms,
            )
        else:
            options = simulators.SimOptions(
                sites=tuple(sim.sites),
                devices_per_site=sim.devices_per_site,
                rate=sim.rate,
                duration=duration,
                speed=sim.speed,
                seed=sim.seed,
                qos=sim.qos,
                bad_rate=sim.bad_rate,
                anomaly_rate=sim.anomaly_rate,
                start_ms=start_ms,
                topic_root=settings.mqtt.topic_root,
                realtime=realtime,
            )
            if start_ms is None:
                # Start early enough that no reading is ever ahead of the wall clock,
                # even at --speed > 1 (edges refuse readings from the future).
                options = dataclasses.replace(
                    options, start_ms=simulators.default_start_ms(options, now_ms)
                )
            report = simulators.run(options, client, out, labels_out, stop=stop)
        if client is not None:
            client.flush(timeout=30.0)
            report.readings_acknowledged = client.stats.acknowledged
    finally:
        if client is not None:
            client.close()
    return report.to_dict()
