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


class Receipt(Protocol):
    """What a tracked publish returns: whether the broker has acknowledged it yet."""

    @property
    def acknowledged(self) -> bool: ...


@runtime_checkable
class TrackingPublisher(Publisher, Protocol):
    """A publisher that tells which publishes the broker acknowledged (``MqttClient``)."""

    def publish_tracked(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> Receipt: ...


@dataclass
class SimReport:
    """What a run did; every count is defined in docs/summaries.md.

    ``readings_published`` counts good readings; ``bad_published`` the malformed payloads
    sent in place of readings (``bad_by_kind`` per kind); their sum is
    ``payloads_published``, what the devices sent. ``labels`` counts the ground-truth
    windows, published apart from the payloads. The caller fills the acknowledged counts
    from its client: ``payloads_acknowledged`` (of ``payloads_published``; None at QoS 0)
    and ``labels_acknowledged`` (of ``labels``, always QoS 1), told apart by
    ``label_receipts``. ``seconds`` is wall time; ``sim_seconds`` the simulated time
    covered; ``readings_per_s`` is device payloads (good and bad) per wall second.
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
    payloads_acknowledged: int | None = None
    labels_acknowledged: int | None = None
    ts_adjusted: int = 0  # replay: repeated or backwards timestamps moved 1 ms after the last
    label_receipts: list[Receipt] = field(default_factory=list, repr=False, compare=False)

    @property
    def payloads_published(self) -> int:
        return self.readings_published + self.bad_published

    def to_dict(self) -> dict[str, Any]:
        return {
            "readings_published": self.readings_published,
            "bad_published": self.bad_published,
            "payloads_published": self.payloads_published,
            "payloads_acknowledged": self.payloads_acknowledged,
            "bad_by_kind": dict(sorted(self.bad_by_kind.items())),
            "labels": self.labels,
            "labels_acknowledged": self.labels_acknowledged,
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
            if self.payloads_acknowledged is None
            else f" ({self.payloads_acknowledged} acknowledged)"
        )
        return (
            f"{self.readings_published} readings + {self.bad_published} bad = "
            f"{self.payloads_published} payloads{acked}, "
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
        # labels are few: track each one's PUBACK so that acknowledged counts can be split
        self.tracking = publisher if isinstance(publisher, TrackingPublisher) else None

    def bad(self, topic: str, payload: bytes, bad_kind: str) -> None:
        self.send(topic, payload)
        self.report.bad_published += 1
        self.report.bad_by_kind[bad_kind] = self.report.bad_by_kind.get(bad_kind, 0) + 1

    def send(self, topic: str, payload: bytes, qos: int | None = None, publish: bool = True) -> None:
        if publish and self.publisher is not None:
            self.publisher.publish(topic, payload, self.qos if qos is None else qos, False)
        if self.out is not None:
            self.out.write(f"{topic}\t{payload.decode()}\n")

    def label(self, topic: str, label: Label) -> None:
        """Labels go out at QoS 1: losing ground truth would skew every score.

        ``labels_out`` gets each one flushed as it is published, so that a reader following
        the file during a long run sees the labels so far.
        """
        payload = encode(label)
        if self.tracking is not None:
            self.report.label_receipts.append(self.tracking.publish_tracked(topic, payload, 1, False))
            self.send(topic, payload, publish=False)
        else:
            self.send(topic, payload, qos=1)
        if self.labels_out is not None:
            self.labels_out.write(payload.decode() + "\n")
            self.labels_out.flush()
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
