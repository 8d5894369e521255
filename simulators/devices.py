"""Device models: one vectorised model per device kind, and the site environment they share.

A model simulates all devices of one kind at one site together: ``block(t, env)`` returns the
raw (unrounded) values for a block of ticks as an array shaped (ticks, devices, metrics), in
the metric order of ``pipeline.protocol.catalog``. Each device draws from its own generator,
so its stream does not depend on how many other devices share the model. Correlations
between devices come from the site's ``Environment`` (weather, opening hours, traffic demand).

A model also says how anomalies may show on it: ``scales`` sizes spikes and shifts per
metric, ``generic`` lists which generic anomalies each metric can carry, ``events`` the
domain events of the kind.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pipeline.protocol.catalog import KINDS, DeviceKind
from simulators.signals import Array

Env = dict[str, Array]

GENERIC = ("spike", "dip", "level_shift", "drift", "stuck", "noise_burst")


class Environment:
    """What every device of a site shares, advanced one block of ticks at a time."""

    def __init__(self, rng: np.random.Generator, dt: float, latitude: float = 45.0) -> None:
        self.rng = rng
        self.dt = dt
        self.latitude = latitude

    def block(self, t: Array) -> Env:
        raise NotImplementedError


class DeviceModel:
    """The devices of one kind at one site, simulated together.

    ``rngs`` holds one generator per device; ``zones`` the irrigation zone (farm) or any other
    grouping a domain needs, one per device; ``dt`` is the time between ticks in seconds.
    """

    kind_name: ClassVar[str]
    scales: ClassVar[dict[str, float]]
    generic: ClassVar[dict[str, tuple[str, ...]]]
    events: ClassVar[tuple[str, ...]] = ()

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        self.kind: DeviceKind = KINDS[self.kind_name]
        self.rngs = rngs
        self.n = len(rngs)
        self.zones = np.asarray(zones, dtype=np.int64)
        self.dt = dt
        self.restocked: np.ndarray | None = None  # (ticks, devices) bool, for theft (shelves)

    def block(self, t: Array, env: Env) -> Array:
        raise NotImplementedError

    # --- per-device draws, stacked on the device axis (axis 1) ---------------------------

    def uniform(self, low: float, high: float) -> Array:
        """One static parameter per device (drawn once, at construction)."""
        return np.array([r.uniform(low, high) for r in self.rngs])

    def normal(self, sd: float = 1.0) -> Array:
        return np.array([r.normal(0.0, sd) for r in self.rngs])

    def normals(self, ticks: int, count: int) -> Array:
        """Standard normals shaped (ticks, devices, count)."""
        if self.n == 0:
            return np.zeros((ticks, 0, count))
        return np.stack([r.standard_normal((ticks, count)) for r in self.rngs], axis=1)

    def uniforms(self, *shape: int) -> Array:
        """Uniforms in [0, 1) shaped (shape[0], devices, *shape[1:])."""
        if self.n == 0:
            return np.zeros((shape[0], 0, *shape[1:]))
        return np.stack([r.random(shape) for r in self.rngs], axis=1)

    def poisson(self, lam: Array) -> Array:
        """Poisson counts for ``lam`` shaped (ticks, devices)."""
        if self.n == 0:
            return np.zeros_like(lam)
        lam = np.maximum(lam, 0.0)
        return np.stack(
            [r.poisson(lam[:, i]).astype(np.float64) for i, r in enumerate(self.rngs)], axis=1
        )

    def substeps(self, longest: float) -> int:
        """How many integration steps per tick keep each step at most ``longest`` seconds."""
        return max(1, int(np.ceil(self.dt / longest - 1e-9)))
