"""What a person reads of an alert: a stuck sensor says for how long; `edgepipe alerts` prints
one line per alert with the score once."""

from __future__ import annotations

import random

from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.point import Point
from pipeline.detect.stages import StageContext
from pipeline.detect.stuck import StuckWatch
from pipeline.protocol import Alert
from pipeline.protocol.causes import Cause
from pipeline.tail import format_alert

MINUTE_MS = 60_000
T0_MS = 1_795_737_600_000


def stuck_alert(stuck_minutes: int) -> tuple[Alert, int]:
    """A noisy temperature read every minute, then stuck on one value: (the raise, when it stuck)."""
    rng = random.Random(3)
    watch, policy = StuckWatch(), AlertPolicy("farm")
    key = ("fridge-1", "temp")
    ts = T0_MS
    values = [round(20.0 + rng.gauss(0.0, 0.5), 1) for _ in range(2000)]
    stuck_value = 20.0 if values[-1] != 20.0 else 20.1  # inside the range, a new run
    for x in values + [stuck_value] * stuck_minutes:
        ctx = StageContext("fridge-1", "fridge", "temp", x, ts, {"temp": x}, key)
        score, cause = watch.adjust_one(ctx, 0.0, Cause.ANOMALY)
        detail = watch.describe(ctx) if cause is Cause.STUCK else ""
        alert = policy.update_one(Point("fridge-1", "fridge", "temp", ts, 0, x, score), cause, detail)
        if alert is not None and alert.data.state == "raised":
            return alert, T0_MS + len(values) * MINUTE_MS
        ts += MINUTE_MS
    raise AssertionError("the stuck value raised no alert")


def test_a_stuck_alert_says_how_long_the_value_has_not_changed() -> None:
    alert, stuck_since = stuck_alert(stuck_minutes=120)
    minutes = (alert.data.reading_ts - stuck_since) // MINUTE_MS
    assert alert.data.reason.startswith(f"{Cause.STUCK}: value 20 unchanged for {minutes} min (")
    assert f"({minutes + 1} readings, usually at most " in alert.data.reason


def test_a_raised_reason_gives_the_threshold_not_the_score_again() -> None:
    policy = AlertPolicy("farm", raise_score=0.8)
    alert = policy.update_one(Point("d1", "fridge", "temp", T0_MS, 0, 9.5, 0.93))
    assert alert is not None
    assert alert.data.reason == "anomaly: score >= 0.8"


def test_an_alert_line_shows_each_field_once_in_order() -> None:
    alert, _ = stuck_alert(stuck_minutes=120)
    d = alert.data
    line = format_alert(alert)
    assert "\n" not in line
    fields = [alert.time, f"{d.site}/{d.device}", f"{d.metric}={d.value:g}", d.severity.upper(),
              d.state, f"score {d.score:.2f}", d.reason]
    positions = [line.index(f) for f in fields]
    assert positions == sorted(positions)
    assert line.count("score") == 1 + d.reason.count("score")  # the score once, as a field
    assert d.model_version not in line
