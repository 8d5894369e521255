"""Where the simulated stream goes: a publisher (MQTT or a fake), an ``--out`` file, and counts.

The simulators never import MQTT: ``pipeline.mqtt.MqttClient`` fits ``Publisher`` as it is,
and so does any test fake with a ``publish`` method.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO, runtime_checkable

from pipeline.protocol.json_codec import encode
from pipeline.protocol.messages import Label


@runtime_checkable
class Publisher(Protocol):
    """Anything that can publish a payload on a topic."""

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any: ...


@dataclass
class SimReport:
    """What a run did. ``readings_acknowledged`` is filled by the caller from its client.

    ``readings_published`` counts good readings; ``bad_published`` the malformed payloads
    sent in place of readings (``bad_by_kind`` per kind); ``labels`` the ground-truth
    windows. ``seconds`` is wall time; ``sim_seconds`` the simulated time covered;
    ``readings_per_s`` is device payloads (good and bad) per wall second.
    """

    readings_published: int = 0
    bad_published: int = 0
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    labels: int = 0
    labels_by_anomaly: dict[str, int] = field(default_factory=dict)
    devices: int = 0
    sim_seconds: float = 0.0
    seconds: float = 0.0
    readings_per_s: float = 0.0
    stopped: bool = False  # ended by the stop event before the end of the run
    readings_acknowledged: int | None = None
    ts_adjusted: int = 0  # replay: repeated or backwards timestamps moved 1 ms after the last

    def to_dict(self) -> dict[str, Any]:
        return {
            "readings_published": self.readings_published,
            "readings_acknowledged": self.readings_acknowledged,
            "bad_published": self.bad_published,
            "bad_by_kind": dict(sorted(self.bad_by_kind.items())),
            "labels": self.labels,
            "labels_by_anomaly": dict(sorted(self.labels_by_anomaly.items())),
            "devices": self.devices,
            "sim_seconds": round(self.sim_seconds, 3),
            "seconds": round(self.seconds, 3),
            "readings_per_s": round(self.readings_per_s, 1),
            "stopped": self.stopped,
            "ts_adjusted": self.ts_adjusted,
        }

    def summary(self) -> str:
        """One line for humans."""
        acked = (
            ""
            if self.readings_acknowledged is None
            else f", {self.readings_acknowledged} acknowledged"
        )
        return (
            f"{self.readings_published} readings{acked}, {self.bad_published} bad, "
            f"{self.labels} labels from {self.devices} devices; {self.sim_seconds:.0f} s simulated "
            f"in {self.seconds:.2f} s ({self.readings_per_s:.0f} readings/s)"
        )


class Sink:
    """Publishes, mirrors to ``out`` as ``topic<TAB>payload`` lines, and counts."""

    def __init__(
        self,
        publisher: Publisher | None,
        out: TextIO | None,
        labels_out: TextIO | None,
        qos: int,
        report: SimReport,
    ) -> None:
        self.publisher = publisher
        self.out = out
        self.labels_out = labels_out
        self.qos = qos
        self.report = report

    def bad(self, topic: str, payload: bytes, bad_kind: str) -> None:
        self.send(topic, payload)
        self.report.bad_published += 1
        self.report.bad_by_kind[bad_kind] = self.report.bad_by_kind.get(bad_kind, 0) + 1

    def send(self, topic: str, payload: bytes, qos: int | None = None) -> None:
        if self.publisher is not None:
            self.publisher.publish(topic, payload, self.qos if qos is None else qos, False)
        if self.out is not None:
            self.out.write(f"{topic}\t{payload.decode()}\n")

    def label(self, topic: str, label: Label) -> None:
        """Labels go out at QoS 1: losing ground truth would skew every score."""
        payload = encode(label)
        self.send(topic, payload, qos=1)
        if self.labels_out is not None:
            self.labels_out.write(payload.decode() + "\n")
        self.report.labels += 1
        self.report.labels_by_anomaly[label.anomaly] = (
            self.report.labels_by_anomaly.get(label.anomaly, 0) + 1
        )


def wait_until(deadline: float, stop: threading.Event | None) -> bool:
    """Sleep until the monotonic ``deadline``; False if ``stop`` is set (it cuts the sleep short)."""
    delay = deadline - time.monotonic()
    if delay > 0:
        if stop is not None:
            return not stop.wait(delay)
        time.sleep(delay)
    return stop is None or not stop.is_set()
