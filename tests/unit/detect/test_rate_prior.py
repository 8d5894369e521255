"""``ReadingScorer(rate_prior=...)``: a new series warm-starts from a prior at its own reporting rate.

The built-in priors keep their residual sizes per reporting rate (docs/detection.md,
"Built-in priors"); the scorer learns a series' interval from its first two readings, then
remakes its detector warm-started and taught the first reading.
"""

from __future__ import annotations

from pipeline.detect.edge_residual import EdgeResidualDetector
from pipeline.detect.scorer import ReadingScorer
from pipeline.learn.sync_stats import PRIOR_WARMUP, DetectorPrior
from pipeline.protocol import Reading

T0 = 1_719_792_000_000


def _prior(top: float) -> DetectorPrior:
    return DetectorPrior(1, [10.0] * 96, 0.5, 0.5, [top] * 8, 0.0, 20.0)


def _reading(i: int, value: float, interval_ms: int) -> Reading:
    return Reading(v=1, device="p1", kind="soil_probe", ts=T0 + i * interval_ms, seq=i, metrics={"moisture": value})


def _scores(scorer: ReadingScorer, values: list[float], interval_ms: int) -> list[float]:
    return [scorer.score_one(_reading(i, v, interval_ms))[0][2] for i, v in enumerate(values)]


def test_the_rate_prior_is_asked_at_the_second_reading_with_the_series_interval() -> None:
    asked: list[tuple[str, str, float]] = []

    def rate_prior(kind: str, metric: str, interval_s: float) -> DetectorPrior:
        asked.append((kind, metric, interval_s))
        return _prior(1.0)

    scorer = ReadingScorer(lambda kind, metric: EdgeResidualDetector(), rate_prior=rate_prior)
    _scores(scorer, [10.0, 10.1, 10.0], 500)
    assert asked == [("soil_probe", "moisture", 0.5)]
    detector = scorer.detectors[("p1", "moisture")]
    assert detector.active_warmup == PRIOR_WARMUP  # type: ignore[attr-defined]
    assert detector._n == 3  # type: ignore[attr-defined]  # the first reading was taught to the new one
    assert scorer.rate_warm_starts == 1


def test_a_warm_series_scores_a_spike_after_the_priors_warm_up_and_a_cold_one_does_not() -> None:
    values = [10.0, 10.1] * 10 + [30.0]
    warm = ReadingScorer(lambda kind, metric: EdgeResidualDetector(), rate_prior=lambda k, m, i: _prior(1.0))
    cold = ReadingScorer(lambda kind, metric: EdgeResidualDetector())
    assert _scores(warm, values, 500)[-1] > 0.8
    assert _scores(cold, values, 500)[-1] == 0.0  # still warming up: 100 readings


def test_model_syncs_prior_at_first_sight_wins_and_the_rate_prior_is_not_asked() -> None:
    asked: list[float] = []

    def rate_prior(kind: str, metric: str, interval_s: float) -> DetectorPrior:
        asked.append(interval_s)
        return _prior(1.0)

    scorer = ReadingScorer(
        lambda kind, metric: EdgeResidualDetector(), prior=lambda k, m: _prior(5.0), rate_prior=rate_prior
    )
    _scores(scorer, [10.0, 10.1, 10.0], 500)
    assert asked == []
    assert scorer.rate_warm_starts == 0


def test_without_a_rate_prior_for_the_kind_the_cold_detector_is_kept() -> None:
    scorer = ReadingScorer(lambda kind, metric: EdgeResidualDetector(), rate_prior=lambda k, m, i: None)
    _scores(scorer, [10.0, 10.1], 500)
    detector = scorer.detectors[("p1", "moisture")]
    assert detector.active_warmup == detector.warmup  # type: ignore[attr-defined]
    assert scorer.rate_warm_starts == 0
