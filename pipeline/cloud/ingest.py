"""IngestWorker: from the edge topics into the store, acknowledging only what is kept.

    {site}/edge/batch|agg|health, {site}/alerts/+, {site}/deadletter, {site}/labels
        ──► decode (bad: counted and dead-lettered; a batch whose header seq is readable
        │          is acknowledged to its edge too, so a poison batch is never resent)
        ──► pending, until flush_points items or flush_interval_s
        ══► hand-off queue (WRITES_QUEUED flushes)                       ← main thread above
        ──► store.write_*  ──ok──────────► MQTT ack of every pending message   ← writer thread
        │                                  + cloud/ack/{site} listing the stored uplink seqs
        └──error──► DiskBuffer.put ──ok──► the same acks (durably buffered)
                                   └full─► keep it, retry each second (nothing acked)
    drain (writer thread): DiskBuffer.oldest ──► store.write_* ──ok──► remove; error: backoff

Two threads, so that decoding the next flush overlaps the store's answer to this one (the
worker waited for every write before; it reached 0.4 of a plain POST loop's rate). The
main thread receives and decodes; one writer thread owns the store writes, the disk
buffer, the retry policy and every acknowledgement. The hand-off queue is bounded: while
it is full the main thread waits, so at most one write is in flight, ``WRITES_QUEUED``
flushes wait for it and one is being decoded; the messages behind them stay
unacknowledged with the broker. The writer takes flushes in order and acknowledges each
only after the store (or the disk buffer) holds it, so acks per site keep their order.

While the buffer holds anything, new writes join its tail, so the store sees them in order.
Writes are idempotent (a point's identity is its series and timestamp), so a redelivered
batch overwrites itself and counts stay exact. Records the store refuses (InfluxDB 400,
isolated by the store) are dead-lettered with reason ``store_rejected``; the rest are kept.
With MQTT 5 the worker subscribes through a shared subscription, so N workers split the
load; with 3.1.1 one worker still works. The worker publishes its own health, retained, on
``cloud/health/{client_id}`` and stores it under the reserved site ``cloud``.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pipeline.cloud.buffer import DiskBuffer, StoreWrite
from pipeline.cloud.catalogs import SiteCatalogs
from pipeline.cloud.models import ModelMerger
from pipeline.cloud.store import PartialWriteError, Store, StoreConfigError, StoreUnavailable
from pipeline.cloud.store.base import CLOUD_SITE
from pipeline.config import Settings
from pipeline.errors import ProtocolError, StoreError
from pipeline.logs import event
from pipeline.metrics import CLOUD, MetricsServer, serve_metrics
from pipeline.mqtt import Message, MqttClient, Will
from pipeline.protocol import (
    SCHEMA_VERSION,
    Ack,
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
from pipeline.protocol.batch_codec import peek_batch_header
from pipeline.protocol.catalog import CatalogMessage
from pipeline.protocol.dead_letters import dead_letter
from pipeline.protocol.messages import seq_ranges
from pipeline.protocol.topics import is_valid_id

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
MIN_BACKOFF_S = 0.5
JITTER = 0.2  # each backoff is drawn from ±20 % around its nominal value
MAX_RETRY_AFTER_S = 600.0
DRAIN_SLICE_S = 0.2  # longest the writer drains before it looks at new flushes again
WRITES_QUEUED = 1  # flushes waiting for the writer (one more is being written)
BUFFER_FULL_RETRY_S = 1.0  # a flush the full buffer refused is tried again after this
WRITER_IDLE_S = 0.05  # the writer's longest wait for a flush before it drains again
HAND_OFF_POLL_S = 0.1  # how often a waiting hand-off checks that the writer still runs
WRITER_JOIN_S = 120.0  # at shutdown: the last writes' store timeouts, then give up


def now_ms() -> int:
    return time.time_ns() // 1_000_000


CATALOG_SUFFIX = "/edge/catalog"


@dataclass
class IngestCounters:
    messages: int = 0
    readings: int = 0
    aggregates: int = 0
    alerts: int = 0
    dead_letters: int = 0
    health: int = 0
    labels: int = 0
    catalogs: int = 0  # sites' catalogues stored
    catalog_conflicts: int = 0  # kinds a site's catalogue defines incompatibly with another's
    rejected: Counter[str] = field(default_factory=Counter)  # undecodable, by reason
    poison_acked: int = 0  # undecodable batches whose header seq was acknowledged to the edge
    store_errors: Counter[str] = field(default_factory=Counter)  # by class
    store_rejected: int = 0  # records the store refused, dead-lettered
    flushes: int = 0
    buffered: int = 0  # writes put in the disk buffer
    drained: int = 0  # buffered writes since stored
    buffer_full: int = 0  # flushes the buffer refused (messages left unacknowledged)
    acks_sent: int = 0  # cloud/ack/{site} messages published (stored uplink seqs)


@dataclass
class _Pending:
    messages: list[Message] = field(default_factory=list)
    write: StoreWrite = field(default_factory=StoreWrite)
    encoded: dict[str, Sequence[Reading]] = field(default_factory=dict)  # by site, see flush
    seqs: dict[str, set[int]] = field(default_factory=dict)
    points: int = 0
    since: float = 0.0

    def seq(self, site: str, seq: int) -> None:
        self.seqs.setdefault(site, set()).add(seq)


class IngestWorker:
    def __init__(self, settings: Settings, store: Store, buffer: DiskBuffer | None = None) -> None:
        self.settings = settings
        self.store = store
        self.topics = Topics(settings.mqtt.topic_root)
        self.counters = IngestCounters()
        self.name = settings.cloud.client_id
        if not is_valid_id(self.name):
            raise ValueError(f"cloud.client_id {self.name!r} must match ^[A-Za-z0-9_-]{{1,64}}$")
        self.buffer = buffer or DiskBuffer(
            Path(settings.cloud.buffer_dir) / f"{self.name}.buffer.db",
            int(settings.cloud.buffer_mb * 1024 * 1024),
        )
        self._pending = _Pending()  # being decoded (main thread)
        # A store that can build its request bodies ahead of the write (InfluxStore) does
        # so on the main thread, so that the writer thread only sends them.
        self._encode_readings: Callable[[str, list[Reading]], Sequence[Reading]] | None = getattr(
            store, "encode_readings", None
        )
        # Flushes for the writer thread; None asks it to finish.
        self._writes: queue.Queue[_Pending | None] = queue.Queue(maxsize=WRITES_QUEUED)
        self._closing = threading.Event()  # shutting down: one attempt per flush, no waiting
        self._handed_off = 0  # messages handed to the writer (main thread)
        self._settled = 0  # of those, acknowledged or given up (writer thread)
        self._writer_error: Exception | None = None  # what ended the writer thread, if anything
        self._backoff_s = 0.0
        self._retry_at = 0.0  # no store write before this (monotonic)
        self.config_alarm = ""  # the last StoreConfigError while it lasts ("" when none)
        self.merge_alarm = ""  # the same for the model merger's reads
        self._started = time.monotonic()
        self._next_health = 0.0
        self._next_summary = time.monotonic() + settings.log.summary_interval_s
        self._store_down_since: float | None = None  # monotonic, from the first failed write
        self.metrics: MetricsServer | None = None  # /metrics, from start() when cloud.metrics_port
        self.client = MqttClient(
            settings.mqtt.url,
            client_id=settings.cloud.client_id,
            protocol=settings.mqtt.protocol_for("cloud"),
            keepalive=settings.mqtt.keepalive,
            session_expiry=settings.mqtt.session_expiry,
            tls_ca=settings.mqtt.tls_ca,
            manual_ack=True,
            max_payload=settings.mqtt.max_payload,
            will=Will(self.topics.cloud_health(self.name), encode(self._health("offline"))),
        )
        self.catalogs = SiteCatalogs()  # each site's kinds, from {site}/edge/catalog (issue 17)
        self.models = ModelMerger(  # model deltas (issue 5): publishes cloud/model/{kind}
            settings,
            store,
            lambda topic, body: self.client.publish(topic, body, qos=1, retain=True),
            kind_of=self.catalogs.kind_of,
        )

    def subscriptions(self) -> list[str]:
        """Shared filters split the load; model deltas go whole to the one merging worker.

        Why not shared: every merged model is a fold over all deltas of a kind, with one
        version counter; workers each merging a share would publish diverging models.
        """
        root = self.topics.root
        filters = [
            f"{root}/+/edge/{what}" for what in ("batch", "agg", "health")
        ] + [self.topics.alerts("+"), f"{root}/+/deadletter", f"{root}/+/labels"]
        if self.settings.mqtt.protocol_for("cloud") == "5":
            filters = [f"$share/{self.settings.cloud.group}/{f}" for f in filters]
        if self.settings.cloud.merge_models:
            filters.append(self.topics.edges("model"))
        # Not shared: every worker keeps every site's catalogue, to tell conflicts (retained, rare)
        filters.append(self.topics.edges("catalog"))
        return filters

    def start(self, timeout: float = 10.0) -> None:
        cloud = self.settings.cloud
        info = {"worker": self.name}
        self.metrics = serve_metrics(self.health, CLOUD, info, cloud.metrics_host, cloud.metrics_port, "cloud")
        self.client.connect(timeout)
        for topic_filter in self.subscriptions():
            self.client.subscribe(topic_filter, qos=1)
        event(
            log,
            logging.INFO,
            "cloud worker started",
            worker=self.name,
            broker=str(self.client.broker),
            store=type(self.store).__name__,
            buffer_items=self.buffer.items,
            metrics=self.metrics.url if self.metrics else "off",
        )

    def run(self, stop: threading.Event) -> None:
        """Receive and decode here; store and acknowledge on the writer thread, until ``stop``.

        An exception on the writer thread ends the run here too (re-raised): what it had
        not acknowledged, the broker delivers again.
        """
        self._closing.clear()
        writer = threading.Thread(target=self._write_loop, name=f"{self.name}-writer", daemon=True)
        writer.start()
        try:
            while not stop.is_set():
                try:
                    message = self.client.messages.get(timeout=0.05)
                except queue.Empty:
                    message = None
                if message is not None:
                    self.handle(message)
                self.maybe_flush(stop)
                self.maybe_report_health()
                if time.monotonic() >= self._next_summary:
                    self._next_summary = time.monotonic() + self.settings.log.summary_interval_s
                    event(log, logging.INFO, "summary", **self.summary())
            event(log, logging.INFO, "cloud worker stopping", inbox=self.client.messages.qsize())
            while True:  # what already arrived is handled before the last flush
                try:
                    self.handle(self.client.messages.get_nowait())
                except queue.Empty:
                    break
            self.flush(stop)
            self.report_health("offline")
            self.flush(stop)
        finally:
            self._closing.set()
            deadline = time.monotonic() + WRITER_JOIN_S
            while writer.is_alive() and time.monotonic() < deadline:
                try:
                    self._writes.put(None, timeout=HAND_OFF_POLL_S)
                    break
                except queue.Full:
                    continue
            writer.join(max(0.0, deadline - time.monotonic()))
            if writer.is_alive():
                log.error("writer still busy after %.0f s; stopping without it", WRITER_JOIN_S)
            self.client.flush(2.0)
            self.client.close()
            event(log, logging.INFO, "cloud worker stopped", **self.summary())
            if self.metrics is not None:
                self.metrics.close()
            if not writer.is_alive():
                self.buffer.close()
        if self._writer_error is not None:
            raise RuntimeError("the cloud worker's writer thread failed") from self._writer_error

    # -- the flow -------------------------------------------------------------------------

    def handle(self, message: Message) -> None:
        """Decode one message into the pending write; it is acknowledged after the write."""
        if not message.topic.endswith(CATALOG_SUFFIX):
            # Sites' catalogues are counted apart (``catalogs``): retained, every worker gets
            # each one again at every (re)subscription, and they carry no data points.
            self.counters.messages += 1
        pending = self._pending
        if not pending.messages:
            pending.since = time.monotonic()
        pending.messages.append(message)
        try:
            self._decode_into(pending, message)
        except ProtocolError as exc:
            self._reject(pending, message, exc)

    def _decode_into(self, pending: _Pending, message: Message) -> None:
        topic = self.topics.parse(message.topic)
        payload = message.payload
        write = pending.write
        match topic.kind:
            case TopicKind.EDGE_BATCH:
                batch = decode_batch(payload)
                self._check_site(batch.site, topic.site)
                write.readings.setdefault(batch.site, []).extend(batch.readings)
                pending.seq(batch.site, batch.seq)
                pending.points += len(batch.readings)
            case TopicKind.EDGE_AGG:
                aggs = decode_aggregate_message(payload)
                self._check_site(aggs.site, topic.site)
                write.aggregates.extend(aggs.aggregates)
                pending.seq(aggs.site, aggs.seq)
                pending.points += len(aggs.aggregates)
            case TopicKind.EDGE_HEALTH:
                health = decode(payload, Health)
                self._check_site(health.site, topic.site)
                if health.status == "offline":
                    # The last will was composed at connect time: stamp it when it arrives.
                    health = msgspec.structs.replace(health, ts=max(health.ts, now_ms()))
                write.health.append(health)
                pending.points += 1
            case TopicKind.ALERT:
                alert = decode(payload, Alert)
                self._check_site(alert.data.site, topic.site)
                write.alerts.append(alert)
                if alert.seq:
                    pending.seq(alert.data.site, alert.seq)
                pending.points += 1
            case TopicKind.DEADLETTER:
                letter = decode(payload, DeadLetter)
                self._check_site(letter.site, topic.site)
                write.dead_letters.append(letter)
                pending.points += 1
            case TopicKind.LABELS:
                label = decode(payload, Label)
                self._check_site(label.site, topic.site)
                write.labels.append(label)
                pending.points += 1
            case TopicKind.EDGE_CATALOG:
                catalog = decode(payload, CatalogMessage)
                self._check_site(catalog.site, topic.site)
                for kind, other in self.catalogs.learn_one(catalog):
                    self.counters.catalog_conflicts += 1
                    event(
                        log,
                        logging.WARNING,
                        "a kind is defined incompatibly by two catalogues; their series are kept apart",
                        kind=kind,
                        site=catalog.site,
                        other_site=other,
                    )
                write.catalogs.append(catalog)
                pending.points += 1
            case TopicKind.EDGE_MODEL:  # verified, merged, stored: pipeline/cloud/models.py
                try:
                    seq = self.models.handle(topic.site, payload)
                except StoreError as exc:  # the merger could not read its state back
                    self._merge_failed(exc)
                    return
                self.merge_alarm = ""
                if seq is not None:
                    pending.seq(topic.site, seq)
            case _:
                pass

    def _reject(self, pending: _Pending, message: Message, exc: ProtocolError) -> None:
        """Count and dead-letter an undecodable message; ack a batch's seq if readable.

        The message itself is acknowledged to the broker with the rest of the flush: it
        will never decode, so a redelivery would only repeat this. A batch whose version 2
        header names its site and seq is also acknowledged to its edge (R12), else the
        edge would resend it forever.
        """
        self.counters.rejected[exc.reason.value] += 1
        log.warning("rejected %s: %s", message.topic, exc)
        try:
            topic = self.topics.parse(message.topic)
        except ProtocolError:
            return  # no site to file it under; counted above
        detail = exc.detail
        if topic.kind is TopicKind.EDGE_BATCH:
            try:
                header = peek_batch_header(message.payload)
            except ProtocolError:
                header = None
            if header is not None and header.seq is not None and header.site == topic.site:
                pending.seq(topic.site, header.seq)
                self.counters.poison_acked += 1
                detail = f"seq {header.seq}: {detail}"
        pending.write.dead_letters.append(
            dead_letter(topic.site, message.topic, message.payload, exc.reason, detail, now_ms())
        )
        pending.points += 1

    def _merge_failed(self, exc: StoreError) -> None:
        """A delta the merger could not load its state for: not acknowledged to its edge,
        which sends it again later (one load attempt per delta, so never a tight loop)."""
        self.counters.store_errors["models"] += 1
        if isinstance(exc, StoreConfigError):
            self.merge_alarm = str(exc)[:300]
            log.error(
                "writer_config_error: model merging cannot read the store: %s (this worker "
                "needs READ as well as WRITE, or cloud.merge_models = false on it)",
                exc,
            )
        else:
            log.warning("model merging cannot read the store, the edge resends: %s", exc)

    @staticmethod
    def _check_site(payload_site: str, topic_site: str) -> None:
        if payload_site != topic_site:
            raise ProtocolError(Reason.TOPIC_MISMATCH, f"site {payload_site} on {topic_site}")

    def maybe_flush(self, stop: threading.Event) -> None:
        pending = self._pending
        if not pending.messages:
            return
        due = time.monotonic() - pending.since >= self.settings.cloud.flush_interval_s
        if due or pending.points >= self.settings.cloud.flush_points:
            self.flush(stop)

    def flush(self, stop: threading.Event) -> None:
        """Hand everything pending to the writer thread; waits while its queue is full."""
        pending = self._pending
        if not pending.messages:
            return
        self._handed_off += len(pending.messages)
        self._pending = _Pending()
        if self._encode_readings is not None:
            for site, readings in pending.write.readings.items():
                try:
                    pending.encoded[site] = self._encode_readings(site, readings)
                except ValueError:
                    pass  # sent as it is: the writer dead-letters what the store refuses
        self._put(pending, stop)

    def _put(self, item: _Pending | None, stop: threading.Event) -> None:
        """Queue ``item`` for the writer, waiting for room (back-pressure).

        Once ``stop`` is set the writer stops waiting for a full disk buffer, so the wait
        ends; if the writer died, its error is raised here.
        """
        while True:
            if self._writer_error is not None:
                raise RuntimeError("the cloud worker's writer thread failed") from self._writer_error
            if stop.is_set():
                self._closing.set()
            try:
                self._writes.put(item, timeout=HAND_OFF_POLL_S)
                return
            except queue.Full:
                continue

    # -- the writer thread ----------------------------------------------------------------

    def _write_loop(self) -> None:
        """Commit flushes in order; between them replay the disk buffer. Until told to end."""
        try:
            while True:
                try:
                    pending = self._writes.get(timeout=WRITER_IDLE_S)
                except queue.Empty:
                    self.drain(DRAIN_SLICE_S)
                    continue
                if pending is None:
                    return
                while not self._commit(pending) and not self._closing.is_set():
                    if not self.drain(DRAIN_SLICE_S):  # the buffer is full: make room first
                        self._closing.wait(BUFFER_FULL_RETRY_S)
                self._settled += len(pending.messages)
                self.drain(DRAIN_SLICE_S)
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which re-raises
            log.exception("the writer thread failed")
            self._writer_error = exc

    def _commit(self, pending: _Pending) -> bool:
        """Store (or durably buffer) one flush; then acknowledge it, upstream and to the edges.

        False when the disk buffer is full: nothing is acknowledged, the caller tries again.
        """
        stored = False
        if self.buffer.items == 0 and time.monotonic() >= self._retry_at:
            stored = self._store(pending.write, pending.encoded)
        if not stored:
            if not self.buffer.put(pending.write):
                self.counters.buffer_full += 1
                log.error(
                    "disk buffer full (%d bytes of %d): %d messages stay unacknowledged",
                    self.buffer.bytes,
                    self.buffer.max_bytes,
                    len(pending.messages),
                )
                return False
            self.counters.buffered += 1
        for message in pending.messages:
            self.client.ack(message)
        for site, seqs in pending.seqs.items():
            ack = Ack(v=SCHEMA_VERSION, site=site, seq=max(seqs), ranges=seq_ranges(seqs))
            self.client.publish(self.topics.cloud_ack(site), encode(ack), qos=1)
            self.counters.acks_sent += 1
        self.counters.flushes += 1
        return True

    def drain(self, budget_s: float) -> int:
        """Replay buffered writes into the store, oldest first, for up to ``budget_s``."""
        drained = 0
        deadline = time.monotonic() + budget_s
        while self.buffer.items and time.monotonic() >= self._retry_at:
            item = self.buffer.oldest()
            if item is None:
                break
            item_id, write = item
            if not self._store(write):
                break
            self.buffer.remove(item_id)
            self.counters.drained += 1
            drained += 1
            if time.monotonic() >= deadline:
                break
        return drained

    def _store(self, write: StoreWrite, encoded: dict[str, Sequence[Reading]] | None = None) -> bool:
        """Write to the store; True when stored (refused records dead-lettered), else backoff."""
        try:
            self._write(write, encoded or {})
        except StoreError as exc:
            self._failed(exc)
            return False
        self._backoff_s = 0.0
        if self._store_down_since is not None:
            outage_s = round(time.monotonic() - self._store_down_since, 1)
            event(log, logging.INFO, "store accepts writes again", outage_s=outage_s)
            self._store_down_since = None
        if self.config_alarm:
            log.warning("store accepts writes again; alarm cleared")
            self.config_alarm = ""
        return True

    def _failed(self, exc: StoreError) -> None:
        kind = (
            "config"
            if isinstance(exc, StoreConfigError)
            else "unavailable"
            if isinstance(exc, StoreUnavailable)
            else "other"
        )
        self.counters.store_errors[kind] += 1
        if self._store_down_since is None:
            self._store_down_since = time.monotonic()
        self._backoff_s = min(MAX_BACKOFF_S, max(MIN_BACKOFF_S, self._backoff_s * 2))
        wait = self._backoff_s * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - not crypto
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER_S))
        self._retry_at = time.monotonic() + wait
        if kind == "config":
            self.config_alarm = str(exc)[:300]
            log.error("writer_config_error: %s (buffering; retry in %.1f s)", exc, wait)
        else:
            log.warning("store write failed, buffering; retry in %.1f s: %s", wait, exc)

    def _write(self, write: StoreWrite, encoded: dict[str, Sequence[Reading]]) -> None:
        """Every part of ``write``; records the store refuses are dead-lettered, once.

        ``encoded``: the readings of a site as the store encoded them ahead, if it did.
        """
        refused: list[DeadLetter] = []
        for site, readings in write.readings.items():
            ahead = encoded.get(site, readings)
            self._part(refused, site, "readings", self.store.write_readings, site, ahead)
        self._part(refused, None, "aggregates", self.store.write_aggregates, write.aggregates)
        self._part(refused, None, "alerts", self.store.write_alerts, write.alerts)
        self._part(refused, None, "deadletters", self.store.write_dead_letters, write.dead_letters)
        self._part(refused, None, "labels", self.store.write_labels, write.labels)
        self._part(refused, None, "catalogs", self.store.write_catalogs, write.catalogs)
        for health in write.health:
            self._part(refused, health.site, "health", self.store.write_health, health)
        if refused:
            try:
                self.store.write_dead_letters(refused)
            except (PartialWriteError, ValueError) as exc:
                log.error("dead letters of refused records refused too: %s", exc)
            self.counters.store_rejected += len(refused)
        c = self.counters
        c.readings += sum(len(r) for r in write.readings.values())
        c.aggregates += len(write.aggregates)
        c.alerts += len(write.alerts)
        c.dead_letters += len(write.dead_letters)
        c.labels += len(write.labels)
        c.catalogs += len(write.catalogs)
        c.health += len(write.health)

    def _part(
        self,
        refused: list[DeadLetter],
        site: str | None,
        what: str,
        fn: Callable[..., None],
        *args: object,
    ) -> None:
        """One store call; what the store refuses becomes dead letters in ``refused``."""
        if what != "health" and not args[-1]:
            return
        ts = now_ms()
        try:
            fn(*args)
        except PartialWriteError as exc:
            self.counters.store_errors["partial"] += 1
            log.warning("store refused %d %s records: %s", len(exc.rejected), what, exc.text[:300])
            for record, why in exc.rejected or [(exc.text, exc.text)]:
                where = site or _site_of(record) or CLOUD_SITE
                letter = dead_letter(
                    where, f"store/{what}", record.encode(), Reason.STORE_REJECTED, why, ts
                )
                refused.append(letter)
        except ValueError as exc:  # an id the store will never take: refuse it, never retry
            self.counters.store_errors["invalid"] += 1
            log.error("store refused %s: %s", what, exc)
            detail = str(exc)
            where = site if site and is_valid_id(site) else CLOUD_SITE
            refused.append(
                dead_letter(
                    where, f"store/{what}", detail.encode(), Reason.STORE_REJECTED, detail, ts
                )
            )

    # -- health ---------------------------------------------------------------------------

    def maybe_report_health(self) -> None:
        if time.monotonic() >= self._next_health:
            self._next_health = time.monotonic() + self.settings.cloud.health_interval_s
            self.report_health("online")

    def report_health(self, status: str) -> None:
        """Publish this worker's health (retained) and store it with the next flush."""
        health = self._health(status)
        self.client.publish(self.topics.cloud_health(self.name), encode(health), qos=1, retain=True)
        pending = self._pending
        if not pending.messages:
            pending.since = time.monotonic()
        pending.write.health.append(health)
        pending.points += 1

    def health(self, status: str = "online") -> Health:
        """Counters and gauges now (also what /metrics exposes, read from its thread)."""
        return self._health(status)

    def summary(self) -> dict[str, object]:
        """What the summary and stop lines report: stored points, acks, the buffer, errors."""
        c = self.counters
        return {
            "messages": c.messages,
            "stored": {"readings": c.readings, "aggregates": c.aggregates, "alerts": c.alerts},
            "dead_letters_stored": c.dead_letters,
            "acks_sent": c.acks_sent,
            "rejected": dict(c.rejected),
            "store_errors": dict(c.store_errors),
            "buffer_items": self.buffer.items,
            "buffer_bytes": self.buffer.bytes,
            "pending_messages": len(self._pending.messages),
            "connected": self.client.connected,
        }

    def _health(self, status: str) -> Health:
        c = self.counters
        counters: dict[str, int] = {
            "messages": c.messages,
            "readings": c.readings,
            "aggregates": c.aggregates,
            "alerts": c.alerts,
            "dead_letters": c.dead_letters,
            "health": c.health,
            "labels": c.labels,
            "catalogs": c.catalogs,
            "catalog_conflicts": c.catalog_conflicts,
            "poison_acked": c.poison_acked,
            "store_rejected": c.store_rejected,
            "flushes": c.flushes,
            "buffered": c.buffered,
            "drained": c.drained,
            "buffer_full": c.buffer_full,
            "acks_sent": c.acks_sent,
        }
        counters["buffer_refused"] = self.buffer.refused
        counters["buffer_corrupt"] = self.buffer.corrupt
        # A copy first: the writer thread may add a key while this one reads them.
        counters.update({f"rejected.{k}": v for k, v in dict(c.rejected).items()})
        counters.update({f"store_errors.{k}": v for k, v in dict(c.store_errors).items()})
        gauges: dict[str, float] = {
            "pending_messages": float(
                len(self._pending.messages) + self._handed_off - self._settled
            ),
            "store_config_error": 1.0 if self.config_alarm or self.merge_alarm else 0.0,
            "cpu_s": time.process_time(),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "pid": float(os.getpid()),
        }
        gauges.update(
            buffer_items=float(self.buffer.items),
            buffer_bytes=float(self.buffer.bytes),
            buffer_points=float(self.buffer.points),
        )
        if hasattr(self, "client"):  # the last will is composed before the client exists
            gauges["connected"] = 1.0 if self.client.connected else 0.0
        return Health(
            v=SCHEMA_VERSION,
            site=CLOUD_SITE,
            node=self.name,
            ts=now_ms(),
            status=status,
            counters=counters,
            gauges=gauges,
        )


_SITE_TAG = re.compile(r"[, ]site=([A-Za-z0-9_-]{1,64})(?=[, ])")


def _site_of(line: str) -> str | None:
    """The ``site`` tag of a line of line protocol, if it has a valid one."""
    found = _SITE_TAG.search(line)
    return found.group(1) if found else None
