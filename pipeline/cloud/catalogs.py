"""SiteCatalogs: each site's device kinds, as its edge published them, and their conflicts.

Pure (no MQTT, no store): the cloud worker feeds it every ``{site}/edge/catalog`` message.
A kind that two sites define incompatibly (other metrics, units or resolutions), or that a
site redefines so, is reported, never silently mixed: the store keeps each site's
catalogue apart, and readers (the dashboard) take a site's units from its own catalogue.

>>> from pipeline.protocol.catalog import Catalog
>>> cats = SiteCatalogs()
>>> cats.learn_one(Catalog.builtin().to_message("farm"))
[]
>>> cats.units("farm", "fridge", "temp")
'°C'
"""

from __future__ import annotations

from collections import Counter

from pipeline.protocol.catalog import Catalog, CatalogMessage, DeviceKind


class SiteCatalogs:
    def __init__(self) -> None:
        self.by_site: dict[str, Catalog] = {}
        self.conflicts: Counter[str] = Counter()  # by kind
        self.first: dict[str, DeviceKind] = dict(Catalog.builtin().kinds)  # kind -> first definition

    def learn_one(self, message: CatalogMessage) -> list[tuple[str, str]]:
        """Keep ``message`` as its site's catalogue; (kind, other site) pairs in conflict.

        The other site is the same site when a kind was redefined incompatibly since the
        catalogue it published before.
        """
        catalog = Catalog.from_message(message)
        found = [
            (kind, site)
            for site, other in sorted(self.by_site.items())
            for kind in catalog.conflicts_with(other)
        ]
        for kind, _ in found:
            self.conflicts[kind] += 1
        self.by_site[message.site] = catalog
        for name, defined in catalog.kinds.items():
            self.first.setdefault(name, defined)
        return found

    def kind_of(self, site: str, name: str) -> DeviceKind | None:
        """The kind as ``site`` defines it, if it is compatible with its first definition.

        Why: a merged model (one per kind name, across sites) must only fold deltas of one
        definition. A site whose catalogue is not known yet is taken to use the built-ins.
        None means refuse (the model delta stays unacknowledged, so the edge sends it again:
        once the site's catalogue arrives, a configured kind is accepted).
        """
        catalog = self.by_site.get(site, Catalog.builtin())
        kind = catalog.kinds.get(name)
        first = self.first.get(name)
        if kind is None or (first is not None and not kind.compatible_with(first)):
            return None
        return kind

    def units(self, site: str, kind: str, metric: str) -> str | None:
        """The unit of ``metric`` at ``site``, or None when the site's catalogue lacks it."""
        catalog = self.by_site.get(site)
        found = catalog.metric(kind, metric) if catalog is not None else None
        return found.unit if found is not None else None
