"""The cloud's view of each site's catalogue: kept per site, incompatible kinds reported."""

from __future__ import annotations

from pipeline.cloud.catalogs import SiteCatalogs
from pipeline.protocol.catalog import KINDS, Catalog, DeviceKind, Metric


def _with(kind: DeviceKind) -> Catalog:
    return Catalog({**KINDS, kind.name: kind})


COLD = DeviceKind("cold_room", "retail", {"temp": Metric("temp", "°C", 0.1, -40, 30)})
COLD_F = DeviceKind("cold_room", "retail", {"temp": Metric("temp", "°F", 0.1, -40, 86)})


def test_compatible_catalogues_raise_nothing() -> None:
    cats = SiteCatalogs()
    assert cats.learn_one(_with(COLD).to_message("shop-1")) == []
    assert cats.learn_one(_with(COLD).to_message("shop-2")) == []
    assert cats.units("shop-2", "cold_room", "temp") == "°C"


def test_a_kind_redefined_incompatibly_is_reported_and_each_site_keeps_its_own() -> None:
    cats = SiteCatalogs()
    cats.learn_one(_with(COLD).to_message("shop-1"))
    assert cats.learn_one(_with(COLD_F).to_message("shop-2")) == [("cold_room", "shop-1")]
    assert cats.conflicts == {"cold_room": 1}
    assert (cats.units("shop-1", "cold_room", "temp"), cats.units("shop-2", "cold_room", "temp")) == ("°C", "°F")


def test_a_site_changing_its_own_kind_incompatibly_is_reported() -> None:
    cats = SiteCatalogs()
    cats.learn_one(_with(COLD).to_message("shop-1"))
    assert cats.learn_one(_with(COLD_F).to_message("shop-1")) == [("cold_room", "shop-1")]


def test_the_wire_form_round_trips() -> None:
    catalog = _with(COLD)
    again = Catalog.from_message(catalog.to_message("s"))
    assert again.kinds == catalog.kinds
    assert catalog.to_message("s").fingerprint == again.to_message("s").fingerprint
    assert catalog.to_message("s").fingerprint != Catalog.builtin().to_message("s").fingerprint


def test_model_deltas_of_a_kind_follow_the_sites_catalogue_and_never_mix_definitions() -> None:
    cats = SiteCatalogs()
    assert cats.kind_of("shop-1", "fridge") == KINDS["fridge"]  # unknown site: the built-ins
    assert cats.kind_of("shop-1", "cold_room") is None
    cats.learn_one(_with(COLD).to_message("shop-1"))
    assert cats.kind_of("shop-1", "cold_room") == COLD
    cats.learn_one(_with(COLD_F).to_message("shop-2"))
    assert cats.kind_of("shop-2", "cold_room") is None  # incompatible with the first definition
    assert cats.kind_of("shop-1", "cold_room") == COLD
