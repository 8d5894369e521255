"""``Point``: one metric of one reading with its anomaly score, the unit detection hands on.

The alert policy, selection and aggregation all work on points; it lives here, in the
detection package, because detection makes them (the edge's stages import it from here).
"""

from __future__ import annotations

from dataclasses import dataclass


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
