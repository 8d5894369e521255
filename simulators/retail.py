"""Retail sites: fridges, freezers, smart shelves and footfall counters.

The store's activity drives everything: it is 0 outside opening hours (Mon-Sat 08-21,
Sun 10-18), peaks at lunch and after work, and is highest on Saturdays. Footfall counts
follow it; shelves sell in proportion to it and are restocked every morning at 06:30 (and
topped up at 14:00 when low); customers open fridge and freezer doors in proportion to it,
which warms the cabinet until the thermostat's compressor catches up.
"""

from __future__ import annotations

import numpy as np

from simulators.devices import GENERIC, DeviceModel, Env, Environment
from simulators.signals import (
    DAY,
    HOUR,
    Array,
    between_hours,
    bump,
    ou_path,
    weekday,
)

MIX = (
    "footfall",
    "fridge",
    "smart_shelf",
    "freezer",
    "smart_shelf",
    "fridge",
    "smart_shelf",
    "freezer",
    "fridge",
    "smart_shelf",
)

# Monday .. Sunday
WEEKDAY_FACTOR = np.array([0.8, 0.8, 0.85, 0.9, 1.1, 1.35, 0.7])
RESTOCK_HOUR = 6.5
TOP_UP_HOUR = 14.0


def opening(t: Array) -> np.ndarray:
    """True while the store is open: Mon-Sat 08:00-21:00, Sunday 10:00-18:00."""
    sunday = weekday(t) == 6
    return np.where(sunday, between_hours(t, 10.0, 18.0), between_hours(t, 8.0, 21.0))


class RetailEnvironment(Environment):
    def __init__(self, rng: np.random.Generator, dt: float, latitude: float = 45.0) -> None:
        super().__init__(rng, dt, latitude)
        self.busy = float(rng.standard_normal())

    def block(self, t: Array) -> Env:
        busy = ou_path(self.busy, self.rng.standard_normal(len(t)), self.dt, DAY)
        self.busy = float(busy[-1])
        open_ = opening(t)
        shape = 0.35 + 0.45 * bump(t, 12.5, 1.2) + 0.6 * bump(t, 17.5, 1.5)
        activity = open_ * WEEKDAY_FACTOR[weekday(t)] * shape * np.exp(0.08 * busy)
        return {
            "open": open_.astype(np.float64),
            "activity": activity,
            "store_temp": 19.5 + 1.5 * open_ + 0.8 * activity,
        }


class FootfallCounters(DeviceModel):
    """Visitors per minute through one entrance: Poisson around the store's activity."""

    kind_name = "footfall"
    scales = {"visitors": 5.0}
    generic = {"visitors": ("spike", "level_shift", "noise_burst")}

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.peak = self.uniform(6.0, 30.0)

    def block(self, t: Array, env: Env) -> Array:
        visitors = self.poisson(env["activity"][:, None] * self.peak)
        return visitors[..., None]


class SmartShelves(DeviceModel):
    """Stock falls with sales, is refilled to capacity at 06:30 and topped up at 14:00 if low."""

    kind_name = "smart_shelf"
    scales = {"stock": 10.0}
    generic = {"stock": ("spike", "dip", "level_shift", "noise_burst")}
    events = ("theft",)

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.capacity = np.round(self.uniform(60.0, 240.0))
        self.popularity = self.uniform(0.02, 0.12)  # items per minute at full activity
        self.stock = np.round(self.capacity * self.uniform(0.5, 1.0))

    def block(self, t: Array, env: Env) -> Array:
        sales = self.poisson(env["activity"][:, None] * self.popularity * (self.dt / 60.0))
        restock = _crossed(t, self.dt, RESTOCK_HOUR)
        top_up = _crossed(t, self.dt, TOP_UP_HOUR)
        stock = np.empty((len(t), self.n))
        restocked = np.zeros((len(t), self.n), dtype=bool)
        s = self.stock
        for k in range(len(t)):
            s = np.maximum(s - sales[k], 0.0)
            refill = restock[k] | (top_up[k] & (s < 0.4 * self.capacity))
            if refill.any():
                s = np.where(refill, self.capacity, s)
                restocked[k] = refill
            stock[k] = s
        self.stock = s
        self.restocked = restocked
        return stock[..., None]


def _crossed(t: Array, dt: float, hour: float) -> np.ndarray:
    """(ticks, 1) bool: the daily ``hour`` fell in the interval (t - dt, t]."""
    day = np.floor((t - hour * HOUR) / DAY)
    before = np.floor((t - dt - hour * HOUR) / DAY)
    return (day > before)[:, None]


class ColdCabinets(DeviceModel):
    """Thermostat with hysteresis: the compressor (power) runs until the cabinet is cold enough.

    Warm air leaks in through the walls, and much faster while a customer holds the door
    open; doors open at random in proportion to the store's activity. Integrated in steps of
    at most 30 s so that the thermostat cycles the same whatever the reading rate.
    """

    setpoint: float
    band: float
    rated: tuple[float, float]
    leak_hours: tuple[float, float]
    cooling_per_min: tuple[float, float]
    doors_per_hour: tuple[float, float]
    scales = {"temp": 1.0, "door": 1.0, "power": 50.0}
    generic = {"temp": GENERIC, "power": ("spike", "dip", "stuck")}
    events = ("door_open",)
    door_minutes = 30.0  # time constant of warming with the door open
    light_watts = 8.0

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.on_at = self.setpoint + self.band
        self.off_at = self.setpoint - self.band
        self.rated_power = self.uniform(*self.rated)
        self.standby = self.uniform(4.0, 9.0)
        self.leak = 1.0 / (self.uniform(*self.leak_hours) * HOUR)
        self.cooling = self.uniform(*self.cooling_per_min) / 60.0
        self.door_rate = self.uniform(*self.doors_per_hour) / HOUR
        self.temp = self.uniform(self.off_at, self.on_at)
        self.compressor = (self.uniform(0.0, 1.0) < 0.35).astype(np.float64)
        self.open_until = np.full(self.n, -np.inf)

    def block(self, t: Array, env: Env) -> Array:
        steps = self.substeps(30.0)
        h = self.dt / steps
        u = self.uniforms(len(t), steps, 3)
        z = self.normals(len(t), 2)
        temp = np.empty((len(t), self.n))
        door = np.empty((len(t), self.n))
        power = np.empty((len(t), self.n))
        T, comp, until = self.temp, self.compressor, self.open_until
        door_leak = 1.0 / (self.door_minutes * 60.0)
        for k in range(len(t)):
            ambient = env["store_temp"][k]
            arrivals = self.door_rate * env["activity"][k] * h
            for s in range(steps):
                now = t[k] - self.dt + (s + 1) * h
                opened = u[k, :, s, 0] < arrivals
                # arrived somewhere in the last step, held open for 4 to 25 s
                held = now - h * u[k, :, s, 1] + 4.0 + 21.0 * u[k, :, s, 2]
                until = np.where(opened, held, until)
                is_open = now < until
                T = T + h * (
                    (ambient - T) * (self.leak + is_open * door_leak) - comp * self.cooling
                )
                comp = np.where(T >= self.on_at, 1.0, np.where(T <= self.off_at, 0.0, comp))
            temp[k] = T
            door[k] = is_open
            power[k] = comp * self.rated_power + self.standby + is_open * self.light_watts
        self.temp, self.compressor, self.open_until = T, comp, until
        temp = temp + 0.05 * z[..., 0]
        power = power * (1.0 + 0.01 * z[..., 1])
        return np.stack([temp, door, power], axis=-1)


class Fridges(ColdCabinets):
    kind_name = "fridge"
    setpoint, band = 4.0, 1.0
    rated = (150.0, 320.0)
    leak_hours = (3.0, 5.0)
    cooling_per_min = (0.15, 0.25)
    doors_per_hour = (10.0, 30.0)


class Freezers(ColdCabinets):
    kind_name = "freezer"
    scales = {"temp": 1.5, "door": 1.0, "power": 80.0}
    setpoint, band = -19.0, 1.5
    rated = (300.0, 650.0)
    leak_hours = (5.0, 8.0)
    cooling_per_min = (0.25, 0.4)
    doors_per_hour = (4.0, 12.0)
