"""``edge.detect``: the switch between a detecting node and a selecting-only one."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from pipeline.config import load_settings
from pipeline.edge.node import EdgeNode
from pipeline.protocol import Reading

T0 = 1_800_000_000_000
NOW = time.time_ns() // 1_000_000


def _spiky_readings() -> list[Reading]:
    steady = [
        Reading(1, "soil_probe-0001", "soil_probe", T0 + i * 1000, i, {"moisture": 30.0 + (i % 3) * 0.1})
        for i in range(150)
    ]
    return [*steady, Reading(1, "soil_probe-0001", "soil_probe", T0 + 150_000, 150, {"moisture": 90.0})]


def _node(tmp_path: Path, detect: bool) -> EdgeNode:
    settings = load_settings(
        overrides={"edge.state_dir": str(tmp_path), "edge.detect": detect, "mqtt.url": "mqtt://127.0.0.1:1"}
    )
    return EdgeNode(settings)


@pytest.mark.parametrize(("detect", "alerts"), [(True, 1), (False, 0)])
def test_a_spike_raises_an_alert_only_when_detection_is_on(tmp_path: Path, detect: bool, alerts: int) -> None:
    node = _node(tmp_path, detect)
    try:
        for journal_id, r in enumerate(_spiky_readings(), start=1):
            node.process(r, journal_id)
        assert node.counters.alerts["raised"] == alerts
        assert bool(node.detectors) is detect
    finally:
        node.queue.close()


def test_without_detection_every_reading_still_reaches_the_aggregates(tmp_path: Path) -> None:
    node = _node(tmp_path, detect=False)
    try:
        for journal_id, r in enumerate(_spiky_readings(), start=1):
            node.process(r, journal_id)
        assert node.points_in["moisture"] == 151
        assert sum(a.count for a in node.aggregator.flush(T0 + 10**7, everything=True)) == 151
    finally:
        node.queue.close()


def test_a_failing_stage_is_counted_and_the_node_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.mqtt import Message

    node = _node(tmp_path, detect=True)
    calls = {"n": 0}
    original = node.aggregator.add_one

    def flaky(point, now):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in a stage")
        return original(point, now)

    monkeypatch.setattr(node.aggregator, "add_one", flaky)
    try:
        for i, r in enumerate(_spiky_readings()[:3]):
            topic = f"edgepipe/v1/farm/dev/{r.device}"
            node.dispatch(Message(topic, msgspec.json.encode(msgspec.structs.replace(r, ts=NOW - 3000 + i)), 1, False, i + 1))
        assert node.counters.handler_errors == 1
        assert node.counters.accepted == 3  # journaled before the stage failed, and the next two
        assert node.points_in["moisture"] == 3
    finally:
        node.queue.close()


def test_a_backlog_replayed_without_ticks_still_raises_dropouts(tmp_path: Path) -> None:
    """Five devices, one reading a minute for two hours, processed with no tick in between;
    one device is silent for 20 minutes in the middle: the node sees it on event time."""
    node = _node(tmp_path, detect=True)
    try:
        journal_id = 0
        for minute in range(120):
            for d in range(5):
                if d == 0 and 60 <= minute < 80:
                    continue
                journal_id += 1
                ts = T0 + minute * 60_000 + d
                node.process(Reading(1, f"noise_meter-{d:04d}", "noise_meter", ts, minute, {"noise": 55.0 + d}), journal_id)
        assert node.counters.alerts["raised"] == 1
        assert node.alerts.open_alerts == 0  # the device's next reading cleared it
    finally:
        node.queue.close()


# -- [[links]]: the cross-device stages the settings name ----------------------------------


def _linked_node(tmp_path: Path, links: list[dict[str, str]]) -> EdgeNode:
    config = tmp_path / "edgepipe.toml"
    config.write_text(
        ("links = []\n" if not links else "")
        + "".join(f'[[links]]\nrelation = "{x["relation"]}"\nsource = "{x["source"]}"\ntarget = "{x["target"]}"\n' for x in links)
        + "[kinds.valve_v2.metrics.water_flow]\nresolution = 0.1\nlow = 0.0\nhigh = 1000.0\n"
        + "[kinds.probe_v2.metrics.vwc]\nresolution = 0.1\nlow = 0.0\nhigh = 100.0\n"
    )
    settings = load_settings(config, overrides={"edge.state_dir": str(tmp_path), "mqtt.url": "mqtt://127.0.0.1:1"})
    return EdgeNode(settings)


V2_LINK = {"relation": "waters", "source": "valve_v2.water_flow", "target": "probe_v2.vwc"}
BUILTIN_LINK = {"relation": "waters", "source": "irrigation_valve.flow", "target": "soil_probe.moisture"}


@pytest.mark.parametrize(
    ("links", "held", "parts"),
    [
        pytest.param([BUILTIN_LINK], {"irrigation_valve", "soil_probe"}, ["zones"], id="built-in"),
        pytest.param([V2_LINK], {"valve_v2", "probe_v2"}, ["zones.valve_v2.water_flow>probe_v2.vwc"], id="configured"),
        pytest.param(
            [BUILTIN_LINK, V2_LINK],
            {"irrigation_valve", "soil_probe", "valve_v2", "probe_v2"},
            ["zones", "zones.valve_v2.water_flow>probe_v2.vwc"],
            id="both",
        ),
        pytest.param([], set(), [], id="none"),
    ],
)
def test_the_node_sequences_and_snapshots_the_kinds_of_each_link(
    tmp_path: Path, links: list[dict[str, str]], held: set[str], parts: list[str]
) -> None:
    node = _linked_node(tmp_path, links)
    try:
        assert node.sequencer.kinds == held
        assert sorted(p for p in node.learned_state() if p.startswith("zones")) == parts
    finally:
        node.queue.close()
