"""The analyst's bench part: edge and edge + cloud from one simulation, matched alike."""

from __future__ import annotations

from pipeline.bench import PART_KEYS
from pipeline.bench.analyst import bench_analyst
from pipeline.bench.quality import SimQualityPlan


def test_edge_and_edge_cloud_come_from_the_same_run_and_the_union_never_loses_an_event() -> None:
    figures = bench_analyst(SimQualityPlan.tiny())

    assert set(PART_KEYS["analyst"]) <= set(figures)
    details = figures["quality.sim.analyst_details"]
    assert details["edge_cloud"]["events"] == details["edge"]["events"]  # the same labels
    assert details["edge_cloud"]["detected"] >= details["edge"]["detected"]
    assert details["edge_cloud"]["false_alarms"] >= details["edge"]["false_alarms"]
    assert figures["quality.sim.recall_edge_cloud"] >= figures["quality.sim.recall_edge"]
    assert details["analyst"]["aggregates"] > 0 and details["analyst"]["edge_alerts"] > 0
