"""The one protocol of the score-adjusting stages, and the context they see.

After a metric's detector has scored a reading, each stage may raise or cap the score and
say why (``Cause``): ``StuckWatch`` (stuck sensors), ``IrrigationZones`` (a leak's soak;
scheduled watering capped), ``SwitchContext`` (explained switch-ons capped) and
``LinkedMetrics`` (broken relations). ``ReadingScorer`` runs them in that order, per metric:

    begin_one(reading)                    once per reading, before its metrics (optional)
    adjust_one(ctx, score, cause)         per metric: -> (score, cause)
    describe(ctx)                         the alert reason's detail, if this stage set the cause
    end_one(reading)                      once per reading, after its metrics (optional)

A stage that changes the cause owns it: its ``describe`` gives the detail of the alert's
reason (``stuck: value 4 unchanged for 3.5 h``); an empty detail reads ``score >= 0.8``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.protocol import Reading
from pipeline.protocol.causes import Cause


@dataclass(slots=True)
class StageContext:
    """One metric of one reading, as the stages see it.

    One instance is reused for every metric of every reading (the scorer sets its fields):
    a stage must not keep it.
    """

    device: str = ""
    kind: str = ""
    metric: str = ""
    value: float = 0.0
    ts: int = 0  # the reading's event time, Unix ms
    metrics: Mapping[str, float] = field(default_factory=dict)  # every metric of the reading
    key: tuple[str, str] = ("", "")  # (device, metric): the series

    @classmethod
    def of(cls, reading: Reading, metric: str) -> StageContext:
        """A fresh context for one metric of ``reading`` (tests, and callers off the hot path)."""
        value = reading.metrics[metric]
        return cls(reading.device, reading.kind, metric, value, reading.ts, reading.metrics, (reading.device, metric))


class ScoreStage:
    """Base of the score-adjusting stages: ``adjust_one`` is required, the hooks default to nothing.

    Why a base class rather than a ``Protocol``: the scorer calls ``begin_one``/``end_one``
    only on stages that override them (a per-reading call saved on the hot path), which it
    finds by comparing with these defaults.
    """

    def ordered_kinds(self) -> tuple[str, ...]:
        """Kinds whose readings this stage relates *across* devices: they must reach it in
        event-time order, whatever order they arrived in (the node sequences them behind a
        watermark, ``pipeline.edge.sequencer``). A stage that reads one device at a time
        (stuck runs, switch contexts) needs none: its devices' own order is enough."""
        return ()

    def begin_one(self, reading: Reading) -> None:
        """Called once per reading before its metrics are adjusted."""

    def adjust_one(self, ctx: StageContext, score: float, cause: Cause) -> tuple[float, Cause]:
        """The (score, cause) of ``ctx``'s metric after this stage; it may learn from it."""
        raise NotImplementedError

    def describe(self, ctx: StageContext) -> str:
        """Detail for the alert's reason when this stage set the cause ("" : ``score >= ...``)."""
        return ""

    def end_one(self, reading: Reading) -> None:
        """Called once per reading after all its metrics were adjusted."""


def overrides(stage: ScoreStage, hook: str) -> bool:
    """True if ``stage``'s class overrides ``ScoreStage.<hook>``."""
    return getattr(type(stage), hook) is not getattr(ScoreStage, hook)
