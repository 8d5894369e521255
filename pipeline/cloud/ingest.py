"""IngestWorker: from the edge topics into the store, acknowledging only what is stored.

    {site}/edge/batch|agg|health, {site}/alerts/+, {site}/deadletter, {site}/labels
        ──► decode (bad: counted, acknowledged, never retried)
        ──► pending, until flush_points items or flush_interval_s
        ──► store.write_*  ──ok──► MQTT ack of every pending message
                                   + cloud/ack/{site} listing the stored uplink seqs
                           ──error──► keep pending, retry with backoff (nothing acked)

Writes are idempotent (a point's identity is its series and timestamp), so a redelivered
batch overwrites itself and counts stay exact. With MQTT 5 the worker subscribes through a
shared subscription, so N workers split the load; with 3.1.1 one worker still works.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import msgspec

from pipeline.cloud.store import Store
from pipeline.config import Settings
from pipeline.errors import ProtocolError, StoreError
from pipeline.mqtt import Message, MqttClient
from pipeline.protocol import (
    SCHEMA_VERSION,
    Ack,
    Aggregate,
    Alert,
    DeadLetter,
    Health,
    Label,
    Reading,
    Reason,
    TopicKind,
    Topics,
    decode,
    decode_batch,
    encode,
)
from pipeline.protocol.agg_codec import decode_aggregate_message
from pipeline.protocol.messages import seq_ranges

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


@dataclass
class IngestCounters:
    messages: int = 0
    readings: int = 0
    aggregates: int = 0
    alerts: int = 0
    dead_letters: int = 0
    health: int = 0
    labels: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # undecodable, by reason
    store_errors: int = 0
    flushes: int = 0


@dataclass
class _Pending:
    messages: list[Message] = field(default_factory=list)
    readings: dict[str, list[Reading]] = field(default_factory=lambda: defaultdict(list))
    seqs: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    aggregates: list[Aggregate] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    health: list[Health] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    points: int = 0
    since: float = 0.0


class IngestWorker:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.topics = Topics(settings.mqtt.topic_root)
        self.counters = IngestCounters()
        self._pending = _Pending()
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self.client = MqttClient(
            settings.mqtt.url,
            client_id=settings.cloud.client_id,
            protocol=settings.mqtt.protocol,
            keepalive=settings.mqtt.keepalive,
            session_expiry=settings.mqtt.session_expiry,
            tls_ca=settings.mqtt.tls_ca,
            manual_ack=True,
            max_payload=settings.mqtt.max_payload,
        )

    def subscriptions(self) -> list[str]:
        root = self.topics.root
        filters = [
            self.topics.edges("+"),
            self.topics.alerts("+"),
            f"{root}/+/deadletter",
            f"{root}/+/labels",
        ]
        if self.settings.mqtt.protocol == "5":
            return [f"$share/{self.settings.cloud.group}/{f}" for f in filters]
        return filters

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect(timeout)
        for topic_filter in self.subscriptions():
            self.client.subscribe(topic_filter, qos=1)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                message = self.client.messages.get(timeout=0.05)
            except queue.Empty:
                message = None
            if message is not None:
                self.handle(message)
            self.maybe_flush()
        while True:  # what already arrived is handled before the last flush
            try:
                self.handle(self.client.messages.get_nowait())
            except queue.Empty:
                break
        self.flush()
        self.client.close()

    # -- the flow -------------------------------------------------------------------------

    def handle(self, message: Message) -> None:
        """Decode one message into the pending write; it is acknowledged after the write."""
        self.counters.messages += 1
        pending = self._pending
        if not pending.messages:
            pending.since = time.monotonic()
        pending.messages.append(message)
        try:
            self._decode_into(pending, message)
        except ProtocolError as exc:
            self.counters.rejected[exc.reason.value] += 1
            log.warning("rejected %s: %s", message.topic, exc)

    def _decode_into(self, pending: _Pending, message: Message) -> None:
        topic = self.topics.parse(message.topic)
        payload = message.payload
        match topic.kind:
            case TopicKind.EDGE_BATCH:
                batch = decode_batch(payload)
                self._check_site(batch.site, topic.site)
                pending.readings[batch.site].extend(batch.readings)
                pending.seqs[batch.site].add(batch.seq)
                pending.points += len(batch.readings)
            case TopicKind.EDGE_AGG:
                aggs = decode_aggregate_message(payload)
                self._check_site(aggs.site, topic.site)
                pending.aggregates.extend(aggs.aggregates)
                pending.seqs[aggs.site].add(aggs.seq)
                pending.points += len(aggs.aggregates)
            case TopicKind.EDGE_HEALTH:
                health = decode(payload, Health)
                self._check_site(health.site, topic.site)
                if health.status == "offline":
                    # The last will was composed at connect time: stamp it when it arrives.
                    now_ms = time.time_ns() // 1_000_000
                    health = msgspec.structs.replace(health, ts=max(health.ts, now_ms))
                pending.health.append(health)
                pending.points += 1
            case TopicKind.ALERT:
                alert = decode(payload, Alert)
                self._check_site(alert.data.site, topic.site)
                pending.alerts.append(alert)
                if alert.seq:
                    pending.seqs[alert.data.site].add(alert.seq)
                pending.points += 1
            case TopicKind.DEADLETTER:
                letter = decode(payload, DeadLetter)
                self._check_site(letter.site, topic.site)
                pending.dead_letters.append(letter)
                pending.points += 1
            case TopicKind.LABELS:
                label = decode(payload, Label)
                self._check_site(label.site, topic.site)
                pending.labels.append(label)
                pending.points += 1
            case _:
                pass  # model deltas are merged by the model service (a later stage)

    @staticmethod
    def _check_site(payload_site: str, topic_site: str) -> None:
        if payload_site != topic_site:
            raise ProtocolError(Reason.TOPIC_MISMATCH, f"site {payload_site} on {topic_site}")

    def maybe_flush(self) -> None:
        pending = self._pending
        if not pending.messages or time.monotonic() < self._retry_at:
            return
        due = time.monotonic() - pending.since >= self.settings.cloud.flush_interval_s
        if due or pending.points >= self.settings.cloud.flush_points:
            self.flush()

    def flush(self) -> bool:
        """Write everything pending; on success acknowledge it, upstream and to the edges."""
        pending = self._pending
        if not pending.messages:
            return True
        try:
            self._write(pending)
        except StoreError as exc:
            self.counters.store_errors += 1
            self._backoff_s = min(MAX_BACKOFF_S, max(0.5, self._backoff_s * 2))
            self._retry_at = time.monotonic() + self._backoff_s
            log.warning("store write failed, retrying in %.1f s: %s", self._backoff_s, exc)
            return False
        self._backoff_s = 0.0
        for message in pending.messages:
            self.client.ack(message)
        for site, seqs in pending.seqs.items():
            ack = Ack(v=SCHEMA_VERSION, site=site, seq=max(seqs), ranges=seq_ranges(seqs))
            self.client.publish(self.topics.cloud_ack(site), encode(ack), qos=1)
        self.counters.flushes += 1
        self._pending = _Pending()
        return True

    def _write(self, pending: _Pending) -> None:
        c = self.counters
        for site, readings in pending.readings.items():
            self.store.write_readings(site, readings)
        if pending.aggregates:
            self.store.write_aggregates(pending.aggregates)
        if pending.alerts:
            self.store.write_alerts(pending.alerts)
        if pending.dead_letters:
            self.store.write_dead_letters(pending.dead_letters)
        if pending.labels:
            self.store.write_labels(pending.labels)
        for health in pending.health:
            self.store.write_health(health)
        c.readings += sum(len(r) for r in pending.readings.values())
        c.aggregates += len(pending.aggregates)
        c.alerts += len(pending.alerts)
        c.dead_letters += len(pending.dead_letters)
        c.labels += len(pending.labels)
        c.health += len(pending.health)
