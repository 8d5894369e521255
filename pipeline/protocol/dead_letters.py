"""Making a dead letter: shared by the edge (refused readings) and the cloud (refused uplink messages)."""

from __future__ import annotations

import hashlib

from pipeline.protocol.messages import SCHEMA_VERSION, DeadLetter
from pipeline.protocol.reasons import Reason

PAYLOAD_PREVIEW_BYTES = 256


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
