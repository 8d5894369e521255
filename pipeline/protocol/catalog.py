"""The device kinds edgepipe knows: their domain, metrics, units, resolution and physical range.

One table shared by the simulators (what to generate), the validator (what to accept), data
selection (deadband defaults) and compression (the quantisation step, hence the error bound).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    resolution: float  # the sensor's real step; compression error is bounded by half of it
    low: float  # physical range: a value outside is rejected as out_of_range
    high: float
    tolerance: float | None = None  # selection tolerance in the unit; None: N x resolution


@dataclass(frozen=True, slots=True)
class DeviceKind:
    name: str
    domain: str
    metrics: dict[str, Metric]

    def compatible_with(self, other: DeviceKind) -> bool:
        """Same metrics, units and resolutions: readings of both can share a series."""
        return self.metrics.keys() == other.metrics.keys() and all(
            (m.unit, m.resolution) == (other.metrics[n].unit, other.metrics[n].resolution)
            for n, m in self.metrics.items()
        )


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


class CatalogMetric(msgspec.Struct, frozen=True):
    unit: str
    resolution: float
    low: float
    high: float
    tolerance: float | None = None


class CatalogKind(msgspec.Struct, frozen=True):
    domain: str
    metrics: dict[str, CatalogMetric]


class CatalogMessage(msgspec.Struct, frozen=True):
    """A site's catalogue on the wire: retained on ``{root}/{site}/edge/catalog``."""

    v: int
    site: str
    fingerprint: str  # sha256 of the kinds, to tell a changed catalogue at a glance
    kinds: dict[str, CatalogKind]


@dataclass(frozen=True)
class Catalog:
    """The device kinds one edge node (or one site, seen from the cloud) knows.

    Built from the built-in kinds plus the ``[kinds.NAME]`` tables, which add kinds or
    replace a built-in one. It is passed to what reads kinds (validation, selection
    tolerances, aggregates' quantisation), never kept in a module global, so that two
    sites with different catalogues can live in one process (the cloud, the tests).

    >>> c = Catalog.builtin()
    >>> c.metric("fridge", "temp").resolution, c.metric("fridge", "nope")
    (0.1, None)
    """

    kinds: Mapping[str, DeviceKind]
    resolutions: Mapping[tuple[str, str], float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "resolutions",
            {(k.name, m.name): m.resolution for k in self.kinds.values() for m in k.metrics.values()},
        )

    @classmethod
    def builtin(cls) -> Catalog:
        return BUILTIN

    def with_kinds(self, kinds: Mapping[str, DeviceKind]) -> Catalog:
        """This catalogue with ``kinds`` added (same name: replaced); ``[kinds.NAME]`` in the config."""
        return type(self)({**self.kinds, **kinds}) if kinds else self

    def metric(self, kind: str, metric: str) -> Metric | None:
        found = self.kinds.get(kind)
        return found.metrics.get(metric) if found is not None else None

    def to_message(self, site: str, version: int = 1) -> CatalogMessage:
        kinds = {
            k.name: CatalogKind(
                k.domain,
                {m.name: CatalogMetric(m.unit, m.resolution, m.low, m.high, m.tolerance) for m in k.metrics.values()},
            )
            for k in self.kinds.values()
        }
        digest = hashlib.sha256(msgspec.json.encode(kinds, order="sorted")).hexdigest()
        return CatalogMessage(v=version, site=site, fingerprint=digest, kinds=kinds)

    @classmethod
    def from_message(cls, message: CatalogMessage) -> Catalog:
        """A site's catalogue as its edge published it (the cloud's and dashboard's view)."""
        return cls(
            {
                name: DeviceKind(
                    name,
                    k.domain,
                    {m: Metric(m, cm.unit, cm.resolution, cm.low, cm.high, cm.tolerance) for m, cm in k.metrics.items()},
                )
                for name, k in message.kinds.items()
            }
        )

    def conflicts_with(self, other: Catalog) -> list[str]:
        """Kinds both define incompatibly (other metrics, units or resolutions), sorted."""
        return sorted(
            name
            for name, kind in self.kinds.items()
            if name in other.kinds and not kind.compatible_with(other.kinds[name])
        )


BUILTIN = Catalog(KINDS)
