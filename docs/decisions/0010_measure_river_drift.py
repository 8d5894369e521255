"""Measure river.drift detectors as a score stage for slow changes (issue 15; docs/detection.md).

Each (device, metric) feeds a river drift detector its signed day-profile residual before
learning, in units of the day predictor's running error (clipped to ±20); when the detector
signals a drift, the metric's score is raised to ``DRIFT_SCORE`` with cause ``anomaly``.
Same simulated plan, same run, against the node's path without the stage.

    .venv/bin/python docs/decisions/0010_measure_river_drift.py          # quick plan, ~5-15 min
"""

from __future__ import annotations

from collections.abc import Callable

from river import drift
from river.base import DriftDetector

from pipeline.bench import quality as q
from pipeline.config import AlertSettings
from pipeline.detect.detection import Detection, build
from pipeline.detect.seasonal import SeasonalResidualDetector
from pipeline.detect.stages import ScoreStage, StageContext
from pipeline.protocol import Reading
from pipeline.protocol.causes import Cause

DRIFT_SCORE = 0.85  # above the default raise score (0.8)
RESIDUAL_CLIP = 20.0  # day predictor errors

DRIFT_DETECTORS: dict[str, Callable[[], DriftDetector]] = {
    "page_hinkley_d0.5_t60": lambda: drift.PageHinkley(min_instances=60, delta=0.5, threshold=60.0),
    "page_hinkley_d1_t120": lambda: drift.PageHinkley(min_instances=60, delta=1.0, threshold=120.0),
    "page_hinkley_d1.5_t200": lambda: drift.PageHinkley(min_instances=60, delta=1.5, threshold=200.0),
    "page_hinkley_d2_t400": lambda: drift.PageHinkley(min_instances=60, delta=2.0, threshold=400.0),
    "adwin_1e-5": lambda: drift.ADWIN(delta=1e-5, clock=32),
    "kswin_1e-9": lambda: drift.KSWIN(alpha=1e-9, window_size=300, stat_size=100, seed=1),
}


class DriftStage(ScoreStage):
    """A river drift detector per series on the signed day-profile residual."""

    def __init__(self, make: Callable[[], DriftDetector], detectors: dict[tuple[str, str], object]) -> None:
        self.make = make
        self.detectors = detectors
        self.drifts: dict[tuple[str, str], DriftDetector] = {}
        self.residuals: dict[str, float] = {}

    def begin_one(self, reading: Reading) -> None:
        self.residuals = {}
        for metric, value in reading.metrics.items():
            d = self.detectors.get((reading.device, metric))
            if not isinstance(d, SeasonalResidualDetector) or d._day is None or not d._errors[1]:
                continue
            predicted = d._day[d._bins(reading.ts)[0]]
            if predicted == predicted:
                z = (value - predicted) / d._errors[1]
                self.residuals[metric] = max(-RESIDUAL_CLIP, min(RESIDUAL_CLIP, z))

    def adjust_one(self, ctx: StageContext, score: float, cause: Cause) -> tuple[float, Cause]:
        z = self.residuals.get(ctx.metric)
        if z is None:
            return score, cause
        detector = self.drifts.get(ctx.key)
        if detector is None:
            detector = self.drifts[ctx.key] = self.make()
        detector.update(z)
        if detector.drift_detected and score < DRIFT_SCORE:
            return DRIFT_SCORE, Cause.ANOMALY
        return score, cause


def with_drift(make: Callable[[], DriftDetector]) -> q.Variant:
    def variant(site: str) -> q.Pipeline:
        detection: Detection = build(site, AlertSettings())
        stage = DriftStage(make, detection.scorer.detectors)  # type: ignore[arg-type]
        detection.scorer.stages = (*detection.scorer.stages, stage)
        return q.Pipeline(site, detection)

    return variant


def main() -> None:
    variants: dict[str, q.Variant] = {"ours": q.ours}
    variants.update({name: with_drift(make) for name, make in DRIFT_DETECTORS.items()})
    result = q.run_sim(q.SimQualityPlan.quick(), variants)
    print("| stage | F1 | precision | recall | false alarms / device-day | drift recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in variants:
        r = result[name]
        drift_recall = r["details"]["recall_by_anomaly"].get("drift")
        print(
            f"| {name} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['false_alarms_per_device_day']:.2f} | {drift_recall} |"
        )


if __name__ == "__main__":
    main()
