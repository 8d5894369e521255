"""Validator: the first stage of the edge node, from raw MQTT message to a trusted reading."""

from __future__ import annotations

import hashlib

from pipeline.errors import ProtocolError
from pipeline.protocol import (
    SCHEMA_VERSION,
    DeadLetter,
    Reading,
    ReadingLimits,
    Reason,
    TopicKind,
    Topics,
    decode_reading,
)

PAYLOAD_PREVIEW_BYTES = 256


class Validator:
    """Turns ``(topic, payload)`` into a :class:`Reading` or a :class:`DeadLetter`.

    It never raises on input: every defect becomes a dead letter with its reason. It also
    drops redeliveries: a reading whose ``ts`` is not newer than the last accepted one from
    the same device is refused as ``duplicate`` (MQTT QoS 1 delivers at least once, and a
    broker restart redelivers). Per-device state is one integer.

    >>> v = Validator(site="farm")
    >>> v.validate_one("edgepipe/v1/farm/dev/d1", b"{oops", now_ms=0).reason
    'bad_json'
    """

    def __init__(self, site: str, topics: Topics = Topics(), limits: ReadingLimits = ReadingLimits()) -> None:
        self.site = site
        self.topics = topics
        self.limits = limits
        self._last_ts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Validator(site={self.site!r}, limits={self.limits!r})"

    def remember(self, reading: Reading) -> None:
        """Note a reading accepted earlier (journal replay), so its redelivery is a duplicate."""
        if reading.ts > self._last_ts.get(reading.device, -(2**62)):
            self._last_ts[reading.device] = reading.ts

    def validate_one(self, topic: str, payload: bytes, now_ms: int) -> Reading | DeadLetter:
        try:
            parsed = self.topics.parse(topic)
            if parsed.kind is not TopicKind.READING or parsed.site != self.site:
                raise ProtocolError(Reason.BAD_TOPIC, f"not a reading topic of site {self.site}")
            reading = decode_reading(
                payload, site=self.site, device=parsed.subject, now_ms=now_ms, limits=self.limits
            )
            last = self._last_ts.get(reading.device)
            if last is not None and reading.ts <= last:
                raise ProtocolError(Reason.DUPLICATE, f"ts {reading.ts} <= last accepted {last}")
        except ProtocolError as exc:
            return dead_letter(self.site, topic, payload, exc.reason, exc.detail, now_ms)
        self._last_ts[reading.device] = reading.ts
        return reading


def dead_letter(
    site: str, topic: str, payload: bytes, reason: Reason, detail: str, now_ms: int
) -> DeadLetter:
    """A dead letter carrying the reason, a hash of the whole payload and its first bytes."""
    return DeadLetter(
        v=SCHEMA_VERSION,
        site=site,
        ts=now_ms,
        reason=reason.value,
        detail=detail[:200],
        topic=topic[:256],
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        payload=payload[:PAYLOAD_PREVIEW_BYTES].decode("utf-8", errors="replace"),
    )
