"""The registry of domains: which environment a site has, its device mix and the model per kind.

A test checks that every device kind of the catalog (but ``replay``) has a model here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simulators import city, farm, retail
from simulators.devices import DeviceModel, Environment


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    environment: type[Environment]
    mix: tuple[str, ...]  # device kind by index in the site, repeating
    zone_of: Callable[[int], int]

    def kind_at(self, index: int) -> str:
        """The kind of the device at ``index``; fixed, so growing a site keeps existing ids."""
        return self.mix[index % len(self.mix)]


def _no_zone(index: int) -> int:
    return 0


MODELS: dict[str, type[DeviceModel]] = {
    m.kind_name: m
    for m in (
        farm.SoilProbes,
        farm.WeatherStations,
        farm.IrrigationValves,
        retail.Fridges,
        retail.Freezers,
        retail.SmartShelves,
        retail.FootfallCounters,
        city.TrafficCounters,
        city.AirQualityMonitors,
        city.NoiseMeters,
        city.Streetlights,
    )
}

DOMAINS: dict[str, Domain] = {
    "farm": Domain("farm", farm.FarmEnvironment, farm.MIX, farm.zone_of),
    "retail": Domain("retail", retail.RetailEnvironment, retail.MIX, _no_zone),
    "city": Domain("city", city.CityEnvironment, city.MIX, _no_zone),
}
