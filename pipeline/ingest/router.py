"""IngestRouter: which ``[[ingest]]`` entry a message belongs to, by its topic.

Entries are tried in configuration order; the first whose pattern matches wins (as in
Telegraf, where each mqtt_consumer has its topics and one parser). Native readings are
recognised by their topic prefix first, so the common case costs one ``startswith``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.ingest.base import MappedAdapter
from pipeline.ingest.registry import ADAPTERS, NATIVE
from pipeline.protocol.catalog import BUILTIN, Catalog
from pipeline.protocol.topics import Topics

if TYPE_CHECKING:
    from pipeline.config import IngestSettings


class IngestRouter:
    """The node's subscriptions and, per topic, the adapter to decode it with.

    >>> r = IngestRouter([], site="farm")
    >>> r.native, r.subscriptions()
    (True, ['edgepipe/v1/farm/dev/+'])
    """

    def __init__(
        self,
        entries: Sequence[IngestSettings],
        site: str,
        topics: Topics = Topics(),
        catalog: Catalog = BUILTIN,
    ) -> None:
        self.site = site
        self.topics = topics
        self.native = not entries or any(e.format == NATIVE for e in entries)
        self.native_prefix = f"{topics.root}/{site}/dev/"
        self.adapters: list[MappedAdapter] = [
            ADAPTERS[e.format](e, site, catalog) for e in entries if e.format != NATIVE
        ]

    def __repr__(self) -> str:
        return f"IngestRouter(native={self.native}, adapters={self.adapters!r})"

    @property
    def foreign(self) -> bool:
        return bool(self.adapters)

    def subscriptions(self) -> list[str]:
        filters = [self.topics.readings(self.site)] if self.native else []
        for adapter in self.adapters:
            topic_filter = adapter.subscription()
            if topic_filter not in filters:
                filters.append(topic_filter)
        return filters

    def is_native(self, topic: str) -> bool:
        return self.native and topic.startswith(self.native_prefix)

    def route(self, topic: str) -> MappedAdapter | None:
        """The first foreign adapter whose pattern matches ``topic``, if any."""
        for adapter in self.adapters:
            if adapter.captured(topic) is not None:
                return adapter
        return None
