"""EventTimeSequencer: the readings of cross-device stages, handed on in event-time order.

Why: a stage that relates devices (``IrrigationZones``, one per ``[[links]]`` entry: a valve's
opening anchors its zone's probes, a probe's rise links the valves that just opened; the node
holds the kinds every such stage names, ``ordered_kinds()``) decides on the order in which it
sees their readings. Arrival order is not the stream's: MQTT keeps one publisher's order,
not the order across devices, and a broker restart, a reconnecting gateway or a busy node
interleave them differently every run. The sequencer holds the readings of the kinds such
stages read and releases them sorted by ``(ts, device)`` once the site's **watermark**,
the newest of their timestamps minus ``lateness_ms``, has passed them: whatever the
interleaving, a stage sees the same sequence as long as no reading arrives after one more
than ``lateness_ms`` newer (docs/decisions/0011-event-time-watermark.md).

Readings of other kinds pass straight through (``hold`` is False): per-series detectors,
stuck runs and switch contexts read one device at a time, and their alerts must not wait
(RELIABILITY R9, alert latency). So do the related kinds until readings of two of them have
arrived: soil probes without a valve relate to nothing, and must not wait either. A reading
at or behind the released watermark is late: it is handed on at once, and counted (``late``).

Pure: no clock, no I/O. The node releases everything on a drain, at shutdown and when the
site has been quiet for ``aggregate.idle_s`` of wall time (a stream's last readings have
nothing newer to release them).

>>> s = EventTimeSequencer({"valve", "probe"}, lateness_ms=60_000)
>>> s.hold("fridge"), s.hold("probe"), s.hold("valve"), s.hold("probe")
(False, False, True, True)
>>> arrivals = [("p2", 0), ("p1", 0), ("v1", 60_000), ("p1", 60_000), ("v1", 120_000)]
>>> for number, (device, ts) in enumerate(arrivals):
...     _ = s.add_one(device, ts, number, f"{device}@{ts // 1000}s")
>>> [item for _, _, _, item in s.release()]
['p1@0s', 'p2@0s', 'p1@60s', 'v1@60s']
>>> [item for _, _, _, item in s.release(everything=True)]
['v1@120s']
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
NEVER_MS = -(2**62)


class EventTimeSequencer(Generic[T]):
    """Holds items of the ``kinds`` given until the watermark passes them; see the module docstring."""

    def __init__(self, kinds: Collection[str], lateness_ms: int) -> None:
        if lateness_ms < 0:
            raise ValueError(f"lateness_ms must be >= 0, got {lateness_ms}")
        self.kinds = frozenset(kinds)
        self.lateness_ms = lateness_ms
        self._held: list[tuple[int, str, int, T]] = []  # heap of (ts, device, number, item)
        self.newest = NEVER_MS  # newest ts held or released
        self.released_upto = NEVER_MS  # every ts up to here was handed on
        self.late = 0  # items that arrived behind the released watermark
        self.seen_kinds: set[str] = set()  # related kinds seen while not yet active
        self.active = False  # readings of two related kinds have arrived: hold them from now on

    def __repr__(self) -> str:
        return f"EventTimeSequencer(kinds={sorted(self.kinds)}, lateness_ms={self.lateness_ms})"

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, kind: str) -> bool:
        """True if this reading of ``kind`` goes through the sequencer (see the module docstring)."""
        if self.active:
            return kind in self.kinds
        if kind not in self.kinds:
            return False
        self.seen_kinds.add(kind)
        self.active = len(self.seen_kinds) >= 2
        return self.active

    def add_one(self, device: str, ts: int, number: int, item: T) -> bool:
        """Hold ``item``, a reading of ``device`` at ``ts``; False if it is late (hand it on now).

        ``number`` is the caller's, unique per item (the node: the journal id); it is handed
        back with the item and orders nothing (no two readings of a device share a ``ts``).
        """
        if ts <= self.released_upto:
            self.late += 1
            return False
        if ts > self.newest:
            self.newest = ts
        heapq.heappush(self._held, (ts, device, number, item))
        return True

    def due(self) -> bool:
        """True if the watermark has passed the oldest held item (``release`` would hand one on)."""
        held = self._held
        return bool(held) and held[0][0] <= self.newest - self.lateness_ms

    def release(self, everything: bool = False) -> Iterator[tuple[int, str, int, T]]:
        """``(ts, device, number, item)`` of every held item the watermark has passed, in ``(ts, device)`` order."""
        held = self._held
        watermark = self.newest if everything else self.newest - self.lateness_ms
        while held and held[0][0] <= watermark:
            entry = heapq.heappop(held)
            if entry[0] > self.released_upto:
                self.released_upto = entry[0]
            yield entry
