"""SwitchContext: a switch-on that the device's other metrics explain is not an alert.

A street lamp: ``power`` 0 W by day, 150 W from the moment its ``ambient`` sensor reads
dusk; the detector's score is given as the test says.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.detect.switching import SwitchContext
from pipeline.edge.node import EdgeNode
from pipeline.protocol import Reading

LAMP = "streetlight-0001"


def _evening(ctx: SwitchContext, dusk_lux: float, score: float = 0.95) -> float:  # 22 readings
    """Day then dusk: 20 daylight readings at 0 W, then the lamp lights at ``dusk_lux``; the switch-on's score."""
    for lux in range(5000, 1000, -200):
        readings = {"power": 0.0, "ambient": float(lux)}
        for metric in readings:
            ctx.cap_one(LAMP, "streetlight", readings, metric, 0.0)
        ctx.learn_one(LAMP, "streetlight", readings)
    lit = {"power": 150.0, "ambient": dusk_lux}
    out = ctx.cap_one(LAMP, "streetlight", lit, "power", score)
    ctx.cap_one(LAMP, "streetlight", lit, "ambient", 0.0)
    ctx.learn_one(LAMP, "streetlight", lit)
    night = {"power": 150.0, "ambient": 0.0}
    ctx.cap_one(LAMP, "streetlight", night, "power", 0.0)
    ctx.learn_one(LAMP, "streetlight", night)
    return out


def test_a_switch_on_at_the_usual_dusk_light_is_explained() -> None:
    ctx = SwitchContext(min_readings=1)
    _evening(ctx, 18.0)  # the first lighting teaches the range (0 to 150 W): no switch-on yet
    _evening(ctx, 18.0)
    _evening(ctx, 19.0)
    assert _evening(ctx, 18.0) == ctx.explained_cap
    assert ctx.explained == 1


def test_a_switch_on_in_daylight_keeps_its_score() -> None:
    ctx = SwitchContext(min_readings=1)
    for lux in (18.0, 18.0, 19.0):
        _evening(ctx, lux)
    assert _evening(ctx, 27_000.0) == 0.95


def test_a_switch_on_needs_enough_earlier_contexts() -> None:
    ctx = SwitchContext(agree=2, min_readings=1)
    _evening(ctx, 18.0)
    _evening(ctx, 18.0)
    assert _evening(ctx, 18.0) == 0.95  # only one earlier switch-on to agree with


def test_a_score_below_the_raise_score_is_left_alone() -> None:
    ctx = SwitchContext(min_readings=1)
    for _ in range(3):
        _evening(ctx, 18.0)
    assert _evening(ctx, 18.0, score=0.6) == 0.6


def test_a_drop_to_the_floor_is_never_explained() -> None:
    ctx = SwitchContext(min_readings=1)
    for _ in range(3):
        _evening(ctx, 18.0)
    dark = {"power": 0.0, "ambient": 0.0}  # the lamp fails at night
    assert ctx.cap_one(LAMP, "streetlight", dark, "power", 0.99) == 0.99


def test_a_kind_with_one_metric_is_not_tracked() -> None:
    ctx = SwitchContext(min_readings=1)
    for i in range(10):
        ctx.learn_one("valve-1", "irrigation_valve", {"flow": float(i % 2) * 50.0})
        assert ctx.cap_one("valve-1", "irrigation_valve", {"flow": 50.0}, "flow", 0.99) == 0.99
    assert repr(ctx) == "SwitchContext(devices=0, explained=0)"


def test_switch_ons_count_only_after_min_readings() -> None:
    ctx = SwitchContext(min_readings=10_000)
    for lux in (18.0, 18.0, 19.0):
        _evening(ctx, lux)
    assert _evening(ctx, 18.0) == 0.95


def test_agree_must_fit_in_what_is_remembered() -> None:
    with pytest.raises(ValueError, match="agree"):
        SwitchContext(remember=2, agree=3)


def _lamp_days(days: int, early_minutes: int) -> list[Reading]:
    """A lamp lit from 20:00 (ambient under 20 lx) to 04:00 at 148-152 W, one reading a
    minute; the last evening is cloudy and dusk comes ``early_minutes`` sooner."""
    out = []
    t0 = 1_800_000_000_000 - 1_800_000_000_000 % 86_400_000  # a UTC midnight
    for i in range(days * 1440):
        day, minute = divmod(i, 1440)
        dusk = 20 * 60 - (early_minutes if day == days - 1 else 0)
        if minute < 4 * 60 or minute >= dusk:
            ambient, power = 18.0 if minute == dusk else 2.0, 150.0 + (i * 7 % 5) - 2.0  # a little noise
        else:  # day: light rises to noon and falls towards dusk
            ambient, power = 40.0 + 30_000.0 * math.sin(math.pi * (minute - 240) / (dusk - 240)), 0.0
        out.append(Reading(1, LAMP, "streetlight", t0 + i * 60_000, i, {"power": power, "ambient": round(ambient)}))
    return out


@pytest.mark.parametrize(("explains", "raised"), [(True, 0), (False, 1)])
def test_the_node_does_not_alert_on_a_lamp_lit_early_by_a_cloudy_dusk(
    tmp_path: Path, explains: bool, raised: int
) -> None:
    settings = load_settings(overrides={"edge.state_dir": str(tmp_path), "mqtt.url": "mqtt://127.0.0.1:1"})
    node = EdgeNode(settings)
    if not explains:
        scorer = node.detection.scorer
        never = SwitchContext(remember=99, agree=99)  # never enough contexts
        scorer.stages = tuple(never if isinstance(s, SwitchContext) else s for s in scorer.stages)
    try:
        readings = _lamp_days(3, early_minutes=45)
        last_evening = readings[2 * 1440 + 19 * 60 :]
        for journal_id, r in enumerate(readings[: 2 * 1440 + 19 * 60], start=1):
            node.process(r, journal_id)
        before = node.counters.alerts["raised"]
        for journal_id, r in enumerate(last_evening, start=len(readings)):
            node.process(r, journal_id)
        assert node.counters.alerts["raised"] - before == raised
    finally:
        node.queue.close()
