"""EdgeNode: one process per site, the only edge module that does I/O.

    {site}/dev/+ ──► Validator ──bad──► {site}/deadletter (QoS 0, counted by reason)
                        │
                        ▼ accepted readings
                  batch (size or age) ──► {site}/edge/batch (QoS 1, uplink seq)
    cloud/ack/{site} ──► highest stored seq
    every health_interval ──► {site}/edge/health (retained; the last will says offline)

Messages are handled one at a time on the node's own thread, taken from the queue the MQTT
client fills; callbacks never do work. Data selection, detection, aggregation, compression
and the durable uplink queue are stages that later slot into :meth:`handle`.
"""

from __future__ import annotations

import logging
import queue
import threading

from pipeline.clock import Clock, SystemClock
from pipeline.config import Settings
from pipeline.edge.health import NodeCounters
from pipeline.edge.validate import Validator
from pipeline.errors import ProtocolError
from pipeline.mqtt import Message, MqttClient, PayloadTooLarge, Will
from pipeline.protocol import (
    SCHEMA_VERSION,
    Ack,
    Batch,
    DeadLetter,
    Reading,
    ReadingLimits,
    Reason,
    Topics,
    decode,
    encode,
    encode_batch,
)

log = logging.getLogger(__name__)


class EdgeNode:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.site = settings.edge.site
        self.name = f"edge-{self.site}"
        self.clock = clock or SystemClock()
        self.topics = Topics(settings.mqtt.topic_root)
        edge = settings.edge
        self.validator = Validator(
            self.site,
            self.topics,
            ReadingLimits(
                max_bytes=edge.max_reading_bytes,
                future_skew_ms=int(edge.future_skew_s * 1000),
                max_age_ms=int(edge.max_age_s * 1000),
            ),
        )
        self.counters = NodeCounters()
        self._batch: list[Reading] = []
        self._batch_started_ms = 0
        self._seq = 0
        self._next_health_ms = 0
        self._health_topic = self.topics.edge(self.site, "health")
        offline = self.counters.health(self.site, self.name, 0, status="offline")
        self.client = MqttClient(
            settings.mqtt.url,
            client_id=f"edgepipe-{self.name}",
            protocol=settings.mqtt.protocol,
            keepalive=settings.mqtt.keepalive,
            session_expiry=settings.mqtt.session_expiry,
            tls_ca=settings.mqtt.tls_ca,
            max_payload=settings.mqtt.max_payload,
            will=Will(self._health_topic, encode(offline)),
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe to the site's readings and the cloud's acknowledgements."""
        self.client.connect(timeout)
        self.client.subscribe(self.topics.readings(self.site), qos=1)
        self.client.subscribe(self.topics.cloud_ack(self.site), qos=1)
        self.publish_health()

    def run(self, stop: threading.Event) -> None:
        """Handle messages until ``stop`` is set, then ship what is pending and go offline."""
        while not stop.is_set():
            try:
                message = self.client.messages.get(timeout=0.05)
            except queue.Empty:
                message = None
            if message is not None:
                self.dispatch(message)
            self.tick()
        self.shutdown()

    def shutdown(self, timeout: float = 5.0) -> None:
        self.ship()
        self.publish_health(status="offline")
        self.client.close(timeout)

    # -- the flow -------------------------------------------------------------------------

    def dispatch(self, message: Message) -> None:
        if message.topic == self.topics.cloud_ack(self.site):
            self.on_ack(message.payload)
        else:
            self.handle(message.topic, message.payload)

    def handle(self, topic: str, payload: bytes) -> None:
        """One reading message, top to bottom."""
        now = self.clock.now_ms()
        self.counters.received += 1
        verdict = self.validator.validate_one(topic, payload, now)
        if isinstance(verdict, DeadLetter):
            self.refuse(verdict)
            return
        self.counters.accepted += 1
        if not self._batch:
            self._batch_started_ms = now
        self._batch.append(verdict)
        if len(self._batch) >= self.settings.edge.batch_max_readings:
            self.ship()

    def refuse(self, letter: DeadLetter) -> None:
        if letter.reason == Reason.DUPLICATE:
            self.counters.duplicates += 1
            return
        self.counters.dead_letters[letter.reason] += 1
        try:
            self.client.publish(self.topics.deadletter(self.site), encode(letter), qos=0)
        except PayloadTooLarge:
            self.counters.dead_letters_unsent += 1

    def tick(self) -> None:
        """Time-driven work: ship a batch that is old enough, publish health when due."""
        now = self.clock.now_ms()
        age_ms = now - self._batch_started_ms
        if self._batch and age_ms >= self.settings.edge.batch_interval_s * 1000:
            self.ship()
        if now >= self._next_health_ms:
            self.publish_health()

    def ship(self) -> None:
        if not self._batch:
            return
        self._seq += 1
        batch = Batch(v=SCHEMA_VERSION, site=self.site, seq=self._seq, readings=self._batch)
        self.client.publish(self.topics.edge(self.site, "batch"), encode_batch(batch), qos=1)
        self.counters.readings_shipped += len(self._batch)
        self.counters.batches_shipped += 1
        self._batch = []

    def on_ack(self, payload: bytes) -> None:
        try:
            ack = decode(payload, Ack, max_bytes=1024)
        except ProtocolError as exc:
            log.warning("ignored a bad ack: %s", exc)
            return
        if ack.site == self.site:
            self.counters.acked_seq = max(self.counters.acked_seq, ack.seq)

    def publish_health(self, status: str = "online") -> None:
        now = self.clock.now_ms()
        health = self.counters.health(self.site, self.name, now, status)
        self.client.publish(self._health_topic, encode(health), qos=1, retain=True)
        self._next_health_ms = now + int(self.settings.edge.health_interval_s * 1000)
