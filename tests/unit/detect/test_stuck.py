"""Stuck sensors, dropouts and drift: the edge's rules beyond an unusual value.

Why each: a stuck sensor reads plausible values (no residual is large), a silent device
sends nothing to score, and a level shift that persists is the new normal, whose alert
must clear instead of staying open for ever.
"""

from __future__ import annotations

import random

from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.point import Point
from pipeline.detect.registry import edge_detector
from pipeline.detect.silence import SILENCE_CHECK_MS, SilenceWatch, dropout_alerts, heard_again
from pipeline.detect.stages import StageContext
from pipeline.detect.stuck import StuckRun, StuckWatch
from pipeline.protocol import Reading
from pipeline.protocol.causes import Cause

MINUTE = 60_000
T0 = 1_700_006_400_000


def noisy(n: int, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [round(20.0 + rng.gauss(0.0, 0.5), 1) for _ in range(n)]


def test_a_noisy_series_stuck_on_one_value_scores_high() -> None:
    run = StuckRun()
    for x in noisy(2000):
        run.learn_one(x)
    scores = []
    for _ in range(30):
        scores.append(run.score_one(20.3))
        run.learn_one(20.3)
    assert max(scores[:2]) == 0.0  # a repeat or two is ordinary
    assert scores[-1] > 0.9


def test_long_runs_that_are_usual_for_the_series_are_not_stuck() -> None:
    """A door reads 0 for hours: runs that long are this series' normal."""
    run = StuckRun()
    values = ([0.0] * 300 + [1.0] + [2.0]) * 10
    best = 0.0
    for x in values:
        best = max(best, run.score_one(x))
        run.learn_one(x)
    assert best < 0.8


def test_a_run_at_the_lowest_value_seen_is_a_floor_not_a_stuck_sensor() -> None:
    run = StuckRun()
    for x in noisy(2000):
        run.learn_one(x)
    low = min(noisy(2000))
    for _ in range(200):
        run.learn_one(low)
    assert run.score_one(low) == 0.0


def test_stuck_watch_names_the_cause_of_the_higher_score() -> None:
    watch = StuckWatch()
    key = ("d", "temp")
    for i, x in enumerate(noisy(2000)):
        watch.adjust_one(StageContext("d", "fridge", "temp", x, T0 + i * MINUTE, {}, key), 0.1, Cause.ANOMALY)
    stuck = [StageContext("d", "fridge", "temp", 20.3, T0 + (2000 + i) * MINUTE, {}, key) for i in range(30)]
    causes = [watch.adjust_one(ctx, 0.1, Cause.ANOMALY)[1] for ctx in stuck]
    assert (causes[0], causes[-1]) == (Cause.ANOMALY, Cause.STUCK)


def _every_minute(watch: SilenceWatch, device: str, until: int) -> None:
    for t in range(T0, until + 1, MINUTE):
        watch.learn_one(device, t, "fridge")


def test_a_device_silent_for_three_usual_intervals_is_reported_once() -> None:
    watch = SilenceWatch()
    _every_minute(watch, "quiet", T0 + 60 * MINUTE)
    _every_minute(watch, "busy", T0 + 70 * MINUTE)
    silent = watch.due(T0 + 70 * MINUTE)
    # judged at the first checkpoint (a multiple of 15 s of event time) past three usual intervals
    last = T0 + 60 * MINUTE
    at = (last + 3 * MINUTE) // SILENCE_CHECK_MS * SILENCE_CHECK_MS + SILENCE_CHECK_MS
    assert [(s.device, s.at, s.silent_ms) for s in silent] == [("quiet", at, at - last)]
    assert watch.due(T0 + 71 * MINUTE) == []


def test_a_device_is_not_watched_before_it_has_a_usual_interval() -> None:
    watch = SilenceWatch(min_gaps=10)
    _every_minute(watch, "new", T0 + 5 * MINUTE)
    assert watch.due(T0 + 100 * MINUTE) == []


def test_a_dropout_raises_with_its_reason_and_clears_when_heard_again() -> None:
    policy, watch = AlertPolicy("retail"), SilenceWatch()
    _every_minute(watch, "fridge-0001", T0 + 60 * MINUTE)
    _every_minute(watch, "fridge-0002", T0 + 70 * MINUTE)
    [raised] = dropout_alerts(policy, watch)
    assert (raised.data.device, raised.data.metric, raised.data.state) == ("fridge-0001", "_device", "raised")
    at = (T0 + 63 * MINUTE) // SILENCE_CHECK_MS * SILENCE_CHECK_MS + SILENCE_CHECK_MS
    assert raised.data.reading_ts == at  # the checkpoint it was silent at, not when it was found out
    assert raised.data.reason.startswith(f"dropout: silent for {(at - T0 - 60 * MINUTE) // 1000} s")
    back = Reading(1, "fridge-0001", "fridge", T0 + 71 * MINUTE, 71, {"temp": 4.0})
    assert watch.learn_one(back.device, back.ts, back.kind)
    cleared = heard_again(policy, back)
    assert cleared is not None and cleared.data.state == "cleared"
    assert cleared.data.alert_id == raised.data.alert_id


def test_a_persisting_level_shift_alerts_once_then_stops_alerting() -> None:
    """Drift handling: the shifted level becomes the new normal and the alert clears."""
    detector, policy = edge_detector(), AlertPolicy("farm", raise_score=0.8, clear_score=0.5, raise_after=1)
    values = noisy(1500) + [v + 8.0 for v in noisy(1500, seed=4)]
    states = []
    for i, x in enumerate(values):
        ts = T0 + i * MINUTE
        score = detector.score_value(x, ts)
        detector.learn_value(x, ts)
        alert = policy.update_one(Point("d", "soil_probe", "soil_temp", ts, i, x, score))
        if alert is not None and i >= 1500:
            states.append(alert.data.state)
    assert states == ["raised", "cleared"]


def test_an_earlier_stuck_episode_does_not_hide_the_next_one() -> None:
    rng = random.Random(3)
    run = StuckRun()

    def noisy(n: int) -> None:
        for _ in range(n):
            run.learn_one(round(20.0 + rng.gauss(0.0, 0.5), 1))

    noisy(2000)
    for _ in range(40):  # stuck once, for 40 readings
        run.learn_one(20.4)
    noisy(2000)
    scores = []
    for _ in range(25):  # stuck again, shorter than the first time
        scores.append(run.score_one(20.2))
        run.learn_one(20.2)
    assert scores[-1] > 0.8
