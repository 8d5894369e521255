"""IrrigationZones: links learned from scheduled watering, a leak's soak scored on linked probes.

A small synthetic farm, one reading a minute: valve A waters probes a1-a3 at 04:00 and 18:00,
valve B waters b1-b2 at 06:00 and 20:00, probe c is watered by neither. Moisture dries by
0.01 % a minute, rises by 0.4 % a minute while its zone waters, noise 0.15, rounded to 0.1.
The valve's detector score is given as the test says (1.0: the detector flagged the flow).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from pipeline.detect.irrigation import IrrigationZones
from pipeline.detect.stages import StageContext
from pipeline.protocol.causes import Cause

MINUTE_MS = 60_000
DAY_MS = 86_400_000
PROBES = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "c": None}
SCHEDULE = {"A": (4 * 60, 18 * 60), "B": (6 * 60, 20 * 60)}  # opening, minute of the day
WATERING_MIN = 25
NOMINAL = 50.0


@dataclass
class Leak:
    valve: str
    start_min: int  # minutes from the start of the run
    minutes: int
    flow: float
    wets: tuple[str, ...]  # probes the water reaches
    score: float = 1.0  # the valve detector's score while it leaks


@dataclass
class Farm:
    zones: IrrigationZones = field(default_factory=IrrigationZones)
    moisture: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PROBES, 30.0))
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(3))
    minute: int = 0
    scores: dict[str, list[float]] = field(default_factory=dict)  # probe -> soak score per minute

    def run(self, minutes: int, leaks: tuple[Leak, ...] = (), extra: dict[str, tuple[int, int]] | None = None) -> None:
        """Advance ``minutes``; ``extra`` opens a valve at full flow: valve -> (start, minutes)."""
        for _ in range(minutes):
            m, ts = self.minute, self.minute * MINUTE_MS
            day_min = m % 1440
            flows: dict[str, float] = {}
            flagged: dict[str, float] = {}
            for valve, openings in SCHEDULE.items():
                watering = any(o <= day_min < o + WATERING_MIN for o in openings)
                flows[valve] = NOMINAL if watering else 0.0
            for valve, (start, length) in (extra or {}).items():
                if start <= m < start + length:
                    flows[valve], flagged[valve] = NOMINAL, 1.0
            wet: dict[str, float] = {}
            for leak in leaks:
                if leak.start_min <= m < leak.start_min + leak.minutes:
                    flows[leak.valve] += leak.flow
                    flagged[leak.valve] = leak.score
                    for p in leak.wets:
                        wet[p] = wet.get(p, 0.0) + leak.flow * 0.005
            for valve, flow in flows.items():
                value = round(flow * (1 + 0.01 * self.rng.standard_normal()), 1) if flow else 0.0
                score = flagged.get(valve, 0.0)
                self.zones.score_one(valve, "irrigation_valve", "flow", value, ts)
                self.zones.learn_one(valve, "irrigation_valve", "flow", value, ts, score)
            for probe, zone in PROBES.items():
                rise = 0.4 if zone is not None and flows[zone] >= NOMINAL else 0.0
                self.moisture[probe] += rise - 0.01 + wet.get(probe, 0.0)
                value = round(self.moisture[probe] + 0.15 * self.rng.standard_normal(), 1)
                s = self.zones.score_one(probe, "soil_probe", "moisture", value, ts)
                self.scores.setdefault(probe, []).append(s)
                self.zones.learn_one(probe, "soil_probe", "moisture", value, ts)
            self.minute += 1

    def peak(self, probe: str, since_min: int) -> float:
        return max(self.scores[probe][since_min:], default=0.0)


@pytest.fixture
def farm() -> Farm:
    f = Farm()
    f.run(2 * 1440)  # two days of scheduled watering
    return f


def test_probes_are_linked_to_the_valve_that_waters_them(farm: Farm) -> None:
    assert farm.zones.links("A") == {"a1", "a2", "a3"}
    assert farm.zones.links("B") == {"b1", "b2"}


def test_a_leak_raises_the_soak_score_of_the_probes_it_wets(farm: Farm) -> None:
    start = farm.minute + 11 * 60  # 11:00 on day three: A never opens then
    farm.run(12 * 60, (Leak("A", start, 60, flow=8.0, wets=("a1", "a2", "a3")),))
    for probe in ("a1", "a2", "a3"):
        assert farm.peak(probe, start) >= 0.8, probe


def test_a_leak_leaves_probes_of_other_zones_and_unwatered_probes_alone(farm: Farm) -> None:
    start = farm.minute + 11 * 60
    farm.run(12 * 60, (Leak("A", start, 60, flow=8.0, wets=("a1", "a2", "a3")),))
    for probe in ("b1", "b2", "c"):
        assert farm.peak(probe, start) == 0.0, probe


def test_a_linked_probe_the_water_does_not_reach_stays_quiet(farm: Farm) -> None:
    start = farm.minute + 11 * 60
    farm.run(12 * 60, (Leak("A", start, 90, flow=8.0, wets=("a1", "a2")),))
    assert farm.peak("a1", start) >= 0.8
    assert farm.peak("a3", start) < 0.5


def test_a_leak_the_valve_detector_did_not_flag_scores_nothing(farm: Farm) -> None:
    start = farm.minute + 11 * 60
    farm.run(12 * 60, (Leak("A", start, 60, flow=8.0, wets=("a1", "a2", "a3"), score=0.1),))
    assert farm.peak("a1", start) == 0.0


def test_a_full_flow_opening_at_a_new_time_is_watering_not_a_leak(farm: Farm) -> None:
    start = farm.minute + 11 * 60  # flagged by the valve's detector, but at the valve's full flow
    farm.run(12 * 60, extra={"A": (start, WATERING_MIN)})
    assert farm.peak("a1", start) == 0.0


def test_flow_at_the_usual_opening_time_is_scheduled(farm: Farm) -> None:
    start = farm.minute + 4 * 60 - 10  # ten minutes before A's 04:00 watering
    farm.run(6 * 60, (Leak("A", start, 8, flow=8.0, wets=("a1", "a2", "a3")),))
    assert farm.peak("a1", start) == 0.0


def test_soak_scores_stop_after_the_horizon() -> None:
    f = Farm(zones=IrrigationZones(horizon_s=1800))
    f.run(2 * 1440)
    start = f.minute + 11 * 60
    f.run(12 * 60, (Leak("A", start, 120, flow=8.0, wets=("a1",)),))
    assert f.peak("a1", start) >= 0.8
    assert f.peak("a1", start + 31) == 0.0


def test_no_soak_score_before_the_valve_has_a_day_of_history() -> None:
    f = Farm()
    f.run(11 * 60)
    f.run(12 * 60, (Leak("A", f.minute, 60, flow=8.0, wets=("a1", "a2", "a3")),))
    assert max(max(s) for s in f.scores.values()) == 0.0


def test_other_kinds_score_nothing_and_are_not_learned() -> None:
    z = IrrigationZones()
    for i in range(100):
        z.learn_one("fridge-1", "fridge", "temp", 4.0 + i % 3, i * MINUTE_MS, 1.0)
    assert z.score_one("fridge-1", "fridge", "temp", 40.0, 100 * MINUTE_MS) == 0.0
    assert repr(z) == "IrrigationZones(valves=0, probes=0)"


def _ctx(device: str, kind: str, metric: str, value: float, ts: int) -> StageContext:
    return StageContext(device, kind, metric, value, ts, {metric: value}, (device, metric))


def test_a_flagged_reading_of_scheduled_watering_at_the_usual_flow_is_capped(farm: Farm) -> None:
    ts = (farm.minute - farm.minute % 1440 + 1440 + 4 * 60 + 5) * MINUTE_MS  # 04:05 tomorrow: A waters
    farm.zones.learn_one("A", "irrigation_valve", "flow", 50.0, ts - MINUTE_MS, 0.0)
    score, cause = farm.zones.adjust_one(_ctx("A", "irrigation_valve", "flow", 51.0, ts), 0.95, Cause.ANOMALY)
    assert (score, cause) == (farm.zones.scheduled_cap, "anomaly")


def test_a_spike_during_scheduled_watering_keeps_its_score(farm: Farm) -> None:
    ts = (farm.minute - farm.minute % 1440 + 1440 + 4 * 60 + 5) * MINUTE_MS
    farm.zones.learn_one("A", "irrigation_valve", "flow", 50.0, ts - MINUTE_MS, 0.0)
    assert farm.zones.adjust_one(_ctx("A", "irrigation_valve", "flow", 180.0, ts), 0.99, Cause.ANOMALY) == (0.99, "anomaly")


def test_a_soaking_probe_takes_the_leak_cause(farm: Farm) -> None:
    start = farm.minute + 11 * 60
    farm.run(11 * 60 + 40, (Leak("A", start, 60, flow=8.0, wets=("a1", "a2", "a3")),))
    ts = farm.minute * MINUTE_MS
    score, cause = farm.zones.adjust_one(_ctx("a1", "soil_probe", "moisture", farm.moisture["a1"] + 0.5, ts), 0.1, Cause.ANOMALY)
    assert cause == "leak" and score >= 0.8


def test_an_unscheduled_opening_watches_only_the_probes_its_valve_waters(farm: Farm) -> None:
    start = farm.minute + 11 * 60
    farm.run(11 * 60 + 5, (Leak("A", start, 60, flow=8.0, wets=("a1",)),))
    assert farm.zones.watching() == {"A": {"a1", "a2", "a3"}}


def test_nothing_is_watched_once_the_horizon_has_passed(farm: Farm) -> None:
    start = farm.minute + 11 * 60
    farm.run(11 * 60 + 5 + 91, (Leak("A", start, 60, flow=8.0, wets=("a1",)),))
    assert farm.zones.watching() == {}


def _valve_reading(farm: Farm, minute: float, flow: float, score: float = 0.1) -> tuple[float, str]:
    """The valve A's reading ``minute`` minutes into tomorrow, through ``adjust_one`` (the node's path)."""
    ts = int((farm.minute - farm.minute % 1440 + 1440 + minute) * MINUTE_MS)
    return farm.zones.adjust_one(_ctx("A", "irrigation_valve", "flow", flow, ts), score, Cause.ANOMALY)


def test_a_partial_flow_at_an_unusual_time_is_a_leak_of_the_valve_itself(farm: Farm) -> None:
    _valve_reading(farm, 11 * 60 - 1, 0.0)
    assert _valve_reading(farm, 11 * 60, 8.0) == (farm.zones.valve_score, "leak")  # a minute's flow
    assert farm.zones.watching() == {"A": {"a1", "a2", "a3"}}  # and its probes' soak is scored


def test_at_one_hertz_a_partial_flow_is_a_leak_after_a_minute_of_it(farm: Farm) -> None:
    _valve_reading(farm, 11 * 60 - 1, 0.0)
    _valve_reading(farm, 11 * 60 - 1 / 60, 0.0)  # a reading a second
    causes = [_valve_reading(farm, 11 * 60 + s / 60, 8.0)[1] for s in range(75)]
    assert causes.index("leak") == 59 and set(causes[59:]) == {"leak"}  # 59 s since it opened, and its own second


def test_a_full_flow_or_a_usual_time_is_not_a_leak_of_the_valve(farm: Farm) -> None:
    _valve_reading(farm, 11 * 60 - 1, 0.0)
    assert _valve_reading(farm, 11 * 60, NOMINAL) == (0.1, "anomaly")  # watering at a new time
    _valve_reading(farm, 4 * 60 - 6, 0.0)
    assert _valve_reading(farm, 4 * 60 - 5, 8.0) == (0.1, "anomaly")  # five minutes before the usual 04:00
