"""The device kinds edgepipe knows: their domain, metrics, units, resolution and physical range.

One table shared by the simulators (what to generate), the validator (what to accept), data
selection (deadband defaults) and compression (the quantisation step, hence the error bound).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    resolution: float  # the sensor's real step; compression error is bounded by half of it
    low: float  # physical range: a value outside is rejected as out_of_range
    high: float


@dataclass(frozen=True, slots=True)
class DeviceKind:
    name: str
    domain: str
    metrics: dict[str, Metric]


def _kind(name: str, domain: str, *metrics: Metric) -> DeviceKind:
    return DeviceKind(name, domain, {m.name: m for m in metrics})


KINDS: dict[str, DeviceKind] = {
    k.name: k
    for k in (
        # farm
        _kind(
            "soil_probe",
            "farm",
            Metric("moisture", "%", 0.1, 0.0, 100.0),
            Metric("soil_temp", "°C", 0.1, -30.0, 70.0),
        ),
        _kind(
            "weather_station",
            "farm",
            Metric("air_temp", "°C", 0.1, -50.0, 60.0),
            Metric("humidity", "%", 0.5, 0.0, 100.0),
            Metric("light", "lx", 10.0, 0.0, 150_000.0),
            Metric("wind", "m/s", 0.1, 0.0, 80.0),
        ),
        _kind("irrigation_valve", "farm", Metric("flow", "L/min", 0.1, 0.0, 1000.0)),
        # retail
        _kind(
            "fridge",
            "retail",
            Metric("temp", "°C", 0.1, -40.0, 50.0),
            Metric("door", "open", 1.0, 0.0, 1.0),
            Metric("power", "W", 1.0, 0.0, 5000.0),
        ),
        _kind(
            "freezer",
            "retail",
            Metric("temp", "°C", 0.1, -40.0, 50.0),
            Metric("door", "open", 1.0, 0.0, 1.0),
            Metric("power", "W", 1.0, 0.0, 5000.0),
        ),
        _kind("smart_shelf", "retail", Metric("stock", "items", 1.0, 0.0, 10_000.0)),
        _kind("footfall", "retail", Metric("visitors", "1/min", 1.0, 0.0, 10_000.0)),
        # city
        _kind(
            "traffic_counter",
            "city",
            Metric("vehicles", "1/min", 1.0, 0.0, 1000.0),
            Metric("speed", "km/h", 1.0, 0.0, 250.0),
        ),
        _kind(
            "air_quality",
            "city",
            Metric("pm25", "µg/m³", 0.1, 0.0, 2000.0),
            Metric("no2", "µg/m³", 0.1, 0.0, 2000.0),
        ),
        _kind("noise_meter", "city", Metric("noise", "dBA", 0.1, 0.0, 160.0)),
        _kind(
            "streetlight",
            "city",
            Metric("power", "W", 1.0, 0.0, 2000.0),
            Metric("ambient", "lx", 1.0, 0.0, 150_000.0),
        ),
        # replayed series (NAB and other recorded CSVs): any finite value
        _kind("replay", "any", Metric("value", "", 1e-6, -1e300, 1e300)),
    )
}

DOMAINS = ("farm", "retail", "city")

# (kind, metric) -> resolution: the quantisation step of every known series.
RESOLUTIONS: dict[tuple[str, str], float] = {
    (kind.name, metric.name): metric.resolution
    for kind in KINDS.values()
    for metric in kind.metrics.values()
}


def domain_of_site(site: str) -> str:
    """A site's domain is the word its name starts with: ``farm-2`` is a farm."""
    for domain in DOMAINS:
        if site.startswith(domain):
            return domain
    raise ValueError(f"site {site!r} does not start with one of {', '.join(DOMAINS)}")


def kinds_of_domain(domain: str) -> list[DeviceKind]:
    return [k for k in KINDS.values() if k.domain == domain]
