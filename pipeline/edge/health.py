"""Counters of an edge node, published with its health so that tests can account exactly.

The invariant every test may assert: ``received = accepted + dead_lettered + duplicates``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.protocol import SCHEMA_VERSION, Health


@dataclass
class NodeCounters:
    received: int = 0  # reading messages taken off the broker
    accepted: int = 0  # valid and new
    duplicates: int = 0  # redeliveries dropped (ts not newer than the device's last)
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason
    readings_shipped: int = 0
    batches_shipped: int = 0
    acked_seq: int = 0  # highest uplink sequence the cloud says it stored
    dead_letters_unsent: int = 0  # dead letters too large or unpublishable (still counted)

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def unaccounted(self) -> int:
        return self.received - self.accepted - self.dead_lettered - self.duplicates

    def health(self, site: str, node: str, now_ms: int, status: str = "online") -> Health:
        counters = {
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "readings_shipped": self.readings_shipped,
            "batches_shipped": self.batches_shipped,
            "acked_seq": self.acked_seq,
        }
        counters.update({f"dead_letters.{reason}": n for reason, n in self.dead_letters.items()})
        return Health(v=SCHEMA_VERSION, site=site, node=node, ts=now_ms, status=status, counters=counters)
