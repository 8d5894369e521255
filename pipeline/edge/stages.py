"""The roles of the edge stages, as small protocols, and the values they pass around.

Stages are pure: data in, data out, time passed in as ``now`` or the reading's own ``ts``.
They import nothing of MQTT, disks or databases; ``EdgeNode`` wires them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pipeline.protocol import Aggregate


@dataclass(frozen=True, slots=True)
class Point:
    """One metric of one reading: the unit that selection and aggregation work on."""

    device: str
    kind: str
    metric: str
    ts: int
    seq: int
    value: float
    score: float = 0.0  # anomaly score in [0, 1] from the detector


@runtime_checkable
class Selector(Protocol):
    """Decides which points are worth shipping; returns the points to ship now.

    It may return more than the point it was given (points held back and released
    because an anomaly started) or an earlier point (swinging door ships the corner
    of a trend when the trend breaks).
    """

    def select_one(self, point: Point) -> list[Point]: ...


@runtime_checkable
class Aggregator(Protocol):
    def add_one(self, point: Point, now_ms: int | None = None) -> bool: ...  # False: too late
    def flush(self, now_ms: int) -> list[Aggregate]: ...  # windows that are due
