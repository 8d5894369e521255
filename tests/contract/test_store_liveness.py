"""Liveness in the store, on both backends: the dashboard tells online nodes from dead ones.

An edge's health is retained and its MQTT last will is the same message with ``offline``;
the cloud worker stamps the will when it arrives and stores it like any report, so the
newest report of each node is its liveness. Cloud workers file their own health under the
reserved site ``cloud``, which is not an edge site.
"""

from __future__ import annotations

import pytest

from pipeline.cloud.store import Store
from pipeline.protocol.messages import Health

T0 = 1_700_000_000_000


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def health(site: str, node: str, ts: int, status: str = "online") -> Health:
    return Health(v=1, site=site, node=node, ts=ts, status=status, counters={"received": 1})


def test_a_last_will_after_online_reports_marks_the_node_offline(store: Store) -> None:
    store.write_health(health("farm", "edge-farm", T0))
    store.write_health(health("farm", "edge-farm", T0 + 10_000))
    store.write_health(health("farm", "edge-farm", T0 + 12_000, "offline"))
    store.write_health(health("city", "edge-city", T0 + 11_000))

    latest = [(h.site, h.node, h.status, h.ts) for h in store.latest_health()]

    assert latest == [
        ("city", "edge-city", "online", T0 + 11_000),
        ("farm", "edge-farm", "offline", T0 + 12_000),
    ]


def test_a_node_back_online_after_its_will_is_online(store: Store) -> None:
    store.write_health(health("farm", "edge-farm", T0, "offline"))
    store.write_health(health("farm", "edge-farm", T0 + 5_000))

    assert [h.status for h in store.latest_health()] == ["online"]


def test_cloud_worker_health_is_kept_but_cloud_is_not_an_edge_site(store: Store) -> None:
    store.write_health(health("cloud", "edgepipe-cloud-1", T0))
    store.write_health(health("farm", "edge-farm", T0))

    assert [(h.site, h.node) for h in store.latest_health()] == [
        ("cloud", "edgepipe-cloud-1"),
        ("farm", "edge-farm"),
    ]
    assert store.sites() == ["farm"]
