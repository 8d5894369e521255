"""Health -> Prometheus families: every key exposed, named by the conventions, labelled."""

from __future__ import annotations

import socket
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.edge.health import NodeCounters
from pipeline.errors import ConfigError
from pipeline.metrics import (
    ANALYST,
    CLOUD,
    EDGE,
    Exposition,
    Figures,
    FiguresCollector,
    Snapshot,
    serve_metrics,
)
from pipeline.protocol import Health

GAUGES = {"readings_per_s": 12.5, "queue_items": 3.0, "selection_ratio.moisture": 0.25, "cpu_s": 1.0}


def _node_health() -> Health:
    c = NodeCounters(received=10, accepted=6, duplicates=1)
    c.dead_letters = Counter({"bad_json": 2, "kind_changed": 1})
    c.alerts = Counter({"raised": 2, "cleared": 1})
    return c.health("farm", "edge-farm", 0, gauges=GAUGES)


def _scrape(health: Figures, exposition: Exposition) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(FiguresCollector(lambda: health, exposition, {"site": "farm"}))
    text = generate_latest(registry).decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def test_the_edge_counters_are_prometheus_counters_with_their_totals() -> None:
    samples = _scrape(_node_health(), EDGE)
    assert samples["edgepipe_readings_received_total"] == 10
    assert samples["edgepipe_readings_accepted_total"] == 6
    assert samples["edgepipe_readings_duplicate_total"] == 1
    assert samples['edgepipe_dead_letters_total{reason="bad_json"}'] == 2
    assert samples['edgepipe_dead_letters_total{reason="kind_changed"}'] == 1
    assert samples['edgepipe_alerts_total{state="raised"}'] == 2


def test_the_gauges_keep_their_values_and_a_metric_label() -> None:
    samples = _scrape(_node_health(), EDGE)
    assert samples["edgepipe_readings_per_second"] == 12.5
    assert samples["edgepipe_uplink_backlog_items"] == 3
    assert samples['edgepipe_selection_ratio{metric="moisture"}'] == 0.25
    assert samples['edgepipe_info{site="farm"}'] == 1


def test_sums_and_process_figures_are_left_to_their_own_families() -> None:
    names = {k.partition("{")[0] for k in _scrape(_node_health(), EDGE)}
    assert "edgepipe_dead_lettered_total" not in names and "edgepipe_cpu_s" not in names


def test_every_health_key_of_the_node_is_exposed_somewhere() -> None:
    """A counter added to health later shows up in /metrics without touching the table."""
    health = _node_health()
    health.counters["brand_new"] = 7
    health.counters["new_group.x"] = 4
    samples = _scrape(health, EDGE)
    assert samples["edgepipe_brand_new_total"] == 7
    assert samples['edgepipe_new_group_total{key="x"}'] == 4


def test_the_table_names_follow_the_conventions() -> None:
    for exposition in (EDGE, CLOUD, ANALYST):
        for key, family in exposition.families.items():
            assert family.name.startswith(exposition.prefix), key
            assert not family.name.endswith("_total"), f"{key}: the client adds _total to counters"
            assert family.name == family.name.lower() and " " not in family.name
            assert key.endswith(".*") == bool(family.labels), key


def test_metrics_are_off_when_the_port_is_zero() -> None:
    assert serve_metrics(_node_health, EDGE, {}, "127.0.0.1", 0, "edge") is None


def test_a_host_that_is_not_an_address_names_the_host_setting() -> None:
    with pytest.raises(ConfigError, match=r"^config error: cloud\.metrics_host = 'no\.such\.host\.invalid'"):
        serve_metrics(_node_health, CLOUD, {}, "no.such.host.invalid", 9, "cloud")


def test_a_port_in_use_names_the_port_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"^config error: edge\.metrics_port = .*cannot listen"):
            serve_metrics(_node_health, EDGE, {}, "127.0.0.1", port, "edge")


def test_a_family_with_several_labels_takes_one_dotted_part_for_each() -> None:
    snapshot = Snapshot(
        counters={"alerts.peers.warning.raised": 2, "alerts.horizon.critical.cleared": 1, "aggregates.farm-2": 9},
        gauges={"lag_seconds.farm-2": 4.5},
    )
    samples = _scrape(snapshot, ANALYST)
    assert samples['edgepipe_analyst_alerts_total{detector="peers",severity="warning",state="raised"}'] == 2
    assert samples['edgepipe_analyst_alerts_total{detector="horizon",severity="critical",state="cleared"}'] == 1
    assert samples['edgepipe_analyst_aggregates_total{site="farm-2"}'] == 9
    assert samples['edgepipe_analyst_lag_seconds{site="farm-2"}'] == 4.5


def test_a_key_with_fewer_parts_than_labels_leaves_the_rest_empty() -> None:
    samples = _scrape(Snapshot(counters={"alerts.peers": 1}, gauges={}), ANALYST)
    assert samples['edgepipe_analyst_alerts_total{detector="peers",severity="",state=""}'] == 1
