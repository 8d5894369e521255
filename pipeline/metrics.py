"""Prometheus ``/metrics`` for the edge node, the cloud worker and the fleet analyst, by scrape.

Why from figures read at scrape time: the edge's and the worker's health message already
holds every counter and gauge an operator needs (the analyst builds the same two maps from
its counters), and a collector that turns one snapshot into metric families at scrape time
costs the hot path nothing (no prometheus objects are incremented per reading) and cannot
drift from what health publishes. Names follow Prometheus conventions: counters end in
``_total``, a key ``name.label`` becomes one family with a label
(``dead_letters.bad_json`` -> ``edgepipe_dead_letters_total{reason="bad_json"}``; a family
with several labels takes as many dotted parts), and a key no table names is still exposed
under a derived name. docs/operations.md lists them.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.errors import ConfigError

Kind = Literal["counter", "gauge"]
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


class Figures(Protocol):
    """What a role exposes: its counters and gauges by key (a :class:`Health` is one)."""

    @property
    def counters(self) -> Mapping[str, float]: ...

    @property
    def gauges(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Snapshot:
    """A role's figures at one instant, for a role with no health message of its own (the analyst)."""

    counters: Mapping[str, float]
    gauges: Mapping[str, float]


@dataclass(frozen=True)
class Family:
    """How one key (or ``key.*`` group) is exposed."""

    name: str  # without the ``_total`` of a counter
    kind: Kind
    help: str
    # for a ``key.*`` group: the labels the dotted parts after the key go in, in order
    # (the last label takes whatever is left, dots included)
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exposition:
    """The families of one role: health keys -> families; ``skip`` are sums or process data."""

    prefix: str
    families: Mapping[str, Family]
    skip: frozenset[str] = frozenset()

    def family_of(self, key: str, kind: Kind) -> tuple[Family, list[str]]:
        """The family of a key and its label values (none for an unlabelled key)."""
        group, dot, rest = key.partition(".")
        if dot:
            known = self.families.get(f"{group}.*")
            if known is not None:
                parts = rest.split(".", len(known.labels) - 1)
                # too few parts for the labels: the missing ones are empty, not an error
                return known, parts + [""] * (len(known.labels) - len(parts))
            derived = Family(
                f"{self.prefix}{_UNSAFE.sub('_', group)}", kind, f"health {group}.*", ("key",)
            )
            return derived, [rest]
        known = self.families.get(key)
        if known is not None:
            return known, []
        return Family(f"{self.prefix}{_UNSAFE.sub('_', key)}", kind, f"health {key}"), []

    def families_of(self, figures: Figures) -> Iterator[Metric]:
        """Metric families of one snapshot, labelled ones grouped."""
        built: dict[str, Metric] = {}
        values: list[tuple[str, float, Kind]] = [
            *((k, float(v), "counter") for k, v in figures.counters.items()),
            *((k, float(v), "gauge") for k, v in figures.gauges.items()),
        ]
        for key, value, kind in values:
            if key in self.skip or key.partition(".")[0] + ".*" in self.skip:
                continue
            family, label_values = self.family_of(key, kind)
            metric = built.get(family.name)
            if metric is None:
                labels = list(family.labels)
                if family.kind == "counter":
                    metric = CounterMetricFamily(family.name, family.help, labels=labels)
                else:
                    metric = GaugeMetricFamily(family.name, family.help, labels=labels)
                built[family.name] = metric
            if family.kind == "counter":
                assert isinstance(metric, CounterMetricFamily)
                metric.add_metric(label_values, value)
            else:
                assert isinstance(metric, GaugeMetricFamily)
                metric.add_metric(label_values, value)
        yield from built.values()


class FiguresCollector(Collector):
    """Reads ``snapshot()`` at every scrape and exposes it through ``exposition``."""

    def __init__(
        self, snapshot: Callable[[], Figures], exposition: Exposition, info: Mapping[str, str]
    ) -> None:
        self.snapshot = snapshot
        self.exposition = exposition
        self.info = dict(info)

    def collect(self) -> Iterator[Metric]:
        health = self.snapshot()
        info = GaugeMetricFamily(
            f"{self.exposition.prefix}info", "who this process is (value 1)", labels=list(self.info)
        )
        info.add_metric(list(self.info.values()), 1.0)
        yield info
        yield from self.exposition.families_of(health)


class MetricsServer:
    """``/metrics`` over HTTP on ``host:port`` (0: a free port) until :meth:`close`."""

    def __init__(self, collector: Collector, host: str, port: int) -> None:
        from prometheus_client import start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, resident memory, fds
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port: int = self._server.server_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(
    snapshot: Callable[[], Figures],
    exposition: Exposition,
    info: Mapping[str, str],
    host: str,
    port: int,
    section: str,
) -> MetricsServer | None:
    """Start ``/metrics`` for a role when ``port`` is set; None when it is 0 (off).

    A port in use or a host that is not ours is the operator's setting to fix: it becomes
    a :class:`ConfigError` naming ``{section}.metrics_port`` or ``.metrics_host`` (exit 2),
    not a traceback.
    """
    if port == 0:
        return None
    try:
        return MetricsServer(FiguresCollector(snapshot, exposition, info), host, port)
    except socket.gaierror as exc:  # before OSError: it is one
        raise ConfigError(f"{section}.metrics_host", host, f"not an address here: {exc}") from None
    except OSError as exc:
        raise ConfigError(
            f"{section}.metrics_port", f"{host}:{port}", f"cannot listen: {exc}"
        ) from None


def _counter(name: str, help: str, *labels: str) -> Family:
    return Family(name, "counter", help, labels)


def _gauge(name: str, help: str, *labels: str) -> Family:
    return Family(name, "gauge", help, labels)


EDGE = Exposition(
    prefix="edgepipe_",
    families={
        "received": _counter("edgepipe_readings_received", "reading messages taken off the broker"),
        "accepted": _counter("edgepipe_readings_accepted", "valid, new readings, journaled"),
        "duplicates": _counter("edgepipe_readings_duplicate", "redeliveries dropped"),
        "dead_letters.*": _counter(
            "edgepipe_dead_letters", "readings refused, by reason", "reason"
        ),
        "dropped.*": _counter(
            "edgepipe_readings_dropped", "readings discarded without a dead letter", "reason"
        ),
        "unaccounted": _gauge(
            "edgepipe_readings_unaccounted",
            "received - accepted - dead letters - duplicates - dropped (0)",
        ),
        "dead_letters_unsent": _counter(
            "edgepipe_dead_letters_unsent", "dead letters too large to publish"
        ),
        "alerts.*": _counter("edgepipe_alerts", "alerts, by state", "state"),
        "late": _counter("edgepipe_points_late", "points whose aggregate window had closed"),
        "readings_shipped": _counter("edgepipe_points_shipped", "selected points put in batches"),
        "batches_shipped": _counter("edgepipe_batches_shipped", "batches put in the outbox"),
        "aggregates": _counter("edgepipe_aggregates", "window aggregates put in the outbox"),
        "replayed": _counter("edgepipe_journal_replayed", "journal entries replayed at start"),
        "uplink_published": _counter("edgepipe_uplink_published", "outbox items handed to MQTT"),
        "uplink_acked": _counter(
            "edgepipe_uplink_acked", "outbox items the cloud confirmed stored"
        ),
        "uplink_requeued": _counter("edgepipe_uplink_requeued", "in-flight items sent again"),
        "uplink_too_large": _counter(
            "edgepipe_uplink_too_large", "outbox items over the broker limit"
        ),
        "uplink_retries": _counter(
            "edgepipe_uplink_retries", "in-flight items put back (queue lifetime)"
        ),
        "uplink_dropped.*": _counter(
            "edgepipe_uplink_dropped",
            "outbox items dropped (queue lifetime), by reason and by priority",
            "what",
        ),
        "uplink_bytes.*": _counter(
            "edgepipe_uplink_bytes", "bytes put in the outbox, by priority", "priority"
        ),
        "snapshots_written": _counter("edgepipe_snapshots_written", "snapshots of the learned state written"),
        "snapshot_write_errors": _counter("edgepipe_snapshot_write_errors", "snapshot writes that failed"),
        "snapshots_refused.*": _counter(
            "edgepipe_snapshots_refused", "snapshots refused at start (the node started cold), by reason", "reason"
        ),
        "snapshot_replay_gap": _counter(
            "edgepipe_snapshot_replay_gap", "journal entries after the snapshot watermark lost to the journal bound"
        ),
        "alerts_replay_suppressed": _counter(
            "edgepipe_alerts_replay_suppressed", "alerts re-derived by the replay, already sent before the stop"
        ),
        "snapshot_bytes": _gauge("edgepipe_snapshot_bytes", "size of the newest snapshot on disk"),
        "snapshot_write_ms": _gauge("edgepipe_snapshot_write_milliseconds", "time the last snapshot write took"),
        "snapshot_age_s": _gauge("edgepipe_snapshot_age_seconds", "node-clock age of the newest snapshot"),
        "snapshot_restored": _gauge("edgepipe_snapshot_restored", "1 if this start restored a snapshot"),
        "snapshot_restore.*": _gauge(
            "edgepipe_snapshot_restore", "1 for how this start began: restored, none, disabled or a refusal", "reason"
        ),
        "acked_seq": _gauge("edgepipe_uplink_acked_seq", "highest uplink seq the cloud stored"),
        "handler_errors": _counter(
            "edgepipe_handler_errors", "readings whose processing raised (bugs)"
        ),
        "json_bytes_in": _counter("edgepipe_reading_bytes", "payload bytes of accepted readings"),
        "readings_per_s": _gauge(
            "edgepipe_readings_per_second", "readings acknowledged per second, last 5 s"
        ),
        "queue_items": _gauge("edgepipe_uplink_backlog_items", "outbox items not yet acknowledged"),
        "queue_bytes": _gauge(
            "edgepipe_uplink_backlog_bytes", "outbox payload bytes (what the budget counts)"
        ),
        "queue_oldest_age_s": _gauge(
            "edgepipe_uplink_oldest_age_seconds", "age of the oldest outbox item"
        ),
        "queue_inflight": _gauge(
            "edgepipe_uplink_inflight_items", "outbox items sent, not yet acknowledged"
        ),
        "journal_items": _gauge("edgepipe_journal_items", "readings in the journal"),
        "backlog": _gauge("edgepipe_inbox_backlog_messages", "messages received, not yet handled"),
        "selection_scale": _gauge(
            "edgepipe_selection_scale", "tolerance multiplier of the load governor"
        ),
        "load_shedding": _gauge(
            "edgepipe_load_shedding", "1 while the load governor widens tolerances"
        ),
        "open_windows": _gauge("edgepipe_open_windows", "aggregate windows open"),
        "connected": _gauge("edgepipe_mqtt_connected", "1 while connected to the broker"),
        "paho_thread_alive": _gauge(
            "edgepipe_mqtt_network_thread_alive", "1 while paho's thread runs"
        ),
        "model_deltas_shipped": _counter(
            "edgepipe_model_deltas_shipped", "model deltas put in the outbox"
        ),
        "models_warm_started": _counter(
            "edgepipe_models_warm_started", "detectors started from a merged model"
        ),
        "models_warm_start_skipped": _counter(
            "edgepipe_models_warm_start_skipped",
            "new detectors with a merged model they cannot use (river models: nothing to merge into)",
        ),
        "models_warm_started_builtin": _counter(
            "edgepipe_models_warm_started_builtin",
            "new detectors started from the package's built-in prior (no merged model of their kind yet)",
        ),
        "selection_ratio.*": _gauge(
            "edgepipe_selection_ratio", "points shipped / points in, by metric", "metric"
        ),
    },
    # sums of labelled families, and what ProcessCollector already exposes
    skip=frozenset({"dead_lettered", "dropped", "queue_dropped", "cpu_s", "rss_mb"}),
)

CLOUD = Exposition(
    prefix="edgepipe_cloud_",
    families={
        "messages": _counter("edgepipe_cloud_messages", "messages taken off the broker"),
        "readings": _counter("edgepipe_cloud_readings_stored", "readings written to the store"),
        "aggregates": _counter(
            "edgepipe_cloud_aggregates_stored", "aggregates written to the store"
        ),
        "alerts": _counter("edgepipe_cloud_alerts_stored", "alerts written to the store"),
        "dead_letters": _counter(
            "edgepipe_cloud_dead_letters_stored", "dead letters written to the store"
        ),
        "health": _counter("edgepipe_cloud_health_stored", "health messages written to the store"),
        "labels": _counter("edgepipe_cloud_labels_stored", "labels written to the store"),
        "poison_acked": _counter(
            "edgepipe_cloud_poison_acked", "undecodable batches acknowledged to their edge"
        ),
        "store_rejected": _counter(
            "edgepipe_cloud_store_rejected", "records the store refused (dead-lettered)"
        ),
        "flushes": _counter(
            "edgepipe_cloud_flushes", "pending writes stored or buffered, then acknowledged"
        ),
        "buffered": _counter("edgepipe_cloud_buffered_writes", "writes put in the disk buffer"),
        "drained": _counter("edgepipe_cloud_drained_writes", "buffered writes since stored"),
        "buffer_full": _counter("edgepipe_cloud_buffer_full", "flushes the full buffer refused"),
        "buffer_refused": _counter("edgepipe_cloud_buffer_refused", "writes the buffer refused"),
        "buffer_corrupt": _counter(
            "edgepipe_cloud_buffer_corrupt", "buffer items deleted as undecodable"
        ),
        "acks_sent": _counter(
            "edgepipe_cloud_acks_sent", "acks of stored uplink seqs sent to edges"
        ),
        "rejected.*": _counter(
            "edgepipe_cloud_rejected", "undecodable messages, by reason", "reason"
        ),
        "store_errors.*": _counter(
            "edgepipe_cloud_store_errors", "failed store writes, by kind", "kind"
        ),
        "pending_messages": _gauge(
            "edgepipe_cloud_pending_messages", "messages waiting for the next write"
        ),
        "store_config_error": _gauge(
            "edgepipe_cloud_store_config_error", "1 while the store refuses our config"
        ),
        "buffer_items": _gauge("edgepipe_cloud_buffer_items", "writes waiting in the disk buffer"),
        "buffer_bytes": _gauge("edgepipe_cloud_buffer_bytes", "bytes in the disk buffer"),
        "buffer_points": _gauge("edgepipe_cloud_buffer_points", "points in the disk buffer"),
        "connected": _gauge("edgepipe_cloud_mqtt_connected", "1 while connected to the broker"),
    },
    skip=frozenset({"cpu_s", "rss_mb", "pid"}),
)

ANALYST = Exposition(
    prefix="edgepipe_analyst_",
    families={
        "aggregates.*": _counter(
            "edgepipe_analyst_aggregates", "aggregates taken off the broker, by site (this shard's)", "site"
        ),
        "alerts_published.*": _counter(
            "edgepipe_analyst_alerts_published", "cloud alerts published, by site", "site"
        ),
        "restore_aggregates": _counter(
            "edgepipe_analyst_restore_aggregates", "aggregates replayed from the store at start"
        ),
        "windows": _counter("edgepipe_analyst_windows_judged", "(site, kind, metric) windows judged"),
        "late": _counter(
            "edgepipe_analyst_aggregates_late", "aggregates and escalations of a window already judged"
        ),
        "suppressed.*": _counter(
            "edgepipe_analyst_device_windows_suppressed",
            "device windows not judged: the edge alerted on the device near them, or the site was offline",
            "reason",
        ),
        "alerts.*": _counter(
            "edgepipe_analyst_alerts",
            "alerts published (raised or cleared), by detector, severity and state",
            "detector",
            "severity",
            "state",
        ),
        "edge_alerts": _counter("edgepipe_analyst_edge_alerts_seen", "edge alert events read"),
        "escalations": _counter("edgepipe_analyst_escalations", "uncertain edge windows received"),
        "escalations_raised": _counter(
            "edgepipe_analyst_escalations_raised", "escalated windows the second opinion raised"
        ),
        "refused.*": _counter("edgepipe_analyst_refused", "payloads refused, by reason", "reason"),
        "other_shard": _counter(
            "edgepipe_analyst_other_shard_messages", "messages of sites another shard owns, dropped"
        ),
        "restore_seconds": _gauge(
            "edgepipe_analyst_restore_seconds", "time the replay from the store took (so far, while restoring)"
        ),
        "restoring": _gauge("edgepipe_analyst_restoring", "1 while replaying the store at start"),
        "devices.*": _gauge(
            "edgepipe_analyst_devices", "devices the detectors hold state for, by site", "site"
        ),
        "series": _gauge("edgepipe_analyst_detector_series", "device series the detectors hold state for"),
        "pending_windows": _gauge(
            "edgepipe_analyst_pending_windows", "windows waiting for later ones before they are judged"
        ),
        "open_alerts": _gauge("edgepipe_analyst_open_alerts", "cloud alerts raised and not cleared"),
        "lag_seconds.*": _gauge(
            "edgepipe_analyst_lag_seconds",
            "wall clock now minus the end of the newest aggregate (event time), by site",
            "site",
        ),
        "backlog": _gauge("edgepipe_analyst_inbox_backlog_messages", "messages received, not yet handled"),
        "connected": _gauge("edgepipe_analyst_mqtt_connected", "1 while connected to the broker"),
    },
)

__all__ = [
    "CLOUD",
    "EDGE",
    "Exposition",
    "Family",
    "ANALYST",
    "Figures",
    "FiguresCollector",
    "Snapshot",
    "MetricsServer",
    "serve_metrics",
]
