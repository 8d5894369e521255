"""``ReadingScorer``: every metric of one reading, scored then learned, then adjusted by the stages.

Per reading: each stage's ``begin_one`` (the linked metrics score and learn the reading's
pairs), then per metric the detector of its series (``score_value`` then ``learn_value``;
made on first sight, warm-started from the kind's prior when it is ``WarmStartable``), then
the score-adjusting stages in order (``pipeline.detect.stages``: stuck runs, irrigation
zones, switch contexts, linked metrics), then each stage's ``end_one`` (switch contexts learn
the reading). Out: one ``Scored`` per metric, with the cause and its detail.

Why the value API here (not river's dict API): see ``pipeline.detect.base``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.detect.base import ValueDetector, WarmStartable
from pipeline.detect.stages import ScoreStage, StageContext, overrides
from pipeline.learn.sync_stats import DetectorPrior
from pipeline.protocol import Reading
from pipeline.protocol.causes import Cause

# (kind, metric) -> a fresh detector for a new series: the seam where a per-kind choice plugs in.
DetectorFactory = Callable[[str, str], ValueDetector]
PriorLookup = Callable[[str, str], DetectorPrior | None]
# (kind, metric, seconds between the series' first two readings) -> a prior learned at about
# that rate (the package's built-in priors: residual sizes depend on the reporting rate).
RatePriorLookup = Callable[[str, str, float], DetectorPrior | None]


# One metric of a reading after detection: (metric, value, score, cause, detail of the
# reason). A plain tuple, not a NamedTuple: building a NamedTuple costs about 0.5 µs more per
# metric, on the node's hot path (docs/decisions/0007-detection-package.md).
Scored = tuple[str, float, float, Cause, str]


class ReadingScorer:
    """The detectors of every (device, metric) and the stages after them; see the module docstring.

    ``detectors`` may be shared with the caller (the node looks into it). ``prior(kind,
    metric)``, when given, is the kind's merged model for a new detector.

    ``rate_prior(kind, metric, interval_s)``, when given, is asked for a new series that
    ``prior`` had nothing for, at its second reading, once its interval is known: with a
    prior, the series' detector is made again, warm-started, and taught the first reading
    (``warm_start`` is for a fresh detector), so that it scores after the prior's warm-up.
    """

    def __init__(
        self,
        new_detector: DetectorFactory,
        stages: Sequence[ScoreStage] = (),
        detectors: dict[tuple[str, str], ValueDetector] | None = None,
        prior: PriorLookup | None = None,
        rate_prior: RatePriorLookup | None = None,
    ) -> None:
        self.new_detector = new_detector
        self.stages = tuple(stages)
        self.detectors: dict[tuple[str, str], ValueDetector] = {} if detectors is None else detectors
        self.prior = prior
        self.rate_prior = rate_prior
        self.warm_starts_skipped = 0  # new series with a prior whose detector cannot use it
        self.rate_warm_starts = 0  # new series warm-started from ``rate_prior``
        # Series seen once, waiting for their interval: (device, metric) -> (value, ts) of the
        # first reading (None until score_one has it)
        self._first: dict[tuple[str, str], tuple[float, int] | None] = {}
        self._ctx = StageContext()

    @property
    def stages(self) -> tuple[ScoreStage, ...]:
        """The score-adjusting stages, in order (assignable: e.g. a test swaps one)."""
        return self._stages

    @stages.setter
    def stages(self, stages: Sequence[ScoreStage]) -> None:
        self._stages = tuple(stages)
        self._begin = tuple(s for s in self._stages if overrides(s, "begin_one"))
        self._end = tuple(s for s in self._stages if overrides(s, "end_one"))

    def detector_for(self, device: str, kind: str, metric: str) -> ValueDetector:
        """The detector of a series, made (and warm-started, if a prior is known) on first sight."""
        key = (device, metric)
        detector = self.detectors.get(key)
        if detector is None:
            detector = self.detectors[key] = self.new_detector(kind, metric)
            prior = None if self.prior is None else self.prior(kind, metric)
            if prior is not None:
                if isinstance(detector, WarmStartable):
                    detector.warm_start(prior)
                else:
                    self.warm_starts_skipped += 1  # e.g. a river model: nothing to merge into
            elif self.rate_prior is not None and isinstance(detector, WarmStartable):
                self._first[key] = None  # score_one fills in the first reading
        return detector

    def _second_reading(self, key: tuple[str, str], kind: str, ts: int) -> ValueDetector | None:
        """A series' second reading: its detector remade from a prior at its rate, if there is one."""
        first = self._first.pop(key)
        if first is None or self.rate_prior is None or ts <= first[1]:
            return None
        first_value, first_ts = first
        prior = self.rate_prior(kind, key[1], (ts - first_ts) / 1000.0)
        if prior is None:
            return None
        detector = self.new_detector(kind, key[1])
        assert isinstance(detector, WarmStartable)
        detector.warm_start(prior)
        detector.learn_value(first_value, first_ts)
        self.detectors[key] = detector
        self.rate_warm_starts += 1
        return detector

    def score_one(self, reading: Reading) -> list[Scored]:
        """Score, then learn, every metric of ``reading``."""
        out: list[Scored] = []
        device, ts = reading.device, reading.ts
        ctx = self._ctx
        ctx.device, ctx.kind, ctx.ts, ctx.metrics = device, reading.kind, ts, reading.metrics
        for stage in self._begin:
            stage.begin_one(reading)
        detectors = self.detectors
        stages = self.stages
        for metric, value in reading.metrics.items():
            key = (device, metric)
            detector = detectors.get(key)
            if detector is None:
                detector = self.detector_for(device, reading.kind, metric)
                if key in self._first:
                    self._first[key] = (value, ts)
            elif self._first and key in self._first:
                detector = self._second_reading(key, reading.kind, ts) or detector
            score = detector.score_value(value, ts)
            detector.learn_value(value, ts)
            cause = Cause.ANOMALY
            owner: ScoreStage | None = None
            ctx.metric, ctx.value, ctx.key = metric, value, key
            for stage in stages:
                score, adjusted = stage.adjust_one(ctx, score, cause)
                if adjusted is not cause:
                    cause, owner = adjusted, stage
            out.append((metric, value, score, cause, "" if owner is None else owner.describe(ctx)))
        for stage in self._end:
            stage.end_one(reading)
        return out
