"""Any river anomaly detector, by dotted path, on the edge's alert scale.

Why: river's users know its detectors (``river.anomaly.HalfSpaceTrees``, ``LODA``,
``OneClassSVM``...) and want to try them on their own devices without writing code. The
node's alert policy reads scores on one scale (0.8 raises: "twice the usual largest"),
while river's detectors each have their own (HST's mass in [0, 1], SVM margins, LOF
ratios). ``RiverModel`` runs the named detector, optionally behind a river preprocessing
step, and calibrates its raw scores online the way our own detectors calibrate residuals:

* bounded scores (HST's, in [0, 1]) are first read as surprise, ``-log(1 - s)``, since
  they crowd below 1 and a ratio of two of them cannot reach "twice";
* the *excess* of a raw score is how far it lies above the raw scores' running centre
  (an exponentially weighted mean, so a detector whose scores drift keeps its baseline);
* the excess is divided by the ``top_k``-th largest excess remembered (slowly forgotten);
* the ratio ``r`` becomes ``r**2 / (1 + r**2)``: 0.5 for "as unusual as the ``top_k``-th
  most unusual so far", 0.8 for twice that.

Features the river model sees: ``value`` (the reading's value) and, by default, ``delta``
(its change since the series' previous reading), so a jump inside the usual range still
looks unusual (NAB: HalfSpaceTrees scores 23.6 with both, 13.9 with the value alone;
docs/detection.md).
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping
from typing import Any, Protocol

from river import base, compose, stats

from pipeline.detect.base import ValueDetector
from pipeline.detect.features import VALUE
from pipeline.learn.memory import DecayingTopK
from pipeline.learn.scores import ratio_score

DELTA = "delta"  # the feature: change since the series' previous reading
FEATURES = (VALUE, DELTA)

RIVER_PREFIX = "river."
SEED = "seed"
# River detectors whose scores are bounded in [0, 1] (1: most anomalous). Their scores
# crowd near 1, so they are read as surprise, -log(1 - s): 0.9 -> 2.3, 0.99 -> 4.6.
BOUNDED_SCORES = frozenset({"river.anomaly.HalfSpaceTrees"})  # see HALF_SPACE_TREES below
SCORE_SCALES = ("auto", "raw", "surprise")
SURPRISE_CAP = 50.0  # -log(1 - s) for s == 1.0 (float rounding)
DEFAULT_SEED = 42
SCORE_CENTRE_FADING = 0.01  # weight of the newest raw score in the running centre


def river_class(path: str, kind: type, role: str) -> type:
    """The river class at dotted ``path``, checked to be a subclass of ``kind``.

    Only ``river.*`` paths: a config file names a model, it does not import arbitrary code.
    Raises ``ValueError`` with a message fit for a one-line config error.
    """
    module_name, _, name = path.rpartition(".")
    if not path.startswith(RIVER_PREFIX) or not module_name or not name:
        raise ValueError(f"{path!r} is not a river class path (e.g. river.anomaly.HalfSpaceTrees)")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(f"no module {module_name!r}") from None
    found = getattr(module, name, None)
    if not isinstance(found, type):
        raise ValueError(f"{module_name} has no class {name!r}")
    if not issubclass(found, kind):
        raise ValueError(f"{path} is not a river {role} (river.base.{kind.__qualname__})")
    return found


def build_river_model(
    model: str,
    params: Mapping[str, Any] | None = None,
    preprocess: str | None = None,
    preprocess_params: Mapping[str, Any] | None = None,
) -> base.Estimator:
    """The river estimator ``preprocess | model``; ``ValueError`` naming what is wrong."""
    detector_cls = river_class(model, base.AnomalyDetector, "anomaly detector")
    arguments = dict(params or {})
    if SEED in inspect.signature(detector_cls).parameters:
        arguments.setdefault(SEED, DEFAULT_SEED)  # the same stream gives the same alerts
    try:
        detector = detector_cls(**arguments)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{model}: {exc}") from None
    if preprocess is None:
        return detector
    step_cls = river_class(preprocess, base.Transformer, "transformer")
    try:
        step = step_cls(**(preprocess_params or {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{preprocess}: {exc}") from None
    return compose.Pipeline(step, detector)


class RiverModel(ValueDetector):
    """A river anomaly detector on the edge's score scale (module docstring).

    A ``ValueDetector``: river's ``learn_one``/``score_one`` take edgepipe's feature dict
    (``{"value": float, ...}``), the node calls ``score_value``/``learn_value``; the river
    model sees ``features`` built from the value (event time is not given to it). Scores
    are 0.0 during the first ``warmup`` readings, and while fewer than ``top_k`` readings
    have scored above the running centre: the calibration has nothing to compare with yet.

    Parameters
    ----------
    model
        Dotted path of a river anomaly detector, e.g. ``river.anomaly.HalfSpaceTrees``.
    params
        Its constructor arguments (a ``seed`` of 42 is added when it takes one and none is
        given: the same stream gives the same alerts).
    preprocess, preprocess_params
        Optional dotted path of a river transformer run before it and its arguments.
        HalfSpaceTrees splits the box ``limits`` (default [0, 1] per feature): behind
        ``river.preprocessing.StandardScaler`` with limits of ±15 standard deviations a
        spike lands in an empty cell; behind ``MinMaxScaler`` it lands beyond 1, in
        the leaf of the largest usual values, and looks ordinary (docs/detection.md).
    features
        Which of ``value`` and ``delta`` the river model sees.
    score_scale
        ``raw``: the model's scores as they are; ``surprise``: ``-log(1 - s)`` for scores
        in [0, 1]; ``auto``: surprise for the models in ``BOUNDED_SCORES``.
    warmup
        Readings learned before scores are given.
    top_k, forget
        The excess is compared with the ``top_k``-th largest excess remembered; each is
        forgotten at rate ``forget`` per reading (1e-4: halved in about 7,000 readings).

    Examples
    --------
    >>> limits = {"value": (-15.0, 15.0), "delta": (-15.0, 15.0)}
    >>> m = RiverModel("river.anomaly.HalfSpaceTrees", params={"limits": limits},
    ...                preprocess="river.preprocessing.StandardScaler")
    >>> for i in range(1000):
    ...     m.learn_one({"value": 20.0 + (i % 7) * 0.1})
    >>> m.score_one({"value": 20.3}) < 0.8 < m.score_one({"value": 95.0})
    True
    """

    def __init__(
        self,
        model: str,
        params: Mapping[str, Any] | None = None,
        preprocess: str | None = None,
        preprocess_params: Mapping[str, Any] | None = None,
        features: tuple[str, ...] = FEATURES,
        score_scale: str = "auto",
        warmup: int = 100,
        top_k: int = 8,
        forget: float = 1e-4,
    ) -> None:
        unknown = set(features) - set(FEATURES)
        if not features or unknown:
            raise ValueError(f"features must be a non-empty subset of {FEATURES}, got {features}")
        if score_scale not in SCORE_SCALES:
            raise ValueError(f"score_scale must be one of {SCORE_SCALES}, got {score_scale!r}")
        if warmup < 1 or top_k < 1 or not 0.0 <= forget < 1.0:
            raise ValueError("warmup and top_k must be at least 1, forget in [0, 1)")
        self.model = model
        self.params = params
        self.preprocess = preprocess
        self.preprocess_params = preprocess_params
        self.features = tuple(features)
        self.score_scale = score_scale
        self.warmup = warmup
        self.top_k = top_k
        self.forget = forget
        self._estimator: Any = build_river_model(model, params, preprocess, preprocess_params)
        self._with_value = VALUE in self.features
        self._with_delta = DELTA in self.features
        self._surprise = score_scale == "surprise" or (score_scale == "auto" and model in BOUNDED_SCORES)
        self._previous: float | None = None
        self._centre = stats.EWMean(fading_factor=SCORE_CENTRE_FADING)
        self._n = 0
        self._excesses = DecayingTopK(top_k)
        self._growth = 1.0 / (1.0 - forget)

    def _x(self, value: float) -> dict[str, float]:
        features: dict[str, float] = {}
        if self._with_value:
            features[VALUE] = value
        if self._with_delta:
            features[DELTA] = 0.0 if self._previous is None else value - self._previous
        return features

    def _raw(self, features: dict[str, float]) -> float:
        raw = float(self._estimator.score_one(features))
        if not self._surprise:
            return raw
        return -math.log(1.0 - raw) if raw < 1.0 else SURPRISE_CAP

    def _excess(self, raw: float) -> float:
        centre = self._centre.get()
        return raw - centre if raw > centre else 0.0

    def score_value(self, value: float, ts_ms: int | None = None) -> float:
        """Score in [0, 1) of a value not learned yet (0.0 while warming up)."""
        if self._n < self.warmup or value != value:
            return 0.0
        reference = self._excesses.kth_when_full()
        if reference <= 0.0:
            return 0.0  # fewer than top_k excesses seen: nothing to compare with yet
        excess = self._excess(self._raw(self._x(value)))
        return ratio_score(excess / reference)

    def learn_value(self, value: float, ts_ms: int | None = None) -> None:
        """Learn the value; remember its excess for the calibration."""
        if value != value or value in (math.inf, -math.inf):
            return
        features = self._x(value)
        raw = self._raw(features)
        if self._n >= self.warmup // 2:
            self._excesses.decay(self._growth)
            excess = self._excess(raw)
            if excess > 0.0:
                self._excesses.add(excess)
        self._centre.update(raw)
        self._estimator.learn_one(features)
        self._previous = value
        self._n += 1


HALF_SPACE_TREES = "river.anomaly.HalfSpaceTrees"
STANDARD_SCALER = "river.preprocessing.StandardScaler"
HST_LIMIT_SDS = 15.0  # HalfSpaceTrees' box, in standard deviations either side of the mean


def river_hst() -> RiverModel:
    """river's HalfSpaceTrees as the bench measures it beside ours (preset ``river_hst``).

    Behind a ``StandardScaler`` with a box of ±15 standard deviations per feature (why: the
    ``preprocess`` parameter above; NAB standard 34.5 with ±6, 44.3 with ±10, 45.6 with
    ±15, 43.8 with ±20: a wide box leaves the usual values' cells dense and a spike alone);
    river's default trees (10, height 8, window 250).
    """
    box = (-HST_LIMIT_SDS, HST_LIMIT_SDS)
    return RiverModel(HALF_SPACE_TREES, params={"limits": {VALUE: box, DELTA: box}}, preprocess=STANDARD_SCALER)


class ModelChoice(Protocol):
    """What ``[detect.kinds.*]`` holds for one kind or kind.metric (``pipeline.config``)."""

    @property
    def detector(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def preprocess(self) -> str | None: ...
    @property
    def preprocess_params(self) -> Mapping[str, Any]: ...
