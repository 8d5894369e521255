"""``edgepipe analyst``: the fleet analyst as a process, between the broker and the store.

::

    {site}/edge/agg ────────┐                  (sites of this shard only)
    {site}/alerts/+ ────────┤
    {site}/edge/health ─────┼─► decode (bad: counted, logged with the reason) ─► FleetAnalyst
    {site}/edge/escalation ─┘   (uncertain edge windows: a second opinion)         │
                                        {site}/alerts/{device} ◄── publish ────────┘ (source "cloud", QoS 1)

The analyst subscribes without a shared group: every analyst receives every site and keeps
the sites of its shard (``shard_of``: a stable hash of the site id), so N analysts with
``--shard 0/N`` .. ``N-1/N`` split a fleet with no overlap and no coordination. It never
acknowledges anything to the edges (the cloud workers do) and writes nothing to the store:
the workers store its alerts as they store the edge's. On start it replays the store's
recent aggregates and alerts of its sites (``restore``) with its output muted, so a restart
resumes with warm detectors and the alerts it had open, and raises no storm. With
``analyst.metrics_port`` it serves Prometheus ``/metrics`` (``figures``, read at each scrape)
from before the replay, so an operator sees the replay's progress.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable

from pipeline.analyst.fleet import MODEL_VERSION, FleetAnalyst, default_horizon, default_peers
from pipeline.analyst.horizon import HorizonDetector
from pipeline.analyst.peers import PROFILES, PeerDetector, Profile
from pipeline.cloud.store.base import Store
from pipeline.config import AlertSettings, AnalystSettings, Settings, parse_shard
from pipeline.detect.alerts import AlertPolicy
from pipeline.errors import ProtocolError
from pipeline.logs import WarningBudget, event
from pipeline.metrics import ANALYST, MetricsServer, Snapshot, serve_metrics
from pipeline.mqtt import Message, MqttClient
from pipeline.protocol import Alert, Health, TopicKind, Topics, decode, encode
from pipeline.protocol.agg_codec import decode_aggregate_message
from pipeline.protocol.messages import Escalation
from pipeline.protocol.reasons import Reason

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
POLL_S = 0.05
STATE_FIGURES_S = 5.0  # how often the loop refreshes the gauges of its state for /metrics (they walk every series)
WARNINGS_PER_MINUTE = 10


def shard_of(site: str, shards: int) -> int:
    """The shard that owns ``site``: CRC-32 of its id, stable across processes and versions.

    >>> [shard_of(s, 2) for s in ("farm", "retail", "city")]
    [1, 1, 0]
    """
    return zlib.crc32(site.encode()) % shards


def analyst_from_settings(a: AnalystSettings, alert: AlertSettings) -> FleetAnalyst:
    """The ``FleetAnalyst`` the ``analyst`` and ``alert`` settings describe (the role's and the bench's)."""

    def peers(kind: str, metric: str) -> PeerDetector:
        base = default_peers(kind, metric)
        return PeerDetector(PROFILES.get((kind, metric), Profile()), step=base.step, threshold_sd=a.peer_threshold_sd)

    def horizon(kind: str, metric: str) -> HorizonDetector:
        return HorizonDetector(step=default_horizon(kind, metric).step, threshold_sd=a.horizon_threshold_sd)

    return FleetAnalyst(
        lambda site: AlertPolicy.from_settings(site, alert, model_version=MODEL_VERSION),
        delay_windows=a.delay_windows,
        suppress_ms=round(a.suppress_s * 1000),
        peers=peers if a.peers else None,
        horizon=horizon if a.horizon else None,
    )


class AnalystRole:
    """Subscribes, decodes, runs the ``FleetAnalyst`` of this shard's sites, publishes alerts."""

    def __init__(self, settings: Settings, store: Store | None = None, now_ms: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.topics = Topics(settings.mqtt.topic_root)
        self.shard, self.shards = parse_shard(settings.analyst.shard)
        self.analyst = analyst_from_settings(settings.analyst, settings.alert)
        self.name = settings.analyst.client_id
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.bad: Counter[str] = Counter()  # refused payloads by reason
        self.other_shard = 0  # messages of sites another analyst owns
        self.published = 0
        self.restored = 0  # aggregates replayed from the store on start
        self.restore_s = 0.0  # how long the replay took (so far, while it runs)
        self._restore_started: float | None = None  # monotonic, while the replay runs
        self.aggregates_by_site: Counter[str] = Counter()  # live aggregates of this shard's sites
        self.published_by_site: Counter[str] = Counter()
        self.published_by: Counter[tuple[str, str, str]] = Counter()  # (detector, severity, state)
        self.newest_end_ms: dict[str, int] = {}  # per site: the end of its newest aggregate (event time)
        self.metrics: MetricsServer | None = None  # /metrics, from start() when analyst.metrics_port
        # Gauges of the detectors' state, computed by the loop's thread (walking the analyst's
        # maps from the scrape's thread could meet them mid-change) and replaced whole.
        self.state_figures: dict[str, float] = {}
        self._next_state_figures = 0.0
        self._warnings = WarningBudget(WARNINGS_PER_MINUTE)
        self._next_summary = time.monotonic() + settings.log.summary_interval_s
        m = settings.mqtt
        self.client = MqttClient(
            m.url,
            client_id=self.name,
            protocol=m.protocol_for("cloud"),
            keepalive=m.keepalive,
            tls_ca=m.tls_ca,
            max_payload=m.max_payload,
        )

    def owns(self, site: str) -> bool:
        return shard_of(site, self.shards) == self.shard

    def subscriptions(self) -> list[str]:
        root = self.topics.root
        return [f"{root}/+/edge/agg", self.topics.alerts("+"), f"{root}/+/edge/health", f"{root}/+/edge/escalation"]

    # --- lifecycle ---------------------------------------------------------------------------

    def restore(self) -> int:
        """Replay the store's last ``analyst.restore_hours`` of this shard's sites, output muted.

        Edge alerts first (what the edge had, so the replay holds the same devices), then the
        aggregates in window order; the alerts the replay computes are dropped: they were
        published before the restart, and their policy state (open alerts) carries on.
        """
        hours = self.settings.analyst.restore_hours
        if self.store is None or hours <= 0:
            return 0
        end = self._now_ms()
        start = end - round(hours * HOUR_MS)
        began = self._restore_started = time.monotonic()
        try:
            for site in sorted(s for s in self.store.sites() if self.owns(s)):
                for data in sorted(self.store.query_alerts(site, start, limit=100_000), key=lambda d: (d.reading_ts, d.state != "raised")):
                    self.analyst.add_alert(data)
                aggs = self.store.query_site_aggregates(site, start, end)
                self.analyst.add_aggregates(aggs)
                if aggs:
                    self._saw(site, max(a.end for a in aggs))
                self.restored += len(aggs)
        finally:
            self.restore_s = time.monotonic() - began
            self._restore_started = None
        return self.restored

    def start(self, timeout: float = 10.0) -> None:
        """Serve /metrics (if set), replay the store, connect and subscribe.

        A metrics port in use is a ``ConfigError`` naming ``analyst.metrics_port`` (exit 2).
        """
        a = self.settings.analyst
        info = {"analyst": self.name, "shard": f"{self.shard}/{self.shards}"}
        self.metrics = serve_metrics(self.figures, ANALYST, info, a.metrics_host, a.metrics_port, "analyst")
        try:
            restored = self.restore()
            self.client.connect(timeout)
            for topic_filter in self.subscriptions():
                self.client.subscribe(topic_filter, qos=1)
        except BaseException:
            self._close_metrics()
            raise
        self._refresh_state_figures()
        event(
            log,
            logging.INFO,
            "analyst started",
            analyst=self.name,
            shard=f"{self.shard}/{self.shards}",
            broker=str(self.client.broker),
            store=type(self.store).__name__ if self.store is not None else "none",
            restored_aggregates=restored,
            restore_s=round(self.restore_s, 3),
            metrics=self.metrics.url if self.metrics else "off",
        )

    def run(self, stop: threading.Event) -> None:
        """Handle messages until ``stop``; a summary every ``log.summary_interval_s``."""
        try:
            while not stop.is_set():
                try:
                    message = self.client.messages.get(timeout=POLL_S)
                except queue.Empty:
                    message = None
                if message is not None:
                    self.handle(message)
                if time.monotonic() >= self._next_state_figures:
                    self._refresh_state_figures()
                if time.monotonic() >= self._next_summary:
                    self._next_summary = time.monotonic() + self.settings.log.summary_interval_s
                    event(log, logging.INFO, "summary", **self.summary())
        finally:
            self.client.flush(2.0)
            self.client.close()
            self._close_metrics()
            event(log, logging.INFO, "analyst stopped", **self.summary())

    def _close_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    # --- the flow ------------------------------------------------------------------------------

    def handle(self, message: Message) -> list[Alert]:
        """Decode one message, feed the analyst, publish what it raises or clears."""
        try:
            alerts = self._handle(message)
        except ProtocolError as exc:
            self._refuse(message.topic, exc.reason, exc.detail)
            return []
        except Exception as exc:  # a bug must not end the loop: counted, logged, message dropped
            log.exception("analyst failed on a message from %s", message.topic)
            self._refuse(message.topic, Reason.HANDLER_ERROR, repr(exc))
            return []
        for alert in alerts:
            self.client.publish(self.topics.alert(alert.data.site, alert.data.device), encode(alert), qos=1)
            self.published += 1
            self.published_by_site[alert.data.site] += 1
            detector = alert.data.reason.partition(":")[0]  # the cause is the reason's first word
            self.published_by[(detector, alert.data.severity, alert.data.state)] += 1
        return alerts

    def _handle(self, message: Message) -> list[Alert]:
        topic = self.topics.parse(message.topic)
        if not self.owns(topic.site):
            self.other_shard += 1
            return []
        if topic.kind is TopicKind.EDGE_AGG:
            batch = decode_aggregate_message(message.payload)
            if batch.site != topic.site or any(a.site != topic.site for a in batch.aggregates):
                raise ProtocolError(Reason.TOPIC_MISMATCH, f"aggregates of another site on {message.topic}")
            self.aggregates_by_site[topic.site] += len(batch.aggregates)
            if batch.aggregates:
                self._saw(topic.site, max(a.end for a in batch.aggregates))
            return self.analyst.add_aggregates(batch.aggregates)
        if topic.kind is TopicKind.ALERT:
            alert = decode(message.payload, Alert)
            if alert.data.site != topic.site:
                raise ProtocolError(Reason.TOPIC_MISMATCH, f"alert of site {alert.data.site!r} on {message.topic}")
            self.analyst.add_alert(alert.data)
        elif topic.kind is TopicKind.EDGE_HEALTH:
            self.analyst.add_health(decode(message.payload, Health))
        elif topic.kind is TopicKind.EDGE_ESCALATION:
            escalation = decode(message.payload, Escalation)
            if escalation.site != topic.site:
                raise ProtocolError(Reason.TOPIC_MISMATCH, f"escalation of site {escalation.site!r} on {message.topic}")
            self.analyst.add_escalation(escalation)
        return []

    def _saw(self, site: str, end_ms: int) -> None:
        if end_ms > self.newest_end_ms.get(site, end_ms - 1):
            self.newest_end_ms[site] = end_ms

    def _refuse(self, topic: str, reason: Reason, detail: str) -> None:
        self.bad[str(reason)] += 1
        if self._warnings.allow(str(reason), time.monotonic()):
            event(log, logging.WARNING, "payload refused", topic=topic, reason=str(reason), detail=detail[:200])

    def _refresh_state_figures(self) -> None:
        self._next_state_figures = time.monotonic() + STATE_FIGURES_S
        self.state_figures = {
            **{f"devices.{site}": n for site, n in self.analyst.devices_by_site().items()},
            "series": self.analyst.series,
            "pending_windows": self.analyst.pending_windows,
            "open_alerts": self.analyst.open_alerts,
        }

    def figures(self) -> Snapshot:
        """Counters and gauges now, for /metrics; safe from its thread (counters are copied in
        one step; the state's gauges are the loop's, at most ``STATE_FIGURES_S`` old)."""
        c = self.analyst.counters
        now_ms = self._now_ms()
        started = self._restore_started
        counters: dict[str, float] = {
            **{f"aggregates.{site}": n for site, n in dict(self.aggregates_by_site).items()},
            **{f"alerts_published.{site}": n for site, n in dict(self.published_by_site).items()},
            **{f"alerts.{d}.{sev}.{state}": n for (d, sev, state), n in dict(self.published_by).items()},
            **{f"refused.{reason}": n for reason, n in dict(self.bad).items()},
            "restore_aggregates": self.restored,
            "windows": c.windows,
            "late": c.late,
            "suppressed.edge_alert": c.held_edge,
            "suppressed.site_offline": c.held_offline,
            "edge_alerts": c.edge_alerts,
            "escalations": c.escalations,
            "escalations_raised": c.escalations_raised,
            "other_shard": self.other_shard,
        }
        gauges: dict[str, float] = {
            **self.state_figures,
            **{f"lag_seconds.{site}": (now_ms - end) / 1000 for site, end in dict(self.newest_end_ms).items()},
            "restoring": 0.0 if started is None else 1.0,
            "restore_seconds": self.restore_s if started is None else time.monotonic() - started,
            "backlog": self.client.messages.qsize(),
            "connected": float(self.client.connected),
        }
        return Snapshot(counters, gauges)

    def summary(self) -> dict[str, object]:
        c = self.analyst.counters
        return {
            "aggregates": c.aggregates,
            "windows": c.windows,
            "late": c.late,
            "held": c.held,
            "edge_alerts": c.edge_alerts,
            "raised": c.raised,
            "cleared": c.cleared,
            "published": self.published,
            "open_alerts": self.analyst.open_alerts,
            "series": self.analyst.series,
            "other_shard": self.other_shard,
            "refused": dict(self.bad),
            "restored": self.restored,
        }
