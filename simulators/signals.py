"""Pure building blocks for simulated signals: calendar rhythms, the sun, random processes.

Every function takes arrays of Unix seconds and returns arrays, so that a whole block of ticks
is computed in one numpy pass. Nothing here reads a clock or owns randomness: generators are
passed in, which keeps every stream reproducible from its seed. Local time is UTC (the sites
sit on the Greenwich meridian): a day's rhythm at 08:00 means 08:00 UTC.
"""

from __future__ import annotations

import zlib

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

MINUTE = 60.0
HOUR = 3_600.0
DAY = 86_400.0
WEEK = 7 * DAY

# Keys of the random streams; every key has the same length because numpy's SeedSequence
# treats trailing zero words as absent ([1, 2] and [1, 2, 0] give the same stream).
SIGNAL, ANOMALY, BAD, ENVIRONMENT, PLANNED = 0, 1, 2, 3, 4  # PLANNED: SimOptions.inject


def generator(seed: int, site: str, stream: int, index: int = 0) -> np.random.Generator:
    """A PCG64 generator for one stream of one device (or of a site's environment).

    Keyed by (seed, site, stream, index), so that adding a site or a device elsewhere leaves
    this stream unchanged.
    """
    key = [seed, zlib.crc32(site.encode()), stream, index]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


def hour_of_day(t: Array) -> Array:
    """Hours since midnight, in [0, 24)."""
    return (t % DAY) / HOUR


def weekday(t: Array) -> NDArray[np.int64]:
    """Day of the week, Monday = 0 (1970-01-01 was a Thursday)."""
    return (np.floor_divide(t, DAY).astype(np.int64) + 3) % 7


def day_of_year(t: Array) -> Array:
    """Fractional day of the year (a 365.25-day year is close enough for seasons)."""
    return (t / DAY) % 365.25


def seasonal(t: Array, mean: float, amplitude: float, peak_day: float = 200.0) -> Array:
    """A yearly cosine peaking on ``peak_day`` (about 19 July in the northern summer)."""
    return mean + amplitude * np.cos(2 * np.pi * (day_of_year(t) - peak_day) / 365.25)


def daily_wave(t: Array, peak_hour: float) -> Array:
    """A daily cosine in [-1, 1] with its maximum at ``peak_hour``."""
    return np.cos(2 * np.pi * (hour_of_day(t) - peak_hour) / 24.0)


def bump(t: Array, centre_hour: float, width_hours: float) -> Array:
    """A Gaussian bump in [0, 1] around ``centre_hour`` of each day (rush hours, lunch)."""
    d = (hour_of_day(t) - centre_hour + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width_hours) ** 2)


def between_hours(t: Array, open_hour: float, close_hour: float) -> NDArray[np.bool_]:
    """True when the hour of the day lies in [open_hour, close_hour)."""
    h = hour_of_day(t)
    return (h >= open_hour) & (h < close_hour)


def sun_elevation(t: Array, latitude: float = 45.0) -> Array:
    """Solar elevation in degrees at longitude 0, from the declination and the hour angle."""
    declination = np.radians(-23.44) * np.cos(2 * np.pi * (day_of_year(t) + 10.0) / 365.25)
    hour_angle = np.radians(15.0 * (hour_of_day(t) - 12.0))
    lat = np.radians(latitude)
    sin_e = np.sin(lat) * np.sin(declination) + np.cos(lat) * np.cos(declination) * np.cos(
        hour_angle
    )
    return np.asarray(np.degrees(np.arcsin(np.clip(sin_e, -1.0, 1.0))), dtype=np.float64)


def daylight(elevation: Array) -> Array:
    """Clear-sky illuminance in lux: about 400 lx at sunrise, 0 below civil twilight (-6°)."""
    e = np.asarray(elevation, dtype=np.float64)
    day = 400.0 + 120_000.0 * np.sin(np.radians(np.clip(e, 0.0, 90.0))) ** 1.2
    twilight = 400.0 * (np.clip(e + 6.0, 0.0, 6.0) / 6.0) ** 3
    return np.where(e > 0.0, day, twilight)


def ou_path(x0: float, z: Array, dt: float, tau: float) -> Array:
    """An Ornstein-Uhlenbeck path with unit stationary variance, sampled every ``dt`` seconds.

    ``z`` are standard normal innovations, one per step; the exact discretisation keeps the
    process stationary whatever the sampling rate, so weather fronts look the same at 1 Hz and
    at one reading per hour. Returns the values after each step.
    """
    a = float(np.exp(-dt / tau))
    s = float(np.sqrt(1.0 - a * a))
    out = np.empty(len(z))
    x = x0
    for k, zk in enumerate(z.tolist()):
        x = a * x + s * zk
        out[k] = x
    return out


def ema_path(x0: float, target: Array, dt: float, tau: float) -> Array:
    """First-order lag of ``target`` (soil temperature lagging the air, pollution lagging traffic)."""
    a = float(np.exp(-dt / tau))
    out = np.empty(len(target))
    x = x0
    for k, v in enumerate(target.tolist()):
        x = a * x + (1.0 - a) * v
        out[k] = x
    return out


def quantise(x: Array, resolution: float, low: float, high: float) -> Array:
    """Clip to the physical range and round to the sensor's step.

    Dividing the rounded count by an integer (10 for a 0.1 step) yields the double nearest to
    the decimal, so JSON shows ``23.4`` rather than ``23.400000000000002``. Adding 0.0 turns
    ``-0.0`` into ``0.0``.
    """
    x = np.clip(x, low, high)
    inverse = 1.0 / resolution
    if resolution < 1.0 and abs(inverse - round(inverse)) < 1e-9:
        q = np.round(x * round(inverse)) / round(inverse)
    else:
        q = np.round(x / resolution) * resolution
    return np.clip(q, low, high) + 0.0
