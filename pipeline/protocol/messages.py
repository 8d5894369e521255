"""Message types of the wire protocol (docs/protocol.md is the contract).

They are ``msgspec`` structs: one class is at once the typed value the stages pass around
and the schema the decoder checks, at well under a microsecond per reading. Every payload
carries ``v``, its schema version; a decoder rejects versions it does not know.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

SCHEMA_VERSION = 1


class Reading(msgspec.Struct, frozen=True, omit_defaults=True):
    """One device sample: several metrics measured at one instant.

    ``ts`` is the device's clock in Unix milliseconds, strictly increasing per device;
    ``seq`` is the device's counter, strictly increasing. ``site`` is optional on the wire
    (the topic carries it) and must match the topic when present.
    """

    v: int
    device: str
    kind: str
    ts: int
    seq: int
    metrics: dict[str, float]
    site: str = ""


ALERT_SOURCES = ("edge", "cloud")  # who raised an alert: the site's node, the fleet analyst


class AlertData(msgspec.Struct, frozen=True):
    v: int
    alert_id: str  # stable for one raise/clear pair
    site: str
    device: str
    kind: str
    metric: str
    state: str  # "raised" | "cleared"
    severity: str  # "info" | "warning" | "critical"
    score: float  # anomaly score in [0, 1]
    value: float
    reading_ts: int
    reason: str
    model_version: str
    source: str = "edge"  # who detected it: "edge" (the site's node) or "cloud" (the fleet analyst)


class Alert(msgspec.Struct, frozen=True):
    """A CloudEvents 1.0 event in structured JSON mode, carrying ``AlertData``."""

    id: str
    source: str
    type: str
    time: str
    subject: str
    data: AlertData
    specversion: str = "1.0"
    datacontenttype: str = "application/json"
    seq: int = 0  # CloudEvents extension attribute: the edge's uplink seq, acknowledged by the cloud


class Aggregate(msgspec.Struct, frozen=True):
    """Summary of one metric of one device over the window [start, end) in Unix ms."""

    v: int
    site: str
    device: str
    kind: str
    metric: str
    start: int
    end: int
    count: int
    min: float
    max: float
    mean: float
    std: float
    last: float
    anomalies: int


class Escalation(msgspec.Struct, frozen=True):
    """A window the edge was unsure about (its peak score between clear and raise), with its
    raw points, for the fleet analyst's second opinion (docs/analyst.md, Escalation)."""

    v: int
    site: str
    device: str
    kind: str
    metric: str
    start: int
    end: int
    score: float  # the edge's highest score in the window
    ts: list[int]
    values: list[float]


class AggregateBatch(msgspec.Struct, frozen=True):
    v: int
    site: str
    seq: int  # uplink sequence, acknowledged by the cloud
    aggregates: list[Aggregate]


class Health(msgspec.Struct, frozen=True):
    """An edge node's status; published retained, and as the last will with status offline."""

    v: int
    site: str
    node: str
    ts: int
    status: str  # "online" | "offline"
    counters: dict[str, int] = {}
    gauges: dict[str, float] = {}


class DeadLetter(msgspec.Struct, frozen=True):
    """A refused payload: why, where it came from, and its first bytes."""

    v: int
    site: str
    ts: int
    reason: str
    detail: str
    topic: str
    size: int
    sha256: str
    payload: str  # the first bytes, decoded as UTF-8 with replacement


class Label(msgspec.Struct, frozen=True):
    """Ground truth from the simulator: an injected anomaly window [start, end] in Unix ms."""

    v: int
    site: str
    device: str
    metrics: list[str]
    anomaly: str
    start: int
    end: int


class Ack(msgspec.Struct, frozen=True):
    """The cloud has stored these uplink messages of ``site``.

    ``ranges`` are inclusive ``[first, last]`` runs of uplink sequence numbers. The edge
    ships by priority, not in sequence order, so "everything up to N" would be wrong:
    the edge forgets exactly the listed sequences. ``seq`` is the highest of them.
    """

    v: int
    site: str
    seq: int
    ranges: list[list[int]] = []


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Compress sequence numbers into sorted inclusive runs: {1,2,3,7} -> [[1,3],[7,7]]."""
    runs: list[list[int]] = []
    for s in sorted(set(seqs)):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return runs


def seqs_of(ranges: list[list[int]], limit: int = 1_000_000) -> list[int]:
    """Expand ranges back to sequence numbers, refusing absurd spans (hostile input)."""
    out: list[int] = []
    for first, last in ranges:
        if last < first or len(out) + (last - first + 1) > limit:
            raise ValueError(f"bad ack range [{first}, {last}]")
        out.extend(range(first, last + 1))
    return out


class Batch(msgspec.Struct, frozen=True):
    """Selected readings of one site, shipped together on ``{site}/edge/batch``."""

    v: int
    site: str
    seq: int  # uplink sequence, acknowledged by the cloud
    readings: list[Reading]
