"""Counters of an edge node, published with its health so that tests can account exactly.

The invariant every test may assert (RELIABILITY.md O1, I-accounting):
``received = accepted + dead_lettered + duplicates + dropped`` (``unaccounted`` is 0).
``dropped`` counts readings taken off the broker and discarded without a dead letter, by
reason; today every refusal is a dead letter or a duplicate, so it stays 0 unless a future
stage (e.g. a rate limit) adds a reason. Uplink-side losses are separate: outbox items the
overflow policy dropped are ``uplink_dropped.<reason>`` and ``uplink_dropped.<priority>``
in health, from the queue's own counters, which survive restarts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

from pipeline.edge.uplink import UplinkStats
from pipeline.protocol import SCHEMA_VERSION, Health


@dataclass
class NodeCounters:
    received: int = 0  # reading messages taken off the broker
    accepted: int = 0  # valid and new: journaled, acknowledged to the device after the commit
    duplicates: int = 0  # redeliveries dropped (ts not newer than the device's last)
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason
    dropped: Counter[str] = field(default_factory=Counter)  # readings discarded, by reason
    dead_letters_unsent: int = 0  # dead letters too large to publish (still counted above)
    alerts: Counter[str] = field(default_factory=Counter)  # by state: raised, cleared
    late: int = 0  # points whose window had already closed (not in any aggregate)
    readings_shipped: int = 0  # selected points put in batches
    batches_shipped: int = 0
    aggregates: int = 0
    replayed: int = 0  # journal entries replayed at start (crash recovery)
    uplink_published: int = 0  # outbox items handed to MQTT (resends included)
    uplink_acked: int = 0  # outbox items the cloud confirmed stored
    uplink_requeued: int = 0  # in-flight items sent again (reconnect or ack timeout)
    uplink_too_large: int = 0  # outbox items over the broker limit, dropped
    acked_seq: int = 0  # highest uplink sequence the cloud says it stored
    handler_errors: int = 0  # readings whose processing raised (a bug: logged, the node goes on)
    json_bytes_in: int = 0  # payload bytes of accepted readings: what forwarding them would cost
    uplink_bytes: Counter[str] = field(default_factory=Counter)  # put in the outbox, by priority
    ingest_readings: Counter[str] = field(default_factory=Counter)  # adapted from foreign formats, by format
    ingest_extra_fields: int = 0  # foreign fields neither mapped to a metric nor ignored by config
    snapshots_written: int = 0  # snapshots of the learned state written by this process
    snapshot_write_errors: int = 0  # snapshot writes that failed (disk): the previous one stays
    snapshots_refused: Counter[str] = field(default_factory=Counter)  # at start, by reason
    snapshot_replay_gap: int = 0  # journal entries after the snapshot's watermark already trimmed
    alerts_replay_suppressed: int = 0  # alerts a replay re-derived: already in the outbox before the stop

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def unaccounted(self) -> int:
        return self.received - self.accepted - self.dead_lettered - self.duplicates - self.dropped_total

    def health(
        self,
        site: str,
        node: str,
        now_ms: int,
        status: str = "online",
        gauges: dict[str, float] | None = None,
        uplink: UplinkStats | None = None,
    ) -> Health:
        """The health message; ``uplink`` (the outbox's stats) adds its drop and retry counters.

        Safe to call from another thread than the one counting (the /metrics scrape): the
        counters by key are copied first (``dict()`` of a Counter is one step under the GIL),
        so a key added meanwhile cannot break the iteration.
        """
        dead_letters, dropped = dict(self.dead_letters), dict(self.dropped)
        counters = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("dead_letters", "alerts", "uplink_bytes", "dropped", "ingest_readings", "snapshots_refused")
        }
        counters.update({f"ingest_readings.{fmt}": n for fmt, n in dict(self.ingest_readings).items()})
        counters.update({f"snapshots_refused.{why}": n for why, n in dict(self.snapshots_refused).items()})
        counters.update({f"uplink_bytes.{what}": n for what, n in dict(self.uplink_bytes).items()})
        counters.update({f"alerts.{state}": n for state, n in dict(self.alerts).items()})
        counters["dead_lettered"] = sum(dead_letters.values())
        counters.update({f"dead_letters.{reason}": n for reason, n in dead_letters.items()})
        counters["dropped"] = sum(dropped.values())
        counters.update({f"dropped.{reason}": n for reason, n in dropped.items()})
        counters["unaccounted"] = (
            counters["received"] - counters["accepted"] - counters["dead_lettered"]
            - counters["duplicates"] - counters["dropped"]
        )
        if uplink is not None:
            counters["uplink_retries"] = uplink.retries
            counters.update({f"uplink_dropped.{k}": n for k, n in uplink.dropped.items()})
            counters.update({f"uplink_dropped.{k}": n for k, n in uplink.dropped_by_priority.items()})
        return Health(
            v=SCHEMA_VERSION,
            site=site,
            node=node,
            ts=now_ms,
            status=status,
            counters=counters,
            gauges=gauges or {},
        )
