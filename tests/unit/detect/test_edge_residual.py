"""The edge detector's neighbouring bins and signed memory, daily long runs, warm-started scorers."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pytest

from pipeline.bench.quality import SimQualityPlan
from pipeline.detect.edge_residual import EdgeResidualDetector
from pipeline.detect.registry import edge_detector
from pipeline.detect.scorer import ReadingScorer
from pipeline.detect.stuck import StuckRun
from pipeline.learn.sync_stats import PRIOR_EFFECTIVE_N, PRIOR_WARMUP, DetectorPrior
from pipeline.protocol import Reading

MINUTE = 60_000
DAY = 1440 * MINUTE


def _feed(detector: EdgeResidualDetector, values: list[float], timed: bool = True) -> None:
    for i, x in enumerate(values):
        t = i * MINUTE if timed else None
        detector.score_value(x, t)
        detector.learn_value(x, t)


def _lamp(minute: int) -> float:
    """100 or 101 W from 20:00 to 06:00, 0 W by day."""
    m = minute % 1440
    return 100.0 + minute % 2 if m >= 20 * 60 or m < 6 * 60 else 0.0


def test_a_switch_ten_minutes_early_is_explained_by_the_neighbouring_bin() -> None:
    with_neighbours, own_bin_only = EdgeResidualDetector(neighbours=1), EdgeResidualDetector(neighbours=0)
    until = 2 * 1440 + 19 * 60 + 50  # two days, then up to 19:49 on the third
    for d in (with_neighbours, own_bin_only):
        _feed(d, [_lamp(i) for i in range(until)])
    early = until * MINUTE  # on at 19:50, in the 19:45 bin; the 20:00 bin says 100
    assert with_neighbours.score_value(100.0, early) < 0.5
    assert own_bin_only.score_value(100.0, early) > 0.8


def test_the_edge_detector_is_the_edge_residual_detector() -> None:
    d = edge_detector()
    assert isinstance(d, EdgeResidualDetector)
    assert (d.neighbours, d.signed, d.residual, d.cooldown) == (1, True, "closest", 0)


def test_repr_rebuilds_the_detector_and_clone_keeps_its_settings() -> None:
    d = EdgeResidualDetector(top_k=6, neighbours=2, signed=False, resolution_floor=3.0)
    rebuilt = eval(repr(d), {"EdgeResidualDetector": EdgeResidualDetector})  # noqa: S307
    assert repr(rebuilt) == repr(d) == repr(d.clone())


def _shelf(minutes: int) -> list[float]:
    """Stock: a sale with probability 0.3 a minute, topped up to 200 when below 170."""
    rng, values, stock = random.Random(3), [], 200.0
    for _ in range(minutes):
        if rng.random() < 0.3:
            stock -= 1.0
        if stock < 170.0:
            stock = 200.0
        values.append(stock)
    return values


def test_a_drop_is_compared_with_drops_not_with_the_top_ups() -> None:
    signed, unsigned = EdgeResidualDetector(signed=True), EdgeResidualDetector(signed=False)
    history = _shelf(3000)
    history = history[: max(i for i, x in enumerate(history) if x >= 195.0) + 1]  # end on a full shelf
    for d in (signed, unsigned):
        _feed(d, history, timed=False)  # the previous value predicts: sales drop 1, top-ups rise ~30
    theft = history[-1] - 10.0  # ten items gone in a minute
    assert signed.score_value(theft) > 0.9
    assert unsigned.score_value(theft) < 0.5


def test_the_reference_is_never_below_the_resolution_floor() -> None:
    values = [10.0] * 300
    values[150] = 9.0  # one step down and back: the memories hold one drop and zeros
    floored = EdgeResidualDetector(resolution_floor=2.0, young_calibration=False)
    bare = EdgeResidualDetector(resolution_floor=0.0, young_calibration=False)
    for d in (floored, bare):
        _feed(d, values, timed=False)
    assert floored.score_value(9.0) == 0.2  # one step against two: r = 0.5
    assert bare.score_value(9.0) > 0.999


def _noise(n: int, seed: int = 5) -> list[float]:
    rng = random.Random(seed)
    return [20.0 + rng.gauss(0.0, 1.0) for _ in range(n)]


def _ratio(d: EdgeResidualDetector, x: float) -> float:
    return d._ratio(x, None)[1]


def test_a_young_memory_divides_the_ratio_by_the_log_quantile_ratio() -> None:
    young, plain = EdgeResidualDetector(), EdgeResidualDetector(young_calibration=False)
    for d in (young, plain):
        _feed(d, _noise(1050), timed=False)
    remembered = 1050 - 50  # the memory starts after half the warm-up
    expected = math.log(10_000 / 8) / math.log(remembered / 8)  # horizon 1 / forget, k = 8
    assert _ratio(plain, 30.0) / _ratio(young, 30.0) == pytest.approx(expected)


def test_a_memory_as_old_as_its_horizon_is_not_tempered() -> None:
    young, plain = EdgeResidualDetector(forget=1e-3), EdgeResidualDetector(forget=1e-3, young_calibration=False)
    for d in (young, plain):
        _feed(d, _noise(1100), timed=False)  # 1 050 remembered > 1 / forget
    assert _ratio(young, 30.0) == _ratio(plain, 30.0)


def test_a_young_memory_raises_fewer_high_scores_on_plain_noise() -> None:
    young, plain = EdgeResidualDetector(), EdgeResidualDetector(young_calibration=False)
    high = {id(young): 0, id(plain): 0}
    for i, x in enumerate(_noise(1440, seed=8)):  # one day at one reading a minute
        for d in (young, plain):
            high[id(d)] += d.score_value(x, i * MINUTE) >= 0.8
            d.learn_value(x, i * MINUTE)
    assert high[id(plain)] > 0
    assert high[id(young)] < high[id(plain)]


def test_a_warm_started_memory_counts_as_the_priors_readings() -> None:
    d, untempered = EdgeResidualDetector(), EdgeResidualDetector(young_calibration=False)
    for detector in (d, untempered):  # the same memory: only the calibration differs
        detector.warm_start(_prior())
        _feed(detector, [10.0] * PRIOR_WARMUP)
    t = PRIOR_WARMUP * MINUTE
    plain = untempered._ratio(4.0, t)[1]
    expected = math.log(10_000 / 8) / math.log((PRIOR_EFFECTIVE_N + PRIOR_WARMUP) / 8)
    assert plain / d._ratio(4.0, t)[1] == pytest.approx(expected)


def _prior() -> DetectorPrior:
    return DetectorPrior(
        version=1,
        day_profile=[10.0] * 96,
        day_error=0.5,
        previous_error=0.5,
        residual_top=[2.0] * 8,
        low=0.0,
        high=20.0,
    )


def test_a_warm_started_detector_compares_its_first_drop_with_the_kinds_residuals() -> None:
    d = EdgeResidualDetector(young_calibration=False)
    d.warm_start(_prior())
    _feed(d, [10.0] * PRIOR_WARMUP)
    t = PRIOR_WARMUP * MINUTE
    assert d.score_value(9.0, t) < 0.5  # 1 against the prior's 2
    assert d.score_value(4.0, t) > 0.8  # 6 against 2


def test_the_reading_scorer_warm_starts_new_detectors_from_the_prior() -> None:
    asked: list[tuple[str, str]] = []

    def prior(kind: str, metric: str) -> DetectorPrior:
        asked.append((kind, metric))
        return _prior()

    scorer = ReadingScorer(lambda kind, metric: EdgeResidualDetector(), prior=prior)
    scorer.score_one(Reading(v=1, device="f1", kind="fridge", ts=0, seq=0, metrics={"temp": 10.0}))
    assert asked == [("fridge", "temp")]
    assert scorer.detectors[("f1", "temp")].active_warmup == PRIOR_WARMUP  # type: ignore[attr-defined]


def _nights(run: StuckRun, days: int, with_ts: bool) -> list[float]:
    """Scores of a shelf from 04:00 on day 0: a new value every minute from 08:00 to 20:00, one all night."""
    scores = [0.0] * (4 * 60)
    for i in range(4 * 60, days * 1440):
        m, day = i % 1440, i // 1440
        if 8 * 60 <= m < 20 * 60:
            x = day * 1000.0 + m
        else:  # the evening's value until the morning (day 0 starts at night)
            x = (day if m >= 20 * 60 else day - 1) * 1000.0 + 600.5
        ts = i * MINUTE if with_ts else None
        scores.append(run.score_one(x, ts))
        run.learn_one(x, ts)
    return scores


def test_the_second_full_night_is_compared_with_the_first_when_timestamps_are_known() -> None:
    second_full_night = slice(1440 + 20 * 60, 2 * 1440 + 8 * 60)
    assert max(_nights(StuckRun(), 3, with_ts=True)[second_full_night]) < 0.8
    assert max(_nights(StuckRun(), 3, with_ts=False)[second_full_night]) > 0.8


def test_a_run_going_at_the_end_of_the_warm_up_is_remembered_at_its_full_length() -> None:
    run = StuckRun(warmup=10)
    for x in [1.0] * 300 + [2.0]:
        run.learn_one(x)
    assert run.reference == 300.0


def test_the_first_day_plan_counts_from_the_warm_started_detectors_warm_up() -> None:
    first = SimQualityPlan().first_day()
    assert (first.days, first.burn_in_days, first.warmup) == (1.0, 0.0, PRIOR_WARMUP)


def _spiky(seed: int = 4) -> list[float]:
    """Noise for 1 000 readings, then a +50 spike every 50 readings, eleven times."""
    values = _noise(1000 + 11 * 50, seed)
    for j in range(11):
        values[1000 + 50 * j + 49] += 50.0
    return values


def test_an_anomaly_does_not_teach_the_memory_its_own_size() -> None:
    bounded, unbounded = EdgeResidualDetector(), EdgeResidualDetector(memory_clamp=math.inf)
    values = _spiky()
    for d in (bounded, unbounded):
        _feed(d, values[:-1], timed=False)
    assert bounded.score_value(values[-1]) > 0.9  # the eleventh spike is still an anomaly
    assert unbounded.score_value(values[-1]) < 0.7  # ten spikes filled the memory of rises


def test_a_new_noisier_normal_is_still_learned() -> None:
    rng = random.Random(9)
    calm = [20.0 + rng.gauss(0.0, 1.0) for _ in range(1000)]
    noisy = [20.0 + rng.gauss(0.0, 5.0) for _ in range(3000)]
    d = EdgeResidualDetector()
    _feed(d, calm + noisy[:2000], timed=False)
    high = 0
    for x in noisy[2000:]:
        high += d.score_value(x) >= 0.8
        d.learn_value(x)
    assert high <= 10  # of 1 000 readings


def test_the_memory_clamp_must_be_above_one() -> None:
    with pytest.raises(ValueError, match="memory_clamp"):
        EdgeResidualDetector(memory_clamp=1.0)


# -- rates: the edge detector gives the same verdicts whatever rate a device reports at ------
# Its forgetting, warm-up and memory counts are stated per minute of event time
# (EDGE_REFERENCE_INTERVAL_S), not per reading: a sensor read every second must not forget
# yesterday's dawn within three hours, as it did when the memory forgot 1e-4 per reading
# (every 10 lx step of a light sensor at dawn raised an alert; issue 19).

DAY_S = 86_400


RAISE_SCORE = 0.8  # the alert policy's default raise score


MAX_RAISES = 2  # over the two days counted: at most one a day (it was thousands at 1 Hz)


def daylight_lx(t_s: float) -> float:
    """0 at night, a smooth day up to 40,000 lx, 1 % noise, on the sensor's 10 lx grid."""
    hour = t_s % DAY_S / 3600
    sun = max(0.0, math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0
    rng = random.Random(int(t_s))
    return round(40_000 * sun * (1 + 0.01 * rng.gauss(0, 1)) / 10) * 10


def visitors_gauge(interval_s: float) -> Callable[[float], float]:
    """A footfall counter's visitors-per-minute gauge, read every ``interval_s``: Poisson
    around an opening-hours profile (08:00-20:00, peak 25 at 14:00), 0 at night."""
    rng = np.random.default_rng(5)

    def series(t_s: float) -> float:
        hour = t_s % DAY_S / 3600
        mean = 25.0 * math.sin(math.pi * (hour - 8) / 12) if 8 <= hour < 20 else 0.0
        return float(rng.poisson(mean)) if mean > 0 else 0.0

    return series


def raises_after_the_first_day(series: Callable[[float], float], interval_s: float, days: float = 3.0) -> int:
    detector = edge_detector()
    start_ms = 1_719_792_000_000
    raised = 0
    for i in range(int(days * DAY_S / interval_s)):
        t_s = i * interval_s
        x = series(t_s)
        ts = start_ms + int(t_s * 1000)
        score = detector.score_value(x, ts)
        detector.learn_value(x, ts)
        if t_s >= DAY_S and score >= RAISE_SCORE:
            raised += 1
    return raised


@pytest.mark.parametrize("interval_s", [1.0, 60.0], ids=["1hz", "1min"])
def test_dawn_on_a_light_sensor_is_not_an_anomaly_at_any_rate(interval_s: float) -> None:
    assert raises_after_the_first_day(daylight_lx, interval_s) <= MAX_RAISES


@pytest.mark.parametrize("interval_s", [1.0, 60.0], ids=["1hz", "1min"])
def test_ordinary_visitor_counts_are_not_anomalies_at_any_rate(interval_s: float) -> None:
    assert raises_after_the_first_day(visitors_gauge(interval_s), interval_s) <= MAX_RAISES


@pytest.mark.parametrize("interval_s", [1.0, 60.0, 900.0], ids=["1hz", "1min", "15min"])
def test_a_level_jump_is_found_at_every_rate(interval_s: float) -> None:
    detector = edge_detector()
    start_ms = 1_719_792_000_000
    rng = random.Random(3)
    steps = int(3 * DAY_S / interval_s)
    scores = []
    for i in range(steps + 3):
        x = 20.0 + 0.1 * rng.gauss(0, 1) + (5.0 if i >= steps else 0.0)
        ts = start_ms + int(i * interval_s * 1000)
        scores.append(detector.score_value(x, ts))
        detector.learn_value(x, ts)
    assert max(scores[steps:]) >= RAISE_SCORE


def test_a_burst_at_one_hertz_teaches_the_memory_per_minute_not_per_reading() -> None:
    """Bounded teaching counts reference intervals: 900 noisy readings of a 15-minute burst at
    1 Hz teach what its 15 minutes teach, so a spike an hour later still stands out (with
    every reading taught, the memory grew to the burst's size and the spike scored 0.69)."""
    rng = random.Random(3)
    d = edge_detector()
    second = 1000
    calm = [20.0 + rng.gauss(0.0, 0.5) for _ in range(12 * 3600)]
    burst = [20.0 + rng.gauss(0.0, 3.0) for _ in range(15 * 60)]
    after = [20.0 + rng.gauss(0.0, 0.5) for _ in range(3600)]
    for i, x in enumerate(calm + burst + after):
        d.score_value(x, i * second)
        d.learn_value(x, i * second)
    assert d.score_value(36.0, (len(calm) + len(burst) + len(after)) * second) >= 0.8
