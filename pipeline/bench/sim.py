"""``sim.readings_per_s``: one simulator run publishing to the bench's Mosquitto at QoS 0.

Beside it, ``sim.null_readings_per_s``: the same generation with a publisher that does
nothing, so the figure splits into generating readings and handing them to MQTT.
Issue 3 asks for at least 20,000 readings/s from one ``sim`` process with thousands of
devices.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.bench.common import ratio, summarise
from pipeline.bench.workers import MARKER_TOPIC
from pipeline.mqtt import MqttClient
from simulators import SimOptions, run

SITES = ("farm", "retail", "city")


class NullPublisher:
    """Publishes nothing: the baseline that isolates the simulators' own cost."""

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        return None


def bench_sim(url: str, devices_per_site: int, ticks: int, repeats: int, echo: Any) -> dict[str, Any]:
    """Generate and publish ``len(SITES) * devices_per_site * ticks`` readings, ``repeats`` times.

    The MQTT figure stops the clock when a QoS 1 marker published after the last reading is
    acknowledged: the broker has then received every reading, not just paho's queue.
    """
    now = time.time_ns() // 1_000_000
    options = SimOptions(
        sites=SITES,
        devices_per_site=devices_per_site,
        duration=float(ticks),
        speed=1.0,
        qos=0,
        seed=3,
        start_ms=now - ticks * 1000 - 120_000,
    )
    client = MqttClient(url)
    client.connect(timeout=10)
    mqtt_rates: list[float] = []
    null_rates: list[float] = []
    readings = 0
    try:
        for r in range(repeats):
            started = time.perf_counter()
            report = run(options, client)
            client.publish(MARKER_TOPIC, b"", qos=1)
            if not client.flush(timeout=60):
                raise RuntimeError("the broker never acknowledged the end marker")
            readings = report.readings_published + report.bad_published
            mqtt_rates.append(readings / (time.perf_counter() - started))
            started = time.perf_counter()
            null_report = run(options, NullPublisher())
            null_rates.append(
                (null_report.readings_published + null_report.bad_published)
                / (time.perf_counter() - started)
            )
            echo(f"  round {r + 1}/{repeats} sim {mqtt_rates[-1]:>10,.0f} readings/s (null {null_rates[-1]:,.0f})")
    finally:
        client.close(timeout=5)
    ours, null = summarise(mqtt_rates), summarise(null_rates)
    return {
        "sim.readings_per_s": ours,
        "sim.null_readings_per_s": null,
        "sim.readings_per_s_ratio_to_null": ratio(ours, null),
        "sim.details": {
            "sites": list(SITES),
            "devices_per_site": devices_per_site,
            "readings_per_device": ticks,
            "readings_per_run": readings,
            "qos": 0,
        },
    }
