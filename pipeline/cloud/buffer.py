"""DiskBuffer: where the cloud worker keeps decoded writes while the store is down.

Why: the worker acknowledges a message to the broker (and its seq to the edge) only once it
is stored *or durably buffered* (RELIABILITY.md R2, R4). Keeping a long outage in the
broker's queue or in paho's memory is not durable and not bounded; this file is both.

* SQLite in WAL mode with ``synchronous=FULL``: an item is on disk when :meth:`put`
  returns, so acknowledging it afterwards is safe even against a power loss.
* Items are :class:`StoreWrite` values (msgpack), replayed oldest first (:meth:`oldest`,
  :meth:`remove`), so the store sees the writes in the order the worker made them.
* Bounded by ``max_bytes`` of payload: a :meth:`put` that would pass it is refused and
  counted (``refused``); the caller then keeps the messages unacknowledged, so the broker
  and the edge keep them instead (reject-new-data: nothing is dropped silently).
* An item that cannot be decoded any more (a damaged file) is deleted and counted
  (``corrupt``), so it cannot block the replay.
"""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from pathlib import Path

import msgspec

from pipeline.protocol.catalog import CatalogMessage
from pipeline.protocol.messages import Aggregate, Alert, DeadLetter, Health, Label, Reading

__all__ = ["DiskBuffer", "StoreWrite"]


class StoreWrite(msgspec.Struct):
    """One flush of the worker: everything it writes to the store in one go."""

    readings: dict[str, list[Reading]] = msgspec.field(default_factory=lambda: defaultdict(list))
    aggregates: list[Aggregate] = msgspec.field(default_factory=list)
    alerts: list[Alert] = msgspec.field(default_factory=list)
    dead_letters: list[DeadLetter] = msgspec.field(default_factory=list)
    health: list[Health] = msgspec.field(default_factory=list)
    labels: list[Label] = msgspec.field(default_factory=list)
    catalogs: list[CatalogMessage] = msgspec.field(default_factory=list)

    @property
    def points(self) -> int:
        return (
            sum(len(r) for r in self.readings.values())
            + len(self.aggregates)
            + len(self.alerts)
            + len(self.dead_letters)
            + len(self.health)
            + len(self.labels)
            + len(self.catalogs)
        )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    points INTEGER NOT NULL,
    body BLOB NOT NULL
);
"""


class DiskBuffer:
    """A bounded, durable FIFO of :class:`StoreWrite` items in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.executescript(_SCHEMA)
        count, size, points = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), COALESCE(SUM(points), 0) FROM items"
        ).fetchone()
        self.items, self.bytes, self.points = int(count), int(size), int(points)
        self.refused = 0  # puts over the budget
        self.corrupt = 0  # items deleted because they could not be decoded
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(StoreWrite)

    def put(self, write: StoreWrite) -> bool:
        """Append ``write`` durably; False (and counted) if it would pass the budget."""
        body = self._encoder.encode(write)
        if self.bytes + len(body) > self.max_bytes:
            self.refused += 1
            return False
        points = write.points
        self._conn.execute("INSERT INTO items (points, body) VALUES (?, ?)", (points, body))
        self.items += 1
        self.bytes += len(body)
        self.points += points
        return True

    def oldest(self) -> tuple[int, StoreWrite] | None:
        """The oldest item and its id, or None when empty; undecodable items are skipped."""
        while True:
            row = self._conn.execute(
                "SELECT id, body FROM items ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            item_id, body = row
            try:
                return int(item_id), self._decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.corrupt += 1
                self.remove(int(item_id))

    def remove(self, item_id: int) -> None:
        """Delete one item once the store holds it."""
        row = self._conn.execute(
            "DELETE FROM items WHERE id = ? RETURNING LENGTH(body), points", (item_id,)
        ).fetchone()
        if row is not None:
            self.items -= 1
            self.bytes -= int(row[0])
            self.points -= int(row[1])

    def close(self) -> None:
        self._conn.close()
