"""The roles of the edge stages, as small protocols, and the values they pass around.

Stages are pure: data in, data out, time passed in as ``now`` or the reading's own ``ts``.
They import nothing of MQTT, disks or databases; ``EdgeNode`` wires them together.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pipeline.detect.point import Point
from pipeline.protocol import Aggregate

__all__ = ["Aggregator", "Point", "Selector"]


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
