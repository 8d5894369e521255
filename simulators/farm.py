"""Farm sites: soil probes, weather stations and irrigation valves.

The site's weather is shared: a slow front (days) moves air temperature and humidity
together and brings clouds; light follows the sun through the clouds; wind is gusty. Each
irrigation zone waters twice a day at staggered times; the zone's valve reads the flow and
its soil probes see moisture rise, then drain and dry out with evaporation (faster in sun
and heat). Soil temperature lags the air by hours.

Devices come in blocks of ten, two zones per block (``MIX``): a weather station, then for
each zone soil probes and the zone's valve.
"""

from __future__ import annotations

import numpy as np

from simulators.devices import GENERIC, DeviceModel, Env, Environment
from simulators.signals import (
    DAY,
    HOUR,
    MINUTE,
    Array,
    daily_wave,
    daylight,
    ema_path,
    ou_path,
    seasonal,
    sun_elevation,
)

MIX = (
    "weather_station",
    "soil_probe",
    "soil_probe",
    "soil_probe",
    "irrigation_valve",
    "soil_probe",
    "soil_probe",
    "soil_probe",
    "soil_probe",
    "irrigation_valve",
)

IRRIGATION_MINUTES = 25.0


def zone_of(index: int) -> int:
    """Irrigation zone of the device at ``index`` in its site: two zones per ten devices."""
    return 2 * (index // 10) + (0 if index % 10 < 5 else 1)


def irrigating(t: Array, zone: np.ndarray) -> np.ndarray:
    """True while ``zone`` waters: 04:00 and 18:00, shifted by half an hour per zone (mod 6)."""
    offset = 0.5 * (zone % 6) * HOUR
    since = (t - offset) % DAY
    length = IRRIGATION_MINUTES * MINUTE
    morning = (since >= 4 * HOUR) & (since < 4 * HOUR + length)
    evening = (since >= 18 * HOUR) & (since < 18 * HOUR + length)
    return morning | evening


class FarmEnvironment(Environment):
    def __init__(self, rng: np.random.Generator, dt: float, latitude: float = 45.0) -> None:
        super().__init__(rng, dt, latitude)
        self.front, self.cloud, self.gust = rng.standard_normal(3).tolist()
        self.soil: float | None = None

    def block(self, t: Array) -> Env:
        z = self.rng.standard_normal((3, len(t)))
        front = ou_path(self.front, z[0], self.dt, 1.5 * DAY)
        cloud_x = ou_path(self.cloud, z[1], self.dt, 5 * HOUR)
        gust = ou_path(self.gust, z[2], self.dt, 3 * HOUR)
        self.front, self.cloud, self.gust = float(front[-1]), float(cloud_x[-1]), float(gust[-1])

        cloud = 1.0 / (1.0 + np.exp(-(1.3 * cloud_x + 0.8 * front)))
        swing = 5.0 * (1.0 - 0.5 * cloud) * daily_wave(t, 15.0)
        air = seasonal(t, 11.0, 9.0) + swing + 3.5 * front
        humidity = np.clip(70.0 - 2.5 * swing + 9.0 * front + 15.0 * (cloud - 0.5), 15.0, 100.0)
        light = daylight(sun_elevation(t, self.latitude)) * (1.0 - 0.75 * cloud)
        wind = 3.0 * np.exp(0.45 * gust + 0.2 * front)
        if self.soil is None:
            self.soil = float(seasonal(t[:1], 11.0, 9.0)[0])
        soil = ema_path(self.soil, air, self.dt, 10 * HOUR)
        self.soil = float(soil[-1])
        # evaporation, in moisture % per hour: sun and warmth dry the soil
        evaporation = (0.15 + 0.85 * light / 100_000.0) * np.clip((air + 5.0) / 30.0, 0.1, 1.5)
        return {
            "air_temp": air,
            "humidity": humidity,
            "light": light,
            "wind": wind,
            "soil_temp": soil,
            "evaporation": evaporation,
        }


class SoilProbes(DeviceModel):
    """Moisture rises while the zone irrigates, drains above field capacity, and evaporates."""

    kind_name = "soil_probe"
    scales = {"moisture": 3.0, "soil_temp": 1.5}
    generic = {"moisture": GENERIC, "soil_temp": GENERIC}

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.field_capacity = self.uniform(30.0, 40.0)
        self.wilting = self.uniform(8.0, 14.0)
        self.gain = self.uniform(20.0, 35.0)  # % per hour while irrigating
        self.drying = self.uniform(0.4, 0.8)
        self.depth_offset = self.normal(0.8)
        self.moisture = self.uniform(22.0, 34.0)

    def block(self, t: Array, env: Env) -> Array:
        steps = self.substeps(MINUTE)
        h = self.dt / steps / HOUR
        moisture = np.empty((len(t), self.n))
        m = self.moisture
        span = self.field_capacity - self.wilting
        # the time at the end of each integration step, shaped (ticks, steps, devices)
        ts = t[:, None] - self.dt + (np.arange(steps) + 1.0) * (self.dt / steps)
        watered = irrigating(ts[..., None], self.zones) * self.gain
        for k in range(len(t)):
            evaporation = env["evaporation"][k] * self.drying
            for s in range(steps):
                water = watered[k, s]
                drain = np.maximum(m - self.field_capacity, 0.0) / 4.0
                dry = evaporation * np.clip((m - self.wilting) / span, 0.0, 1.0)
                m = np.clip(m + h * (water - drain - dry), 0.0, 100.0)
            moisture[k] = m
        self.moisture = m
        z = self.normals(len(t), 2)
        soil_temp = env["soil_temp"][:, None] + self.depth_offset + 0.05 * z[..., 1]
        return np.stack([moisture + 0.15 * z[..., 0], soil_temp], axis=-1)


class WeatherStations(DeviceModel):
    kind_name = "weather_station"
    scales = {"air_temp": 2.0, "humidity": 6.0, "light": 10_000.0, "wind": 2.0}
    generic = {
        "air_temp": GENERIC,
        "humidity": GENERIC,
        "wind": ("spike", "level_shift", "stuck", "noise_burst"),
    }

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.temp_offset = self.normal(0.4)
        self.humidity_offset = self.normal(1.5)
        self.shade = self.uniform(0.9, 1.05)
        self.exposure = self.uniform(0.7, 1.3)

    def block(self, t: Array, env: Env) -> Array:
        z = self.normals(len(t), 4)
        air = env["air_temp"][:, None] + self.temp_offset + 0.1 * z[..., 0]
        humidity = env["humidity"][:, None] + self.humidity_offset + 0.6 * z[..., 1]
        light = env["light"][:, None] * self.shade * (1.0 + 0.02 * z[..., 2])
        wind = env["wind"][:, None] * self.exposure * np.exp(0.25 * z[..., 3])
        return np.stack([air, np.clip(humidity, 5.0, 100.0), light, wind], axis=-1)


class IrrigationValves(DeviceModel):
    """Flow is the zone's nominal flow while it irrigates, exactly 0 otherwise."""

    kind_name = "irrigation_valve"
    scales = {"flow": 20.0}
    generic = {"flow": ("spike",)}
    events = ("irrigation_leak",)

    def __init__(self, rngs: list[np.random.Generator], zones: list[int], dt: float) -> None:
        super().__init__(rngs, zones, dt)
        self.nominal = self.uniform(20.0, 80.0)

    def block(self, t: Array, env: Env) -> Array:
        z = self.normals(len(t), 1)[..., 0]
        on = irrigating(t[:, None], self.zones[None, :])
        flow = on * self.nominal * (1.0 + 0.015 * z)
        return flow[..., None]
