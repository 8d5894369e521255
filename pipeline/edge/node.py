"""EdgeNode: one process per site, the only edge module that does I/O.

    [[ingest]] topics ──► adapter (ttn, chirpstack, zigbee2mqtt, influx-line, json) ──┐
                             └─refused──► {site}/deadletter                          │ readings
    {site}/dev/+ ──► Validator ◄─────────────────────────────────────────────────────┘
                        └─bad──► {site}/deadletter (QoS 0, counted by reason)
                        │ accepted
                        ▼
                 UplinkQueue journal (durable; the device's PUBACK only after the commit)
                        │
          per metric:   detect (score, then learn)
                        ├─► AlertPolicy ──raise/clear──► outbox ALERT ──► {site}/alerts/{device}
                        ├─► WindowAggregator ──windows due──► outbox AGGREGATE
                        └─► Selector (deadband | swinging door, full resolution near anomalies)
                                   └─► batch ──size or age──► outbox BATCH (bounded-error codec)
    outbox (priority, disk budget) ──► {site}/edge/batch|agg  QoS 1, at most max_inflight
    cloud/ack/{site} ──► the acknowledged seqs leave the disk
    every health_interval ──► {site}/edge/health (retained; the last will says offline)
    every model_interval ──► {site}/edge/model (signed kind-level deltas, outbox MODEL);
    cloud/model/+ (retained, verified) ──► new detectors warm-start from their kind's merge

Messages are handled one at a time on the node's own thread, taken from the queue the MQTT
client fills. Journal appends are committed in groups every ``uplink.commit_interval_ms``;
only then are the devices' QoS 1 messages acknowledged, so a reading counts as accepted
exactly when it is on disk. Every message is acknowledged in the order it came, the cloud's
acks too (MQTT-4.6.0-2; see ``dispatch``). After a crash the node replays the journal from its watermark
(the oldest reading whose contribution is not yet in the outbox) to rebuild open windows and
the current batch; windows it had already shipped are not emitted again.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import msgspec

from pipeline.clock import Clock, SystemClock
from pipeline.config import Settings, catalog_of, links_of
from pipeline.detect.base import ValueDetector
from pipeline.detect.detection import DEFAULT_LINKS, build
from pipeline.detect.irrigation import IrrigationZones
from pipeline.detect.point import Point
from pipeline.detect.silence import SILENCE_CHECK_MS
from pipeline.detect.stuck import StuckWatch
from pipeline.detect.switching import SwitchContext
from pipeline.edge.aggregate import WindowAggregator
from pipeline.edge.health import NodeCounters
from pipeline.edge.load import LoadGovernor
from pipeline.edge.model_sync import ModelSync, builtin_priors_for
from pipeline.edge.select import Deadband, SwingingDoor
from pipeline.edge.sequencer import EventTimeSequencer
from pipeline.edge.snapshot import (
    Loaded,
    PerDevice,
    SnapshotHealth,
    SnapshotRefused,
    SnapshotStore,
    Stage,
)
from pipeline.edge.snapshot import apply as apply_snapshot
from pipeline.edge.uplink import Priority, UplinkQueue, UplinkStats
from pipeline.edge.validate import Validator
from pipeline.errors import ProtocolError
from pipeline.ingest.router import IngestRouter
from pipeline.learn.sync_stats import DetectorPrior
from pipeline.logs import WarningBudget, event
from pipeline.metrics import EDGE, MetricsServer, serve_metrics
from pipeline.mqtt import Message, MqttClient, PayloadTooLarge, Will
from pipeline.protocol import (
    SCHEMA_VERSION,
    Ack,
    Aggregate,
    AggregateBatch,
    Alert,
    Batch,
    DeadLetter,
    Health,
    Reading,
    ReadingLimits,
    Reason,
    Topics,
    decode,
    encode,
    encode_batch,
)
from pipeline.protocol.agg_codec import encode_aggregates
from pipeline.protocol.batch_codec import codec_for
from pipeline.protocol.catalog import Catalog
from pipeline.protocol.causes import Cause
from pipeline.protocol.dead_letters import dead_letter
from pipeline.protocol.messages import seqs_of
from pipeline.protocol.model_codec import MetricStats, encode_model

log = logging.getLogger(__name__)


# Aggregates per uplink message: ~25 KB as JSON, ~10 KB as agg-zstd (a few bytes each).
AGGREGATES_PER_MESSAGE = {"json": 100, "agg-zstd": 2000}
ACK_BACKOFF_MAX = 8  # the ack timeout grows to at most this many times uplink.ack_timeout_s
ALERT_BURST = 16  # alerts sent per pump beyond uplink.max_inflight (alerts skip the window)
COMMIT_BATCH = 2000  # commit early when this many readings wait for their PUBACK
KIND_META = "kind/"  # queue metadata key prefix: kind/{device} -> the device's kind
BATCH_UPTO_META = "batch_upto"  # journal id of the newest reading whose selected points shipped
SNAPSHOT_DIR = "snapshot"  # under the node's state dir
_reading_decoder = msgspec.json.Decoder(Reading)
_closed_encoder = msgspec.json.Encoder()
_closed_decoder = msgspec.json.Decoder(list[tuple[str, str, int]])


def tolerance_function(settings: Settings, catalog: Catalog | None = None) -> Callable[[str, str], float]:
    """(kind, metric) -> tolerance: select.tolerances, else the kind's, else N x resolution."""
    explicit = settings.select.tolerances
    factor = settings.select.tolerance_resolutions
    kinds = (catalog or catalog_of(settings)).kinds

    def tolerance(kind: str, metric: str) -> float:
        key = f"{kind}.{metric}"
        if key in explicit:
            return explicit[key]
        m = kinds.get(kind)
        found = m.metrics.get(metric) if m is not None else None
        if found is None:
            return 0.0
        return found.tolerance if found.tolerance is not None else factor * found.resolution

    return tolerance


class EdgeNode:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.site = settings.edge.site
        self.name = f"edge-{self.site}"
        self.clock = clock or SystemClock()
        self.topics = Topics(settings.mqtt.topic_root)
        edge, select, agg, uplink = settings.edge, settings.select, settings.aggregate, settings.uplink
        self.queue = UplinkQueue.in_state_dir(
            Path(edge.state_dir) / self.name,
            budget_bytes=int(uplink.budget_mb * 1024 * 1024),
            alert_reserve=uplink.alert_reserve,
            synchronous=uplink.synchronous,
            clock=self.clock,
        )
        # A device's kind is kept in the queue's metadata, committed with its first reading:
        # the journal is trimmed as windows ship, so replaying it cannot rebuild every kind.
        known_kinds = {d: k.decode() for d, k in self.queue.meta_with_prefix(KIND_META).items()}
        self.catalog = catalog_of(settings)
        # [[ingest]]: which topics to subscribe to, and the adapter of each foreign one
        self.ingest = IngestRouter(settings.ingest, self.site, self.topics, self.catalog)
        self._foreign = self.ingest.foreign
        self._native_prefix = self.ingest.native_prefix
        self.validator = Validator(
            self.site,
            self.topics,
            ReadingLimits(
                max_bytes=edge.max_reading_bytes,
                future_skew_ms=int(edge.future_skew_s * 1000),
                max_age_ms=int(edge.max_age_s * 1000),
            ),
            known_kinds=known_kinds,
            on_new_device=lambda device, kind: self.queue.set_meta(KIND_META + device, kind.encode()),
            catalog=self.catalog,
        )
        selector_class = SwingingDoor if select.method == "swinging_door" else Deadband
        self.selector = selector_class(
            tolerance_function(settings, self.catalog),
            heartbeat_ms=int(select.heartbeat_s * 1000),
            anomaly_score=select.anomaly_score,
            pre_points=select.pre_anomaly_points,
            post_ms=int(select.post_anomaly_s * 1000),
        )
        self.aggregator = WindowAggregator(
            self.site,
            window_ms=int(agg.window_s * 1000),
            lateness_ms=int(agg.lateness_s * 1000),
            idle_ms=int(agg.idle_s * 1000),
            anomaly_score=select.anomaly_score,
            closed_until=self._load_closed_until(),
        )
        self.governor = LoadGovernor()
        # Model deltas and warm start (issue 5): the "model sync" section below.
        self.model_sync = ModelSync(
            self.site,
            self.name,
            key=edge.model_key.encode(),
            cloud_key=edge.cloud_model_key.encode() if edge.warm_start else b"",
            interval_ms=int(edge.model_interval_s * 1000),
            builtin=builtin_priors_for(self.catalog) if settings.detect.builtin_priors is True else {},
        )
        # Detection (pipeline.detect): detectors, stuck runs, [[links]] (irrigation zones), switch contexts,
        # dropouts and the alert policy; the same build() the quality bench measures.
        self.detection = build(
            self.site,
            settings.alert,
            choices=settings.detect.kinds,
            catalog=self.catalog,
            links=links_of(settings),
            prior=self._prior,
            rate_prior=self.model_sync.prior_at if self.model_sync.builtin else None,
            event_check_ms=SILENCE_CHECK_MS,
            lateness_ms=int(agg.lateness_s * 1000),
        )
        self.alerts = self.detection.policy
        # Cross-device stages (one per [[links]] entry) see their kinds' readings in event-time order,
        # released behind the watermark (newest - aggregate.lateness_s): the same alerts
        # whatever the arrival interleaving (docs/decisions/0011-event-time-watermark.md).
        self.sequencer: EventTimeSequencer[Reading] = EventTimeSequencer(
            {kind for stage in self.detection.scorer.stages for kind in stage.ordered_kinds()},
            lateness_ms=int(agg.lateness_s * 1000),
        )
        self._sequencer_idle_ms = int(agg.idle_s * 1000)
        self._last_held_ms = 0  # node clock at the newest reading the sequencer held
        self.codec = codec_for(uplink.codec, self.catalog.resolutions)
        self.counters = NodeCounters()
        self.points_in: Counter[str] = Counter()  # by metric
        self.points_selected: Counter[str] = Counter()
        self._batch: list[Point] = []
        self._batch_first_id: int | None = None
        self._batch_started_ms = 0
        self._window_first_id: dict[tuple[str, str, int], int] = {}
        self._batch_ids: list[int] = []  # journal id of the reading that selected each batch point
        # Learned-state snapshots (issue 16): "snapshots" below.
        self._batch_upto = int(self.queue.get_meta(BATCH_UPTO_META) or b"0")
        self._processed_jid = 0  # journal id of the newest reading processed
        self._replaying_upto = 0  # while > 0, replayed readings up to it had their alerts sent
        self._dirty_devices: set[str] = set()  # devices whose per-device state changed since the snapshot
        self._snapshot_jid = 0  # watermark of the newest snapshot on disk (the journal keeps what follows)
        self.snapshot_health = SnapshotHealth()
        self.snapshots: SnapshotStore | None = None
        if edge.snapshot_interval_s > 0:
            self.snapshots = SnapshotStore(
                Path(edge.state_dir) / self.name / SNAPSHOT_DIR, self.site, shards=edge.snapshot_shards
            )
        else:
            self.snapshot_health.restore_reason = "disabled"
        self._next_snapshot = time.monotonic() + edge.snapshot_interval_s
        self._unacked: list[Message] = []  # messages, in arrival order, waiting for the commit
        self._unacked_control = 0  # of them, the cloud's acks and models (not readings)
        self._last_commit = time.monotonic()
        self._dirty = False  # outbox or metadata changed since the last commit
        self._inflight: dict[int, int] = {}  # uplink seq -> sent at (ms)
        # Doubles with every ack timeout in a row (to ACK_BACKOFF_MAX x the setting), back to
        # the setting at the next ack: a cloud that is away is not asked again every few seconds.
        self._ack_timeout_ms = int(settings.uplink.ack_timeout_s * 1000)
        self._seen_disconnects = 0
        self._next_health_ms = 0
        self._next_flush_ms = 0
        self._rate = RecentRate()
        self._next_summary = time.monotonic() + settings.log.summary_interval_s
        self._next_log_check = 0.0
        self._dead_letter_warnings = WarningBudget(settings.log.warnings_per_min, window_s=60.0)
        self._uplink_down_since: float | None = None  # monotonic, from the first ack timeout
        self.metrics: MetricsServer | None = None  # /metrics, from start() when edge.metrics_port
        self._drain_requested = threading.Event()
        self._drained = threading.Event()  # set by tick once a requested drain is done
        self._health_topic = self.topics.edge(self.site, "health")
        offline = self.counters.health(self.site, self.name, 0, status="offline")
        self.client = MqttClient(
            settings.mqtt.url,
            client_id=f"edgepipe-{self.name}",
            protocol=settings.mqtt.protocol_for("edge"),
            keepalive=settings.mqtt.keepalive,
            session_expiry=settings.mqtt.session_expiry,
            tls_ca=settings.mqtt.tls_ca,
            manual_ack=True,
            max_payload=settings.mqtt.max_payload,
            will=Will(self._health_topic, encode(offline)),
        )

    @property
    def detectors(self) -> dict[tuple[str, str], ValueDetector]:
        """The detector of every (device, metric) the node has seen."""
        return self.detection.detectors

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Rebuild state from the journal, serve /metrics (if set), connect, and subscribe."""
        self.recover()
        edge = self.settings.edge
        self.metrics = serve_metrics(
            self.health, EDGE, {"site": self.site, "node": self.name}, edge.metrics_host, edge.metrics_port, "edge"
        )
        self.client.connect(timeout)
        for topic_filter in self.ingest.subscriptions():
            self.client.subscribe(topic_filter, qos=1)
        self.client.subscribe(self.topics.cloud_ack(self.site), qos=1)
        if self.model_sync.cloud_key:
            self.client.subscribe(self.topics.cloud_model("+"), qos=1)
        self.publish_health()
        # The site's kinds, for the cloud and the dashboard (retained: latecomers get it too)
        catalog = encode(self.catalog.to_message(self.site))
        try:
            self.client.publish(self.topics.edge(self.site, "catalog"), catalog, qos=1, retain=True)
        except PayloadTooLarge:  # hundreds of kinds over a small mqtt.max_payload: say so, run on
            log.warning("the catalogue (%d bytes) exceeds mqtt.max_payload: not published", len(catalog))
        stats = self.queue.stats()
        event(
            log,
            logging.INFO,
            "edge node started",
            node=self.name,
            broker=str(self.client.broker),
            replayed=self.counters.replayed,
            snapshot=self.snapshot_health.restore_reason,
            known_devices=len(self.validator.kinds),
            uplink_backlog_items=stats.items,
            metrics=self.metrics.url if self.metrics else "off",
        )

    def run(self, stop: threading.Event) -> None:
        """Handle messages until ``stop`` is set, then ship what is pending and go offline."""
        inbox = self.client.messages
        while not stop.is_set():
            try:
                message: Message | None = inbox.get(timeout=0.01)
            except queue.Empty:
                message = None
            while message is not None:
                self.dispatch(message)
                if len(self._unacked) >= COMMIT_BATCH:
                    break
                try:
                    message = inbox.get_nowait()
                except queue.Empty:
                    message = None
            self.tick()
        self.shutdown()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop cleanly: ship the current batch; open windows stay in the journal for the restart."""
        event(log, logging.INFO, "edge node stopping", unacked=len(self._unacked), batch=len(self._batch))
        self.release_held(everything=True)
        self.ship_batch()
        self.commit()
        self.pump()
        self.write_snapshot()
        self.client.flush(timeout)
        self.publish_health(status="offline")
        self.client.close(timeout)
        self.log_suppressed(float("inf"))
        event(log, logging.INFO, "edge node stopped", **self.summary())
        if self.metrics is not None:
            self.metrics.close()
        self.queue.close()

    def recover(self) -> int:
        """Restore the newest snapshot, then replay the journal after its watermark.

        Without a (valid) snapshot, replay from the output watermark as before: the oldest
        reading whose contribution is not in the outbox yet. With one, the snapshot holds the
        state after its watermark's reading, so the replay starts there and nothing is learned
        twice; every replayed reading was committed with its alerts, so alerts the replay
        re-derives are not sent again.
        """
        watermark = int(self.queue.get_meta("watermark") or b"0")
        loaded = self.load_snapshot()
        if loaded is not None:
            watermark = loaded.watermark
            self._snapshot_jid = loaded.watermark
            first = self.queue.first_journal_id()
            if first is not None and first > watermark + 1:
                self.counters.snapshot_replay_gap = first - watermark - 1
                self.snapshot_health.replay_gap = first - watermark - 1
            self._replaying_upto = self.queue.last_journal_id
        replayed = 0
        for journal_id, _device, payload in self.queue.journal_since(watermark):
            try:
                reading = _reading_decoder.decode(payload)
            except msgspec.MsgspecError:
                continue  # cannot happen: only validated readings are journaled
            self.validator.remember(reading)
            self.accept(reading, journal_id, self.clock.now_ms())
            replayed += 1
        self._replaying_upto = 0
        self.queue.requeue_inflight()
        self.counters.replayed = replayed
        return replayed

    # -- snapshots of the learned state (issue 16) ---------------------------------------

    def learned_state(self) -> dict[str, object]:
        """Every stateful object of detection and selection, by name: what a snapshot saves.

        The one place that knows where learned state lives. ``PerDevice`` dicts (keyed by
        device or ``(device, ...)``) are saved in device-hash shards, rewritten only when one
        of their devices changed; other parts are whole-site stages whose non-configuration
        attributes are saved (see ``pipeline.edge.snapshot``).
        """
        selector_series = getattr(self.selector, "_doors", None)
        if selector_series is None:
            selector_series = getattr(self.selector, "_series", {})
        detection = self.detection
        parts: dict[str, object] = {"detectors": PerDevice(self.detectors)}
        # The score stages build() made, by what they are (pipeline.detect: stuck, irrigation,
        # switching); their constructor arguments are configuration and come from the settings.
        for stage in detection.scorer.stages:
            if isinstance(stage, StuckWatch):
                parts["stuck.runs"] = PerDevice(stage.runs)
                parts["stuck"] = stage
            elif isinstance(stage, IrrigationZones):
                parts[_zones_part(stage)] = stage
            elif isinstance(stage, SwitchContext):
                parts["switches.devices"] = PerDevice(stage._devices)
                # derived from the catalogue: the running node's, not the snapshot's
                parts["switches"] = Stage(stage, skip=("_resolutions", "_indexes"))
        if detection.silence is not None:
            parts["silence.devices"] = PerDevice(detection.silence._devices)
            parts["silence"] = detection.silence
        return parts | {
            "alerts.series": PerDevice(self.alerts._series),
            "alerts": self.alerts,
            "model_sync.previous": PerDevice(self.model_sync.previous),
            "model_sync": self.model_sync,
            # selection, aggregation and the batch: the output side at the same watermark
            "validator.seen": PerDevice(self.validator._seen),
            # Named for the method: after a change of select.method the selector starts afresh.
            f"selector.{type(self.selector).__name__}.series": PerDevice(selector_series),
            f"selector.{type(self.selector).__name__}": Stage(self.selector, skip=("_tolerances", "scale", "_held_limit")),
            "aggregator.open": PerDevice(self.aggregator._open),
            "aggregator.event_time": PerDevice(self.aggregator._event_time),
            # Arrival times are the node clock's: a restart restamps them (see restore).
            "aggregator": Stage(self.aggregator, skip=("late", "_arrived", "_last_arrival")),
            "window_first_id": PerDevice(self._window_first_id),
            # readings journaled but held for event-time order (the snapshot's watermark is past them)
            "sequencer": self.sequencer,
            "node": {
                "batch": self._batch,
                "batch_ids": self._batch_ids,
                "batch_first_id": self._batch_first_id,
                "batch_started_ms": self._batch_started_ms,
                "next_silence_check_ms": detection._next_check_ms,
            },
        }

    def restore_learned_state(self, parts: dict[str, object]) -> None:
        """Put a snapshot's parts into the live objects, then drop what shipped since it."""
        apply_snapshot(self.learned_state(), parts)
        node = parts.get("node")
        if isinstance(node, dict):
            saved = node["__dict__"]
            self._batch, self._batch_ids = list(saved["batch"]), list(saved["batch_ids"])
            self._batch_first_id = saved["batch_first_id"]
            self._batch_started_ms = saved["batch_started_ms"]
            self.detection._next_check_ms = saved["next_silence_check_ms"]
        # The outbox is newer than the snapshot: windows closed and batches shipped after it
        # are not emitted again (closed_until and batch_upto are committed with them).
        closed = self.aggregator.closed_until
        for key in [k for k in self.aggregator._open if k[2] < closed.get((k[0], k[1]), -(2**62))]:
            del self.aggregator._open[key]
            self._window_first_id.pop(key, None)
        # Open windows count as just arrived, as a replay would stamp them: a window must not
        # look quiet (and close) only because the node was down.
        now = self.clock.now_ms()
        for device, _metric, _start in self.aggregator._open:
            self.aggregator._arrived[device] = now
        self.aggregator._last_arrival = max(self.aggregator._last_arrival, now)
        keep = [i for i, jid in enumerate(self._batch_ids) if jid > self._batch_upto]
        self._batch = [self._batch[i] for i in keep]
        self._batch_ids = [self._batch_ids[i] for i in keep]
        self._batch_first_id = self._batch_ids[0] if self._batch_ids else None

    def load_snapshot(self) -> Loaded | None:
        """The newest snapshot restored into the node, or None (cold start, reason logged)."""
        if self.snapshots is None:
            return None
        health = self.snapshot_health
        started = time.perf_counter()
        try:
            loaded = self.snapshots.load()
            if loaded is not None:
                self.restore_learned_state(loaded.parts)
        except SnapshotRefused as refused:
            self.counters.snapshots_refused[refused.reason] += 1
            health.restore_reason = refused.reason
            event(
                log,
                logging.WARNING,
                "snapshot refused, starting cold",
                reason=refused.reason,
                detail=refused.detail,
                folder=str(self.snapshots.folder),
            )
            self._reset_learned_state()
            return None
        if loaded is None:
            health.restore_reason = "none"
            return None
        health.restored, health.restore_reason = True, "restored"
        health.bytes, health.generation = loaded.bytes_total, loaded.generation
        health.written_at_ms = loaded.created_ms
        event(
            log,
            logging.INFO,
            "snapshot restored",
            generation=loaded.generation,
            watermark=loaded.watermark,
            bytes=loaded.bytes_total,
            series=len(self.detectors),
            seconds=round(time.perf_counter() - started, 3),
        )
        return loaded

    def _reset_learned_state(self) -> None:
        """Empty every per-device part (a refused snapshot may have been half applied)."""
        for part in self.learned_state().values():
            if isinstance(part, PerDevice):
                part.mapping.clear()
        self._batch, self._batch_ids, self._batch_first_id = [], [], None

    def write_snapshot(self) -> None:
        """Commit, then save the learned state as of the newest journal entry (its watermark)."""
        self._next_snapshot = time.monotonic() + self.settings.edge.snapshot_interval_s
        if self.snapshots is None:
            return
        self.commit()  # every processed reading is durable: the watermark names committed ones
        watermark = self.queue.last_journal_id
        first = self.snapshot_health.writes == 0 and not self.snapshot_health.restored
        try:
            stats = self.snapshots.write(
                self.learned_state(),
                watermark,
                None if first else self._dirty_devices,
                created_ms=self.clock.now_ms(),
            )
        except OSError as exc:
            self.counters.snapshot_write_errors += 1
            event(log, logging.WARNING, "snapshot write failed, the previous one stays", error=str(exc))
            return
        self._dirty_devices = set()
        self._snapshot_jid = watermark
        health = self.snapshot_health
        health.bytes, health.write_ms = stats.bytes_total, stats.seconds * 1000
        health.written_at_ms, health.generation = self.clock.now_ms(), stats.generation
        health.writes += 1
        self.counters.snapshots_written += 1
        log.debug("snapshot %d written: %d parts, %d bytes", stats.generation, stats.parts_written, stats.bytes_written)
        self._checkpoint()  # the journal before the new watermark may go now
        self.queue.commit()

    # -- the flow -------------------------------------------------------------------------

    def dispatch(self, message: Message) -> None:
        """Handle one message; its PUBACK waits for the next commit, behind those before it.

        Every message, the cloud's acks and models too, is acknowledged in the order it came
        (MQTT-4.6.0-2). Acknowledging a cloud ack at once, ahead of readings waiting for the
        commit, made Mosquitto 2.0.11 send its next new reading before the ones it still
        queued for this node: blocks of a device's readings arrived after later ones
        (docs/decisions/0014-acknowledge-in-arrival-order.md).
        """
        if message.topic == self.topics.cloud_ack(self.site):
            self.on_ack(message.payload)
            self._unacked_control += 1
        elif message.topic.startswith(self.topics.cloud_model("")):
            self.model_sync.on_merged(message.topic.rsplit("/", 1)[1], message.payload)
            self._unacked_control += 1
        else:
            try:
                self.handle(message.topic, message.payload, message.retain)
            except Exception:  # noqa: BLE001 - R11: a bug in one stage must not stop the node
                log.exception("handling a reading on %s failed", message.topic)
                self.counters.handler_errors += 1
        self._unacked.append(message)

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """One reading message, top to bottom (a foreign format is adapted first)."""
        if self._foreign and not topic.startswith(self._native_prefix):
            self.handle_foreign(topic, payload, retained)
            return
        now = self.clock.now_ms()
        self.counters.received += 1
        verdict = self.validator.validate_one(topic, payload, now)
        if isinstance(verdict, DeadLetter):
            self.refuse(verdict)
            return
        journal_id = self.queue.append_journal(verdict.device, payload)
        self.counters.accepted += 1
        self.counters.json_bytes_in += len(payload)
        self.accept(verdict, journal_id, now)

    def handle_foreign(self, topic: str, payload: bytes, retained: bool) -> None:
        """A message in an [[ingest]] format: adapt, then validate and journal as native.

        Each reading the adapter makes counts as received once, and so does each refusal
        and each message ignored by design (``dropped.ingest_<why>``), which keeps
        received = accepted + dead-lettered + duplicates + dropped. The journal holds the
        readings in edgepipe's JSON, so recovery replays them like native ones.
        """
        now = self.clock.now_ms()
        adapter = self.ingest.route(topic)
        if adapter is None:
            self.counters.received += 1
            self.refuse(dead_letter(self.site, topic, payload, Reason.NO_INGEST_ROUTE, "no [[ingest]] entry matches", now))
            return
        decoded = adapter.decode_one(topic, payload, now, retained)
        if decoded.ignored:
            self.counters.received += 1
            self.counters.dropped[f"ingest_{decoded.ignored}"] += 1
            return
        fmt = adapter.format
        self.counters.ingest_extra_fields += decoded.extra_fields
        for refused in decoded.refused:
            self.counters.received += 1
            self.refuse(dead_letter(self.site, topic, refused.raw, refused.reason, f"{fmt}: {refused.detail}", now))
        for i, reading in enumerate(decoded.readings):
            self.counters.received += 1
            self.counters.ingest_readings[fmt] += 1
            native = encode(reading)
            verdict = self.validator.validate_adapted(reading, len(native), now)
            if isinstance(verdict, ProtocolError):
                # the dead letter names what arrived (topic, bytes, hash), not our re-encoding
                raw = decoded.parts.get(i, payload)
                self.refuse(dead_letter(self.site, topic, raw, verdict.reason, f"{fmt}: {verdict.detail}", now))
                continue
            journal_id = self.queue.append_journal(verdict.device, native)
            self.counters.accepted += 1
            self.counters.json_bytes_in += len(native)
            self.accept(verdict, journal_id, now)

    def accept(self, reading: Reading, journal_id: int, now: int) -> None:
        """Process a journaled reading now, or, for a kind a cross-device stage relates, once
        the event-time watermark has passed it (in ``(ts, device)`` order; late: now)."""
        sequencer = self.sequencer
        if sequencer.hold(reading.kind):
            self._last_held_ms = now
            if sequencer.add_one(reading.device, reading.ts, journal_id, reading):
                if sequencer.due():
                    self.release_held()
                return
        self.process(reading, journal_id)

    def release_held(self, everything: bool = False) -> None:
        """Process the held readings the watermark has passed (``everything``: all of them)."""
        for _, _, journal_id, reading in self.sequencer.release(everything):
            try:
                self.process(reading, journal_id)
            except Exception:  # noqa: BLE001 - R11: as in dispatch, per reading
                log.exception("processing a held reading of %s failed", reading.device)
                self.counters.handler_errors += 1

    def process(self, reading: Reading, journal_id: int) -> None:
        """Detect, aggregate and select every metric of an accepted reading."""
        now = self.clock.now_ms()
        detect = self.settings.edge.detect
        self._processed_jid = journal_id
        self._dirty_devices.add(reading.device)
        if detect:
            points, alerts = self.detection.observe(reading)
            for alert in alerts:
                self.raise_alert(alert)
        else:
            points = [
                (Point(reading.device, reading.kind, metric, reading.ts, reading.seq, value), Cause.ANOMALY, None)
                for metric, value in reading.metrics.items()
            ]
        for point, _, _ in points:
            metric = point.metric
            self.points_in[metric] += 1
            if detect:
                self.model_sync.learn_one(reading.device, reading.kind, metric, point.value, reading.ts)
            if self.aggregator.add_one(point, now):
                window = (reading.device, metric, self.aggregator.window_start(reading.ts))
                self._window_first_id.setdefault(window, journal_id)
            elif journal_id > self._replaying_upto or not self._replaying_upto:
                self.counters.late += 1
            for selected in self.selector.select_one(point):
                if journal_id > self._batch_upto:  # else a replay: it shipped before the stop
                    self._add_to_batch(selected, journal_id)

    def raise_alert(self, alert: Alert) -> None:
        """Alerts go through the outbox at the highest priority: first out, durable, acknowledged."""
        self._dirty_devices.add(alert.data.device)
        if self._replaying_upto and self._processed_jid <= self._replaying_upto:
            # Committed with its reading before the stop: in the outbox (or shipped) already.
            self.counters.alerts_replay_suppressed += 1
            return
        self._put(
            Priority.ALERT,
            self.topics.alert(self.site, alert.data.device),
            lambda seq: encode(msgspec.structs.replace(alert, seq=seq)),
        )
        self.counters.alerts[alert.data.state] += 1
        self._dirty = True

    def _add_to_batch(self, point: Point, journal_id: int) -> None:
        if not self._batch:
            self._batch_started_ms = self.clock.now_ms()
            self._batch_first_id = journal_id
        self._batch.append(point)
        self._batch_ids.append(journal_id)
        self.points_selected[point.metric] += 1
        if len(self._batch) >= self.settings.edge.batch_max_readings:
            self.ship_batch()

    def _put(self, priority: Priority, topic: str, make_payload: Callable[[int], bytes]) -> int:
        """Queue an uplink message, counting its bytes by priority (health: ``uplink_bytes.*``)."""

        def counted(seq: int) -> bytes:
            payload = make_payload(seq)
            self.counters.uplink_bytes[priority.name.lower()] += len(payload)
            return payload

        return self.queue.put(priority, topic, counted)

    def refuse(self, letter: DeadLetter) -> None:
        if letter.reason == Reason.DUPLICATE:
            self.counters.duplicates += 1
            return
        self.counters.dead_letters[letter.reason] += 1
        if self._dead_letter_warnings.allow(letter.reason, time.monotonic()):
            event(
                log,
                logging.WARNING,
                "dead letter",
                reason=letter.reason,
                topic=letter.topic,
                detail=letter.detail,
                size=letter.size,
            )
        try:
            self.client.publish(self.topics.deadletter(self.site), encode(letter), qos=0)
        except PayloadTooLarge:
            self.counters.dead_letters_unsent += 1

    def request_drain(self) -> None:
        """Ask the node (from any thread) to close every window and ship every batch now."""
        self._drained.clear()
        self._drain_requested.set()

    def wait_drained(self, timeout: float) -> bool:
        """Wait (from another thread) until the node has done the drain last requested."""
        return self._drained.wait(timeout)

    def tick(self) -> None:
        """Time-driven work: commit, ship due batches and windows, pump the uplink, health.

        Nothing here decides an alert: dropouts are judged on event time in ``process``. The
        wall clock only releases the readings held for event-time order once the site has
        been quiet for ``aggregate.idle_s`` (nothing newer is coming to release them).
        """
        now = self.clock.now_ms()
        if self._drain_requested.is_set():
            self._drain_requested.clear()
            self.release_held(everything=True)
            self.ship_batch()
            self.flush_windows(now, everything=True)
            self._drained.set()
        if self._batch and now - self._batch_started_ms >= self.settings.edge.batch_interval_s * 1000:
            self.ship_batch()
        if now >= self._next_flush_ms:
            if len(self.sequencer) and now - self._last_held_ms >= self._sequencer_idle_ms:
                self.release_held(everything=True)  # a quiet site: nothing newer will release them
            self.flush_windows(now)
            self._next_flush_ms = now + 1000
            self.selector.scale = self.governor.update_one(self.client.messages.qsize(), now)
        interval_s = self.settings.uplink.commit_interval_ms / 1000
        if (self._unacked or self._dirty) and time.monotonic() - self._last_commit >= interval_s:
            self.commit()
        if self.model_sync.due(now):
            self.ship_model_deltas(now)
        if self.snapshots is not None and time.monotonic() >= self._next_snapshot:
            self.write_snapshot()
        self.pump()
        if now >= self._next_health_ms:
            self.publish_health()
        wall = time.monotonic()
        if wall >= self._next_log_check:
            self._next_log_check = wall + 1.0
            self.log_suppressed(wall)
            if wall >= self._next_summary:
                self._next_summary = wall + self.settings.log.summary_interval_s
                event(log, logging.INFO, "summary", **self.summary())

    def commit(self) -> None:
        """Make journal and outbox durable, then acknowledge the devices' messages."""
        self.queue.commit()
        self._dirty = False
        self._last_commit = time.monotonic()
        for message in self._unacked:
            self.client.ack(message)
        self._rate.add(len(self._unacked) - self._unacked_control, self._last_commit)
        self._unacked = []
        self._unacked_control = 0

    def ship_batch(self) -> None:
        if not self._batch:
            return
        readings = _group_into_readings(self._batch)
        self._put(
            Priority.BATCH,
            self.topics.edge(self.site, "batch"),
            lambda seq: encode_batch(Batch(SCHEMA_VERSION, self.site, seq, readings), self.codec),
        )
        self.counters.readings_shipped += len(self._batch)
        self.counters.batches_shipped += 1
        self._batch_upto = max(self._batch_upto, self._batch_ids[-1] if self._batch_ids else 0)
        self.queue.set_meta(BATCH_UPTO_META, str(self._batch_upto).encode())
        self._batch = []
        self._batch_ids = []
        self._batch_first_id = None
        self._checkpoint()

    def flush_windows(self, now: int, everything: bool = False) -> None:
        aggregates = self.aggregator.flush(now, everything)
        if not aggregates:
            return
        topic = self.topics.edge(self.site, "agg")
        codec = self.settings.uplink.aggregate_codec
        per_message = AGGREGATES_PER_MESSAGE[codec]
        for i in range(0, len(aggregates), per_message):
            chunk = aggregates[i : i + per_message]
            self._put(Priority.AGGREGATE, topic, _aggregate_payload(self.site, chunk, codec, self.catalog.resolutions))
        for a in aggregates:
            self._window_first_id.pop((a.device, a.metric, a.start), None)
            self._dirty_devices.add(a.device)
        self.counters.aggregates += len(aggregates)
        self._save_closed_until()
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Record the oldest journal entry whose contribution is not yet in the outbox."""
        firsts = list(self._window_first_id.values())
        if self._batch_first_id is not None:
            firsts.append(self._batch_first_id)
        watermark = min(firsts) - 1 if firsts else self.queue.last_journal_id
        self.queue.set_meta("watermark", str(watermark).encode())
        keep_from = watermark
        h = self.snapshot_health
        if self.snapshots is not None and (h.restored or h.writes):  # none yet: a restart is cold anyway
            # Keep the replay after the newest snapshot too, up to snapshot_journal_mb: past it
            # the oldest go, and a restore from that snapshot counts them as its replay gap.
            keep_from = min(watermark, self._snapshot_jid)
            budget_bytes = self.settings.edge.snapshot_journal_mb * 1024 * 1024
            if keep_from < watermark and self.queue.stats().journal_bytes > budget_bytes:
                keep_from = watermark
        self.queue.trim_journal(keep_from)
        self._dirty = True

    # -- model sync (issue 5): kind-level deltas up, the cloud's merged model down ----------

    def _prior(self, kind: str, metric: str) -> DetectorPrior | None:
        """The kind's merged model for a new detector (it warm-starts from it), if there is one."""
        prior = self.model_sync.prior(kind, metric)
        if prior is not None:
            self.model_sync.warm_started += 1
        return prior

    def ship_model_deltas(self, now: int) -> None:
        """What was learned per kind since the last delta: signed, into the outbox (MODEL)."""
        topic = self.topics.edge(self.site, "model")
        for kind, metrics in self.model_sync.take_deltas(now).items():
            self._put(Priority.MODEL, topic, partial(self._model_payload, kind, metrics, now))
            self._dirty = True

    def _model_payload(self, kind: str, metrics: dict[str, MetricStats], now: int, seq: int) -> bytes:
        return encode_model(self.model_sync.delta(kind, metrics, seq, now))

    # -- uplink -----------------------------------------------------------------------------

    def pump(self) -> None:
        """Send queued messages, highest priority first, keeping at most max_inflight."""
        if not self.client.connected:
            return
        if self.client.stats.disconnects != self._seen_disconnects:
            # A reconnect: whatever was in flight may be lost with the old connection.
            self._seen_disconnects = self.client.stats.disconnects
            self.counters.uplink_requeued += self.queue.requeue_inflight()
            self._inflight.clear()
            self._dirty = True
        now = self.clock.now_ms()
        self.requeue_timed_out(now)
        room = self.settings.uplink.max_inflight - len(self._inflight)
        # Alerts never wait for the window: while the cloud is away, unacknowledged batches
        # fill it until the ack timeout, and an alert must still leave at once (R9).
        items = self.queue.next_batch(max(room, 0) + ALERT_BURST)
        items = [it for k, it in enumerate(items) if k < room or it.priority == Priority.ALERT]
        for item in items:
            try:
                self.client.publish(item.topic, item.payload, qos=1)
            except PayloadTooLarge:
                self.queue.drop([item.seq], "too_large")  # cannot ever be sent: drop it, counted
                self.counters.uplink_too_large += 1
                continue
            self._inflight[item.seq] = now
            self.counters.uplink_published += 1
        if items:
            self.queue.mark_sent(item.seq for item in items)
            self._dirty = True

    def requeue_timed_out(self, now: int) -> None:
        """Put back what waited longer than the ack timeout; the timeout backs off meanwhile."""
        timeout_ms = self._ack_timeout_ms
        if not self._inflight or now - min(self._inflight.values()) < timeout_ms:
            return
        requeued = self.queue.requeue_inflight(older_than_ms=timeout_ms)
        if not requeued:
            # The queue stamps an item when it is marked sent, a little after ``_inflight`` did:
            # by its clock it is not old enough yet. Forgetting it here left it in flight for
            # good (never resent, never timed out again: seen on a loaded machine). Twice the
            # timeout on, an entry the queue still does not requeue is not in flight there.
            self._inflight = {s: t for s, t in self._inflight.items() if now - t < 2 * timeout_ms}
            return
        self.counters.uplink_requeued += requeued
        self._inflight = {s: t for s, t in self._inflight.items() if now - t < timeout_ms}
        if self._uplink_down_since is None:
            self._uplink_down_since = time.monotonic()
            event(
                log,
                logging.WARNING,
                "uplink: no ack from the cloud",
                waited_s=timeout_ms / 1000,
                requeued=requeued,
                uplink_backlog_items=self.queue.stats().items,
            )
        self._dirty = True
        ceiling = int(self.settings.uplink.ack_timeout_s * 1000 * ACK_BACKOFF_MAX)
        self._ack_timeout_ms = min(2 * timeout_ms, ceiling)

    def on_ack(self, payload: bytes) -> None:
        try:
            ack = decode(payload, Ack, max_bytes=65536)
            seqs = seqs_of(ack.ranges) if ack.ranges else [ack.seq]
        except (ProtocolError, ValueError) as exc:
            log.warning("ignored a bad ack: %s", exc)
            return
        if ack.site != self.site:
            return
        self.counters.uplink_acked += self.queue.ack(seqs)
        self._ack_timeout_ms = int(self.settings.uplink.ack_timeout_s * 1000)
        if self._uplink_down_since is not None:
            event(
                log,
                logging.INFO,
                "uplink: the cloud acknowledges again",
                outage_s=round(time.monotonic() - self._uplink_down_since, 1),
            )
            self._uplink_down_since = None
        self._dirty = True
        for seq in seqs:
            self._inflight.pop(seq, None)
        self.counters.acked_seq = max(self.counters.acked_seq, ack.seq)

    # -- health -----------------------------------------------------------------------------

    def gauges(self, stats: UplinkStats | None = None) -> dict[str, float]:
        stats = stats or self.queue.stats()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        gauges = {
            "readings_per_s": self._rate.per_second(time.monotonic()),
            "queue_items": float(stats.items),
            "queue_bytes": float(stats.bytes),
            "queue_oldest_age_s": stats.oldest_age_ms / 1000,
            "queue_inflight": float(stats.inflight),
            "queue_dropped": float(sum(stats.dropped.values())),
            "journal_items": float(stats.journal_items),
            "backlog": float(self.client.messages.qsize()),
            "selection_scale": self.selector.scale,
            "load_shedding": 1.0 if self.governor.shedding else 0.0,
            "open_windows": float(self.aggregator.open_windows),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": _rss_mb(),
            "connected": 1.0 if self.client.connected else 0.0,
            "paho_thread_alive": 1.0 if self.client.network_thread_alive else 0.0,
            "model_deltas_shipped": float(self.model_sync.deltas_shipped),
            "models_warm_started": float(self.model_sync.warm_started - self.detection.scorer.warm_starts_skipped),
            "models_warm_start_skipped": float(self.detection.scorer.warm_starts_skipped),
            "models_warm_started_builtin": float(self.model_sync.builtin_used),
            **self._snapshot_gauges(),
        }
        for metric, n in dict(self.points_in).items():  # a copy: /metrics reads from its thread
            gauges[f"selection_ratio.{metric}"] = self.points_selected[metric] / n
        return gauges

    def _snapshot_gauges(self) -> dict[str, float]:
        h = self.snapshot_health
        age_s = (self.clock.now_ms() - h.written_at_ms) / 1000 if h.written_at_ms else -1.0
        return {
            "snapshot_bytes": float(h.bytes),
            "snapshot_write_ms": round(h.write_ms, 3),
            "snapshot_age_s": round(age_s, 3),
            "snapshot_restored": 1.0 if h.restored else 0.0,
            "snapshot_generation": float(h.generation),
            f"snapshot_restore.{h.restore_reason}": 1.0,
        }

    def health(self, status: str = "online") -> Health:
        """Counters and gauges now; safe from another thread (the /metrics scrape)."""
        stats = self.queue.stats()
        return self.counters.health(
            self.site, self.name, self.clock.now_ms(), status, self.gauges(stats), stats
        )

    def publish_health(self, status: str = "online") -> None:
        health = self.health(status)
        self.client.publish(self._health_topic, encode(health), qos=1, retain=True)
        self._next_health_ms = health.ts + int(self.settings.edge.health_interval_s * 1000)

    def summary(self) -> dict[str, object]:
        """What the summary and stop lines report: traffic, refusals, alerts, the uplink."""
        c, stats = self.counters, self.queue.stats()
        return {
            "received": c.received,
            "accepted": c.accepted,
            "duplicates": c.duplicates,
            "dead_letters": c.dead_lettered,
            "dead_letters_by_reason": dict(c.dead_letters),
            "alerts": dict(c.alerts),
            "readings_per_s": round(self._rate.per_second(time.monotonic()), 1),
            "uplink_backlog_items": stats.items,
            "uplink_backlog_bytes": stats.bytes,
            "uplink_inflight": stats.inflight,
            "uplink_acked": c.uplink_acked,
            "connected": self.client.connected,
        }

    def log_suppressed(self, wall: float) -> None:
        """One line per reason whose dead letters were too many to log each, once a minute."""
        for reason, n in self._dead_letter_warnings.take_suppressed(wall).items():
            event(log, logging.WARNING, "dead letters not logged", reason=reason, suppressed=n, window_s=60)

    # -- durable aggregator state -------------------------------------------------------------

    def _load_closed_until(self) -> dict[tuple[str, str], int]:
        raw = self.queue.get_meta("closed_until")
        if not raw:
            return {}
        return {(device, metric): end for device, metric, end in _closed_decoder.decode(raw)}

    def _save_closed_until(self) -> None:
        rows = [(d, m, end) for (d, m), end in self.aggregator.closed_until.items()]
        self.queue.set_meta("closed_until", _closed_encoder.encode(rows))


def _zones_part(zones: IrrigationZones) -> str:
    """The snapshot part of one link's zones: ``zones`` for the built-in link (the name it has
    always had), ``zones.SOURCE>TARGET`` for a configured one, so that each link restores its own."""
    link = (zones.valve_kind, zones.flow_metric), (zones.probe_kind, zones.moisture_metric)
    if any(link == (d.source, d.target) for d in DEFAULT_LINKS):
        return "zones"
    return f"zones.{zones.valve_kind}.{zones.flow_metric}>{zones.probe_kind}.{zones.moisture_metric}"


def _aggregate_payload(
    site: str, chunk: list[Aggregate], codec: str, resolutions: Mapping[tuple[str, str], float]
) -> Callable[[int], bytes]:
    if codec == "json":
        return lambda seq: encode(AggregateBatch(SCHEMA_VERSION, site, seq, chunk))
    return lambda seq: encode_aggregates(AggregateBatch(SCHEMA_VERSION, site, seq, chunk), resolutions)


def _group_into_readings(points: list[Point]) -> list[Reading]:
    """Selected points back into readings: one per (device, ts), with the metrics shipped."""
    grouped: dict[tuple[str, int], tuple[Point, dict[str, float]]] = {}
    for p in points:
        entry = grouped.get((p.device, p.ts))
        if entry is None:
            grouped[(p.device, p.ts)] = (p, {p.metric: p.value})
        else:
            entry[1][p.metric] = p.value
    return [
        Reading(v=SCHEMA_VERSION, device=p.device, kind=p.kind, ts=p.ts, seq=p.seq, metrics=metrics)
        for p, metrics in grouped.values()
    ]


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RecentRate:
    """Events per second over the last ``horizon_s`` seconds, as of the ``now`` it is read at.

    Why trim on read too: trimmed only when events arrive, the rate froze at its last value
    once traffic stopped (a site showed 504 readings/s 95 s after its devices went quiet).
    Read with the time of reading, it falls as the window empties and is 0 after the horizon.
    It is the count in the horizon over the horizon, so a burst counts whole. A lock, as
    /metrics reads it from its own thread (``add`` runs once per commit, not per reading).

    >>> rate = RecentRate(horizon_s=5.0)
    >>> for at in (0.0, 1.0, 2.0):
    ...     rate.add(100, at)
    >>> rate.per_second(2.0), rate.per_second(5.5), rate.per_second(7.0)
    (60.0, 40.0, 0.0)
    """

    def __init__(self, horizon_s: float = 5.0) -> None:
        self.horizon_s = horizon_s
        self._events: deque[tuple[float, int]] = deque()
        self._count = 0  # sum of the events kept
        self._lock = threading.Lock()

    def add(self, n: int, at: float) -> None:
        with self._lock:
            self._events.append((at, n))
            self._count += n
            self._trim(at)

    def per_second(self, now: float) -> float:
        """Events in ``(now - horizon_s, now]``, per second."""
        with self._lock:
            self._trim(now)
            return self._count / self.horizon_s

    def _trim(self, now: float) -> None:
        cutoff = now - self.horizon_s
        while self._events and self._events[0][0] <= cutoff:
            self._count -= self._events.popleft()[1]
