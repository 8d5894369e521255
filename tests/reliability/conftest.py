"""Fixtures of the failure tests: a site's whole pipeline on a private broker.

``stack()`` starts a Mosquitto of its own (``mosquitto_factory``, so a test may kill it), an
edge node and a cloud worker with a SQLite store, all on free loopback ports and in
``tmp_path``. Every service is stopped by its own PID at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from edgekit import Stack, settings_for

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import Store, open_store
from pipeline.edge.node import EdgeNode
from pipeline.services import Mosquitto


@pytest.fixture
def stack(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """``stack(broker=None, edge_url=None, start=True, **settings)`` -> a started Stack."""
    stores: list[Store] = []

    def make(
        broker: Mosquitto | None = None, edge_url: str | None = None, start: bool = True, **extra: Any
    ) -> Stack:
        broker = broker or mosquitto_factory()
        site = f"retail-{uuid.uuid4().hex[:6]}"
        cloud_settings = settings_for(broker.url, tmp_path, site, **extra)
        settings = settings_for(edge_url or broker.url, tmp_path, site, **extra)
        store = open_store(cloud_settings.store.url)
        stores.append(store)
        node, worker = EdgeNode(settings), IngestWorker(cloud_settings, store)
        if start:
            worker.start(timeout=5)
            node.start(timeout=5)
        return Stack(site, broker, settings, cloud_settings, store, node, worker)

    yield make
    for store in stores:
        store.close()
