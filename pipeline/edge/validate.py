"""Validator: the first stage of the edge node, from raw MQTT message to a trusted reading."""

from __future__ import annotations

from array import array
from bisect import insort
from collections.abc import Callable, Mapping

from pipeline.errors import ProtocolError
from pipeline.protocol import (
    DeadLetter,
    Reading,
    ReadingLimits,
    Reason,
    TopicKind,
    Topics,
    decode_reading,
)
from pipeline.protocol.catalog import BUILTIN, Catalog
from pipeline.protocol.dead_letters import dead_letter
from pipeline.protocol.json_codec import check_reading

RECENT = 16  # accepted timestamps remembered per device, beyond the newest


class RecentTimestamps:
    """One device's accepted timestamps: the newest, and the ``size`` highest ones.

    Why both: ``ts > newest`` is new (the common case, one comparison). An older ``ts``
    is a redelivery if it is the newest or among the kept ones, new if it is unknown but
    no older than the lowest kept one (a reading that arrived out of order), and, beyond
    that memory, counted as a duplicate: it cannot be told apart from an old redelivery.

    The highest, not the last arrived: "unknown and not older than the lowest kept" means
    "never accepted" only if every accepted ``ts`` above the lowest kept one is kept. Kept in
    arrival order, a reading delivered ahead of its backlog (a broker resuming the node's
    session sent a live reading before the queued ones) left memory while older ones stayed,
    and its redelivery after a kill was accepted a second time: one reading counted twice.

    >>> r = RecentTimestamps(size=3)
    >>> [r.accept(ts) for ts in (10, 20, 30, 15, 20, 30, 5)]
    [True, True, True, True, False, False, False]
    """

    __slots__ = ("newest", "_ring")

    def __init__(self, size: int = RECENT) -> None:
        self.newest = -(2**63)
        self._ring = array("q", [-(2**63)]) * size  # ascending: the lowest kept is [0]

    def accept(self, ts: int) -> bool:
        """True (and remembered) if ``ts`` has not been accepted before, as far as we know."""
        ring = self._ring
        if ts > self.newest:
            self.newest = ts
            ring.append(ts)
        elif ts == self.newest or ts < ring[0] or ts in ring:
            return False
        else:
            insort(ring, ts)
        del ring[0]  # the lowest leaves memory, never a higher one
        return True


class Validator:
    """Turns ``(topic, payload)`` into a :class:`Reading` or a :class:`DeadLetter`.

    It never raises on input: every defect becomes a dead letter with its reason. It also
    drops redeliveries (MQTT QoS 1 delivers at least once, and a broker restart redelivers)
    as ``duplicate``, without dropping readings that merely arrive out of order: a client
    may send what it published during a reconnect ahead of its backlog (paho 2.x does).
    Per device it remembers the newest accepted ``ts`` and the last ``RECENT`` accepted
    ones (:class:`RecentTimestamps`); docs/decisions/0002-duplicates-by-device-timestamp.md.

    A device keeps the kind it was first accepted with: a reading naming another kind is
    ``kind_changed`` and touches none of the device's state. Why: one stray reading used to
    file the device under two kinds, and every later reading of the real kind fell into
    windows already closed for the other. ``known_kinds`` seeds that memory (the node keeps
    it durable) and ``on_new_device(device, kind)`` is called for every device seen first.

    >>> v = Validator(site="farm")
    >>> v.validate_one("edgepipe/v1/farm/dev/d1", b"{oops", now_ms=0).reason
    'bad_json'
    """

    def __init__(
        self,
        site: str,
        topics: Topics = Topics(),
        limits: ReadingLimits = ReadingLimits(),
        known_kinds: Mapping[str, str] | None = None,
        on_new_device: Callable[[str, str], object] | None = None,
        catalog: Catalog = BUILTIN,
    ) -> None:
        self.site = site
        self.catalog = catalog
        self.topics = topics
        self.limits = limits
        self._seen: dict[str, RecentTimestamps] = {}
        self.kinds: dict[str, str] = dict(known_kinds or {})  # device -> its kind
        self._on_new_device = on_new_device

    def __repr__(self) -> str:
        return f"Validator(site={self.site!r}, limits={self.limits!r})"

    def _timestamps(self, device: str) -> RecentTimestamps:
        seen = self._seen.get(device)
        if seen is None:
            seen = self._seen[device] = RecentTimestamps()
        return seen

    def remember(self, reading: Reading) -> None:
        """Note a reading accepted earlier (journal replay), so its redelivery is a duplicate."""
        if reading.device not in self.kinds:
            self._new_device(reading.device, reading.kind)
        self._timestamps(reading.device).accept(reading.ts)

    def _new_device(self, device: str, kind: str) -> None:
        self.kinds[device] = kind
        if self._on_new_device is not None:
            self._on_new_device(device, kind)

    def validate_one(self, topic: str, payload: bytes, now_ms: int) -> Reading | DeadLetter:
        try:
            parsed = self.topics.parse(topic)
            if parsed.kind is not TopicKind.READING or parsed.site != self.site:
                raise ProtocolError(Reason.BAD_TOPIC, f"not a reading topic of site {self.site}")
            reading = decode_reading(
                payload,
                site=self.site,
                device=parsed.subject,
                now_ms=now_ms,
                limits=self.limits,
                catalog=self.catalog,
            )
            return self._admit(reading)
        except ProtocolError as exc:
            return dead_letter(self.site, topic, payload, exc.reason, exc.detail, now_ms)

    def validate_adapted(
        self, reading: Reading, size_bytes: int, now_ms: int
    ) -> Reading | ProtocolError:
        """A reading an ingest adapter made, by the same rules as ``validate_one`` (the error,
        not a dead letter: the caller's names the foreign message, not this reading).

        Why not ``validate_one`` on its encoding: that parsed a topic built for the purpose and
        decoded bytes just encoded, a third of an adapted reading's cost at the edge.
        """
        try:
            check_reading(
                reading,
                size_bytes=size_bytes,
                site=self.site,
                now_ms=now_ms,
                limits=self.limits,
                catalog=self.catalog,
            )
            return self._admit(reading)
        except ProtocolError as exc:
            return exc

    def _admit(self, reading: Reading) -> Reading:
        """A valid reading, unless its device has another kind or its ``ts`` was accepted before."""
        known = self.kinds.get(reading.device)
        if known is not None and known != reading.kind:
            raise ProtocolError(
                Reason.KIND_CHANGED, f"device {reading.device} is a {known}, not a {reading.kind}"
            )
        seen = self._timestamps(reading.device)
        if not seen.accept(reading.ts):
            raise ProtocolError(
                Reason.DUPLICATE, f"ts {reading.ts} accepted before (newest {seen.newest})"
            )
        if known is None:
            self._new_device(reading.device, reading.kind)
        return reading
