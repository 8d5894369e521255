"""Window aggregates of a small made-up fleet, for the analyst's specifications."""

from __future__ import annotations

import random
from collections.abc import Callable

from pipeline.protocol import Aggregate

MINUTE_MS = 60_000
T0 = 1_719_792_000_000  # Monday 1 July 2024, 00:00 UTC
Offset = Callable[[str, int], float]  # (device, window index) -> added to the device's value


def none(device: str, i: int) -> float:
    return 0.0


def window(
    i: int,
    devices: int = 12,
    *,
    site: str = "farm",
    kind: str = "soil_probe",
    metric: str = "moisture",
    offset: Offset = none,
    noise: float = 0.3,
    seed: int = 7,
    fleet: Callable[[int], float] = lambda i: 30.0 + 0.01 * i,
) -> list[Aggregate]:
    """One window (index ``i``, one minute) of every device; deterministic for (seed, i)."""
    rng = random.Random(seed * 1_000_003 + i)
    start = T0 + i * MINUTE_MS
    out = []
    for d in range(devices):
        name = f"p{d}"
        mean = fleet(i) + d * 0.2 + rng.gauss(0.0, noise) + offset(name, i)
        out.append(Aggregate(1, site, name, kind, metric, start, start + MINUTE_MS, 1, mean, mean, mean, 0.0, mean, 0))
    return out


def drift(device: str, first: int, per_window: float) -> Offset:
    """``device`` drifts by ``per_window`` a window from window ``first`` on."""

    def offset(name: str, i: int) -> float:
        return per_window * (i - first + 1) if name == device and i >= first else 0.0

    return offset
