"""The detectors by name, and the presets the node and ``edgepipe detect`` run.

``DETECTORS`` maps a name to a factory of a fresh, configured detector (a ``ValueDetector``,
i.e. a river ``AnomalyDetector``). ``build`` (``pipeline.detect.detection``) picks the
node's detector from here by name; the contract suite (tests/unit/detect/test_contract.py)
runs over every entry. How to add a detector: one module with the class, one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pipeline.detect.base import ValueDetector
from pipeline.detect.edge_residual import EdgeResidualDetector
from pipeline.detect.river_model import RIVER_PREFIX, ModelChoice, RiverModel, river_hst
from pipeline.detect.scorer import DetectorFactory
from pipeline.detect.seasonal import SeasonalResidualDetector
from pipeline.detect.twoview import TwoViewDetector
from pipeline.detect.zscore import ZScoreDetector
from pipeline.learn.periods import HOUR_S

# The edge detector's per-reading settings (forget, warm-up, memory counts) were tuned at one
# reading a minute; at other rates a reading counts for the event time it covers, in minutes.
EDGE_REFERENCE_INTERVAL_S = 60.0


def default_detector() -> TwoViewDetector:
    """The detector of ``edgepipe detect`` (the NAB winner, docs/detection.md).

    ``TwoViewDetector`` (``pipeline/detect/twoview.py``): this module's
    ``SeasonalResidualDetector`` with a 150-reading warm-up, plus the same detector on the
    mean of the last 4 readings, counted only when extreme. NAB 70.3 standard against 68.9
    for ``SeasonalResidualDetector()`` alone.
    """
    return TwoViewDetector()


def edge_detector() -> EdgeResidualDetector:
    """The edge node's detector: the NAB winner without its own cooldown, closest residual.

    Why no cooldown: at the edge ``AlertPolicy`` already turns an episode into one alert
    (hysteresis), and the detector's damping after every reading at ``r >= 1.2`` (common in
    noisy sensor data) hid real anomalies that followed within 30 readings: on simulated
    data recall rose from 0.50 to 0.57 without it, false alarms unchanged (docs/detection.md).
    NAB charges every extra detection, so ``edgepipe detect`` keeps the cooldown.

    Why the closest residual (``residual="closest"``): at the edge a reading that either
    the previous value or the usual time of day explains is ordinary. Choosing one predictor
    by its running error let a young day profile that is wrong at one bin raise alerts, and
    let daily events inflate the residual memory; on simulated data F1 rose from 0.75 to
    0.79 (precision and recall both up, docs/detection.md). On NAB it is worse (missing
    daily peaks are explained by the previous value), so ``default_detector()`` keeps
    ``"best"``.

    Why the neighbouring time-of-day bins (``EdgeResidualDetector``,
    ``pipeline/detect/edge_residual.py``): daily switching (streetlights at dusk, valves)
    does not happen at the same minute every day, and the profile a quarter of an hour
    away explains it; on simulated data false alarms fell from 150 to 82 (F1 0.79 to 0.81).
    Its signed residual memory (rises against rises, drops against drops, with a resolution
    floor) then raised recall from 0.75 to 0.81 (F1 0.83 to 0.86, docs/detection.md). Its
    young-memory calibration (a memory of few readings holds a low quantile: ratios are
    tempered until it stands for ``1 / forget`` readings) and bounded teaching (an anomaly
    raises the memory by at most 1.5 x the reference) took false alarms from 73 to 43 and
    F1 to 0.865 on the full bench run, and kept recall from decaying as the node ages.

    Why hour-wide day-of-week bins (``week_bin_s=3600``, 168 float32): the week profile was
    the largest per-series state (1.3 KB of 3.2 KB); halving it keeps the node with 10,000
    devices under 200 MB (201 to 187 MB, ``edge.rss_mb_10k_devices``) and leaves the
    simulator figures unchanged (F1 0.86).
    """
    return EdgeResidualDetector(neighbours=1, week_bin_s=HOUR_S, reference_interval_s=EDGE_REFERENCE_INTERVAL_S)


PresetFactory = Callable[[], ValueDetector]

DETECTORS: dict[str, PresetFactory] = {
    "edge": edge_detector,  # the node's: EdgeResidualDetector, preset above
    "nab": default_detector,  # edgepipe detect's: TwoViewDetector()
    "seasonal_residual": SeasonalResidualDetector,
    "edge_residual": EdgeResidualDetector,
    "two_view": TwoViewDetector,
    "zscore": ZScoreDetector,  # the baseline
    "river_hst": river_hst,  # river's HalfSpaceTrees, calibrated (RiverModel): measured beside ours
}
EDGE_DETECTOR = "edge"  # the node's default


def detector_factory(name: str) -> PresetFactory:
    """The factory registered as ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise KeyError(f"no detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None


def from_choice(choice: ModelChoice) -> ValueDetector:
    """A fresh detector for one ``[detect.kinds.*]`` entry: a registered name or a river path.

    Raises ``ValueError`` with one line saying what is wrong (``edgepipe config check``).
    """
    if choice.detector in DETECTORS:
        if choice.params or choice.preprocess or choice.preprocess_params:
            raise ValueError(f"{choice.detector!r} is a preset: it takes no params or preprocess")
        return DETECTORS[choice.detector]()
    if not choice.detector.startswith(RIVER_PREFIX):
        known = ", ".join(sorted(DETECTORS))
        raise ValueError(f"{choice.detector!r}: not a detector ({known}) nor a river class path")
    return RiverModel(choice.detector, choice.params, choice.preprocess, choice.preprocess_params)


def choose_detectors(default: str, choices: Mapping[str, ModelChoice]) -> DetectorFactory:
    """``(kind, metric) -> a fresh detector``: the ``kind.metric`` entry, else the kind's, else ``default``.

    Each choice is built once here, so a bad one fails before the first reading. New series
    come from the registry's factories (river's ``clone()`` reads the signature and deep-copies
    every parameter: 49 µs against 2.5 µs, and a node meets thousands of new series at once);
    a river model, which has no preset factory, is cloned from its template.
    """
    fallback = detector_factory(default)
    factories: dict[str, PresetFactory] = {}
    for key, choice in choices.items():
        template = from_choice(choice)
        factories[key] = DETECTORS[choice.detector] if choice.detector in DETECTORS else template.clone
    if not factories:
        return lambda kind, metric: fallback()

    def new_detector(kind: str, metric: str) -> ValueDetector:
        return (factories.get(f"{kind}.{metric}") or factories.get(kind) or fallback)()

    return new_detector
