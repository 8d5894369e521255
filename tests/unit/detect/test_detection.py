"""``build``'s cross-device stages follow ``[[links]]``: a user's own kinds keep leak alerts.

One simulated farm (tests/renamed_farm.py: the farm of tests/integration/test_fleet_alerts.py,
two days, leaks only) feeds several detections made by ``build``, each as the node makes it:

* the built-in kinds with the default link (what every farm runs today);
* the same readings renamed to ``valve_v2.water_flow`` and ``probe_v2.vwc`` (kinds defined
  with the built-ins' ranges), with a ``waters`` link between them: the same leak alerts;
* the renamed readings with no link for them (the default one only): no leak alert at all,
  so the first comparison cannot pass by accident;
* both farms at one site with both links (two farms' kinds side by side): each keeps its own;
* one of the farm's two valves renamed, both valve kinds linked to the same probes (two valve
  kinds watering one probe kind): the built-in farm's leak alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from renamed_farm import KINDS_V2, LINK_V2, METRICS, farm_options, rename, renamed

from pipeline.config import AlertSettings, KindSettings, Settings, catalog_of, links_of
from pipeline.detect.detection import DEFAULT_LINKS, Detection, Link, build
from pipeline.protocol import Reading, decode
from pipeline.protocol.catalog import Catalog
from pipeline.protocol.causes import Cause
from pipeline.protocol.topics import TopicKind, Topics
from simulators import run

TOPICS = Topics()
SECOND_VALVE = "irrigation_valve-0002"  # the valve of the farm's second zone
Leak = tuple[str, str, int]  # (device, metric, reading ts) of a raised leak alert


def _catalog_v2() -> Catalog:
    return catalog_of(
        Settings(kinds={k: KindSettings.model_validate(v) for k, v in KINDS_V2.items()})
    )


def _link_v2() -> Link:
    settings = Settings(
        kinds={k: KindSettings.model_validate(v) for k, v in KINDS_V2.items()}, links=[LINK_V2]
    )
    return links_of(settings)[0]


@dataclass
class Watched:
    """One detection and the leak alerts it raised."""

    detection: Detection
    leaks: list[Leak] = field(default_factory=list)

    def observe(self, reading: Reading) -> None:
        for point, cause, alert in self.detection.observe(reading)[0]:
            if alert is not None and alert.data.state == "raised" and cause == Cause.LEAK:
                self.leaks.append((point.device, point.metric, point.ts))


@dataclass
class Farm:
    builtin: Watched
    renamed_linked: Watched
    renamed_unlinked: Watched
    both: Watched
    two_valve_kinds: Watched


def _detection(links: Sequence[Link], catalog: Catalog | None = None) -> Watched:
    options: dict[str, Any] = {} if catalog is None else {"catalog": catalog}
    return Watched(build("farm-links", AlertSettings(), links=links, **options))


class _Feed:
    """A simulator publisher: every reading to each detection, renamed where it asks."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if TOPICS.parse(topic).kind is not TopicKind.READING:
            return
        reading = decode(payload, Reading)
        v2 = rename(reading)
        self.farm.builtin.observe(reading)
        self.farm.renamed_linked.observe(v2)
        self.farm.renamed_unlinked.observe(v2)
        self.farm.both.observe(reading)
        # the second farm's valves and probes (its weather station is the first's)
        if v2 is not reading:
            self.farm.both.observe(v2)
        self.farm.two_valve_kinds.observe(v2 if reading.device == SECOND_VALVE else reading)


@pytest.fixture(scope="module")
def farm() -> Farm:
    catalog = _catalog_v2()
    f = Farm(
        builtin=_detection(DEFAULT_LINKS),
        renamed_linked=_detection([_link_v2()], catalog),
        renamed_unlinked=_detection(DEFAULT_LINKS, catalog),
        both=_detection([*DEFAULT_LINKS, _link_v2()], catalog),
        two_valve_kinds=_detection(
            [
                *DEFAULT_LINKS,
                Link("waters", ("valve_v2", "water_flow"), ("soil_probe", "moisture")),
            ],
            catalog,
        ),
    )
    run(farm_options(), _Feed(f))
    return f


def _as_v2(leaks: list[Leak]) -> list[Leak]:
    return [(renamed(d), METRICS.get(("soil_probe", m), m), ts) for d, m, ts in leaks]


def test_the_built_in_farm_raises_leak_alerts_on_its_probes(farm: Farm) -> None:
    assert len(farm.builtin.leaks) >= 4
    assert {(d.split("-")[0], m) for d, m, _ in farm.builtin.leaks} == {("soil_probe", "moisture")}


def test_renamed_kinds_with_a_link_raise_the_same_leak_alerts(farm: Farm) -> None:
    assert farm.renamed_linked.leaks == _as_v2(farm.builtin.leaks)


def test_renamed_kinds_without_a_link_raise_no_leak_alert(farm: Farm) -> None:
    assert farm.renamed_unlinked.leaks == []


def test_two_links_at_one_site_each_keep_their_farms_leak_alerts(farm: Farm) -> None:
    expected = farm.builtin.leaks + _as_v2(farm.builtin.leaks)
    assert sorted(farm.both.leaks, key=lambda leak: (leak[2], leak[0])) == sorted(
        expected, key=lambda leak: (leak[2], leak[0])
    )


def test_two_valve_kinds_watering_one_probe_kind_keep_the_leak_alerts(farm: Farm) -> None:
    assert farm.two_valve_kinds.leaks == farm.builtin.leaks


def test_one_cross_device_stage_per_link_and_none_without_links() -> None:
    def kinds(links: Sequence[Link]) -> list[tuple[str, ...]]:
        return [
            s.ordered_kinds()
            for s in build("s", AlertSettings(), links=links).scorer.stages
            if s.ordered_kinds()
        ]

    assert kinds(DEFAULT_LINKS) == [("irrigation_valve", "soil_probe")]
    assert kinds([*DEFAULT_LINKS, _link_v2()]) == [
        ("irrigation_valve", "soil_probe"),
        ("valve_v2", "probe_v2"),
    ]
    assert kinds([]) == []
