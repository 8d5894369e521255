"""City sites: traffic counters, air quality monitors, noise meters and streetlights.

Traffic demand drives the street: morning (08:00) and evening (17:30) rush hours on
weekdays, a late and flat peak at weekends, almost nothing at night. Counts follow demand,
speed falls as the road fills, NO2 and PM2.5 follow traffic with a lag of about 45 minutes
on top of a slowly varying background, noise rises with traffic. Streetlights switch on at
dusk and off at dawn through a photocell with hysteresis, dimmed to 60 % between 01:00
and 05:00.
"""

from __future__ import annotations

import numpy as np

from simulators.devices import GENERIC, DeviceModel, Env, Environment
from simulators.signals import (
    HOUR,
    MINUTE,
    Array,
    between_hours,
    bump,
    daylight,
    ema_path,
    hour_of_day,
    ou_path,
    sun_elevation,
    weekday,
)

MIX = (
    "traffic_counter",
    "air_quality",
    "streetlight",
    "noise_meter",
    "traffic_counter",
    "streetlight",
    "air_quality",
    "traffic_counter",
    "noise_meter",
    "streetlight",
)


def traffic_demand(t: Array) -> Array:
    """Share of a road's capacity in use, about 1 at the weekday morning rush, 0.05 at night."""
    h = hour_of_day(t)
    daytime = 1.0 / (1.0 + np.exp(-2.0 * (h - 6.5))) / (1.0 + np.exp(1.5 * (h - 20.5)))
    workday = 0.05 + 0.6 * bump(t, 8.0, 1.1) + 0.5 * bump(t, 17.5, 1.4) + 0.35 * daytime
    weekend = 0.05 + 0.45 * bump(t, 13.5, 3.0) + 0.1 * daytime
    return np.where(weekday(t) >= 5, weekend, workday)


class CityEnvironment(Environment):
    def __init__(self, rng: np.random.Generator, dt: float, latitude: float = 45.0) -> None:
        super().__init__(rng, dt, latitude)
        self.busy, self.background, self.cloud = rng.standard_normal(3).tolist()
        self.lagged: float | None = None

    def block(self, t: Array) -> Env:
        z = self.rng.standard_normal((3, len(t)))
        busy = ou_path(self.busy, z[0], self.dt, 12 * HOUR)
        background = ou_path(self.background, z[1], self.dt, 18 * HOUR)
        cloud_x = ou_path(self.cloud, z[2], self.dt, 5 * HOUR)
        self.busy, self.background, self.cloud = (
            float(busy[-1]),
            float(background[-1]),
            float(cloud_x[-1]),
        )
        demand = traffic_demand(t) * np.exp(0.1 * busy)
        if self.lagged is None:
            self.lagged = float(demand[0])
        lagged = ema_path(self.lagged, demand, self.dt, 45 * MINUTE)
        self.lagged = float(lagged[-1])
        cloud = 1.0 / (1.0 + np.exp(-1.3 * cloud_x))
        return {
            "demand": demand,
            "lagged_demand": lagged,
            "background_pm": 6.0 + 5.0 * np.exp(0.6 * background),
            "light": daylight(sun_elevation(t, self.latitude)) * (1.0 - 0.7 * cloud),
            "dimmed": between_hours(t, 1.0, 5.0).astype(np.float64),
        }


class TrafficCounters(DeviceModel):
    kind_name = "traffic_counter"
    scales = {"vehicles": 5.0, "speed": 8.0}
    generic = {"vehicles": ("spike", "noise_burst"), "speed": GENERIC}
    events = ("accident",)

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.capacity = self.uniform(12.0, 50.0)  # vehicles per minute at full demand
        self.free_flow = self.uniform(40.0, 90.0)

    def block(self, t: Array, env: Env) -> Array:
        demand = env["demand"][:, None]
        vehicles = self.poisson(demand * self.capacity)
        z = self.normals(len(t), 1)[..., 0]
        speed = self.free_flow * (1.0 - 0.55 * np.minimum(demand, 1.2) ** 2.5) + 2.0 * z
        return np.stack([vehicles, np.maximum(speed, 3.0)], axis=-1)


class AirQualityMonitors(DeviceModel):
    kind_name = "air_quality"
    scales = {"pm25": 5.0, "no2": 10.0}
    generic = {"pm25": GENERIC, "no2": GENERIC}
    events = ("pollution_episode",)

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.pm_exposure = self.uniform(0.8, 1.25)
        self.no2_exposure = self.uniform(0.7, 1.3)

    def block(self, t: Array, env: Env) -> Array:
        z = self.normals(len(t), 2)
        lagged = env["lagged_demand"][:, None]
        pm25 = (env["background_pm"][:, None] + 14.0 * lagged) * self.pm_exposure
        no2 = (12.0 + 55.0 * lagged) * self.no2_exposure
        return np.stack([pm25 + 0.6 * z[..., 0], no2 + 1.2 * z[..., 1]], axis=-1)


class NoiseMeters(DeviceModel):
    kind_name = "noise_meter"
    scales = {"noise": 4.0}
    generic = {"noise": GENERIC}

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.proximity = self.uniform(0.3, 1.5)

    def block(self, t: Array, env: Env) -> Array:
        z = self.normals(len(t), 1)[..., 0]
        traffic = self.proximity * 10**6.8 * env["demand"][:, None] ** 1.5
        noise = 10.0 * np.log10(10**4.0 + traffic) + 1.5 * z
        return noise[..., None]


class Streetlights(DeviceModel):
    """A photocell switches the lamp on below 20 lx and off above 50 lx (hysteresis)."""

    kind_name = "streetlight"
    scales = {"power": 50.0, "ambient": 5_000.0}
    generic = {"power": ("spike",), "ambient": ("spike",)}

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.rated = self.uniform(40.0, 180.0)
        self.shade = self.uniform(0.5, 1.0)
        self.on: np.ndarray | None = None

    def block(self, t: Array, env: Env) -> Array:
        z = self.normals(len(t), 2)
        ambient = env["light"][:, None] * self.shade * (1.0 + 0.03 * z[..., 0])
        on = np.empty((len(t), self.n))
        state = ambient[0] < 35.0 if self.on is None else self.on
        for k in range(len(t)):
            state = np.where(ambient[k] < 20.0, True, np.where(ambient[k] > 50.0, False, state))
            on[k] = state
        self.on = state
        level = 1.0 - 0.4 * env["dimmed"][:, None]
        power = on * (self.rated * level + 0.4 * z[..., 1])
        return np.stack([power, ambient], axis=-1)
