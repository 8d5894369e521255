"""``Detection``: the node's detection sequence, written once; ``build`` makes it.

The edge node (``EdgeNode.process`` and ``tick``) and the quality bench
(``pipeline.bench.quality``, and through it ``pipeline.bench.rates``) both call
``build(...)`` and then, per reading, ``observe(reading)``; now and then ``tick()``:

    observe(reading)
        SilenceWatch.learn_one ──back──► heard_again: the dropout alert clears
        [every event_check_ms of event time: tick()]
        ReadingScorer.score_one: per metric detector → stuck → links → switches (→ linked)
        AlertPolicy.update_one per metric ──► raise / escalate / clear
    tick()
        dropout_alerts: devices silent far longer than usual ──► raise

``Detection`` holds no I/O: the alerts it returns are sent by the caller (the node puts them
in its outbox; the bench counts them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.detect.alerts import AlertPolicy, AlertRules
from pipeline.detect.base import ValueDetector
from pipeline.detect.irrigation import IrrigationZones
from pipeline.detect.linked import LinkedMetrics
from pipeline.detect.point import Point
from pipeline.detect.registry import EDGE_DETECTOR, choose_detectors, detector_factory
from pipeline.detect.river_model import ModelChoice
from pipeline.detect.scorer import PriorLookup, RatePriorLookup, ReadingScorer
from pipeline.detect.silence import SILENCE_CHECK_MS, SilenceWatch, dropout_alerts, heard_again
from pipeline.detect.stages import ScoreStage
from pipeline.detect.stuck import StuckWatch
from pipeline.detect.switching import SwitchContext
from pipeline.protocol import Alert, Reading
from pipeline.protocol.catalog import BUILTIN, Catalog
from pipeline.protocol.causes import Cause

# One metric of an observed reading: (the point with its score, the cause, what the alert
# policy made of it: None for nothing new). Plain tuples on the hot path (see scorer.Scored).
ScoredPoint = tuple[Point, Cause, Alert | None]


# What ``Detection.observe`` found in a reading: (every metric scored, the alerts in order).
Observation = tuple[list[ScoredPoint], list[Alert]]


class Detection:
    """Scorer, silence watch and alert policy of one site; see the module docstring.

    ``event_check_ms``: also run ``tick()`` from ``observe`` at every multiple of this much
    event time a reading reaches (the node, which no longer checks on a wall-clock timer: a
    backlog replayed at thousands of readings a second spans hours of event time between two
    wall-clock ticks, and a slow node must not see silence where the stream has none); None:
    only when the caller ticks (the bench ticks on the fleet's ticks). ``timer``, when given (``time.perf_counter``), times the scorer alone into
    ``score_seconds`` (``detect.us_per_reading``).
    """

    def __init__(
        self,
        scorer: ReadingScorer,
        policy: AlertPolicy,
        silence: SilenceWatch | None = None,
        event_check_ms: int | None = None,
        timer: Callable[[], float] | None = None,
    ) -> None:
        self.scorer = scorer
        self.policy = policy
        self.silence = silence
        self.event_check_ms = event_check_ms
        self.timer = timer
        self.score_seconds = 0.0
        self.readings = 0
        self._next_check_ms = 0

    @property
    def detectors(self) -> dict[tuple[str, str], ValueDetector]:
        """The detector of every (device, metric) seen."""
        return self.scorer.detectors

    def observe(self, reading: Reading) -> Observation:
        """Detect on one accepted reading: score every metric, update the alerts."""
        alerts: list[Alert] = []
        silence = self.silence
        if silence is not None:
            if silence.learn_one(reading.device, reading.ts, reading.kind):
                if silence.missed:  # silent at a checkpoint the watermark had not reached
                    alerts.extend(dropout_alerts(self.policy, silence, silence.missed))
                    silence.missed.clear()
                back = heard_again(self.policy, reading)
                if back is not None:
                    alerts.append(back)
            check = self.event_check_ms
            if check is not None and reading.ts >= self._next_check_ms:
                self._next_check_ms = (reading.ts // check + 1) * check
                alerts.extend(self.tick())
        timer = self.timer
        if timer is None:
            scored = self.scorer.score_one(reading)
        else:
            started = timer()
            scored = self.scorer.score_one(reading)
            self.score_seconds += timer() - started
        self.readings += 1
        points: list[ScoredPoint] = []
        policy = self.policy
        device, kind, ts, seq = reading.device, reading.kind, reading.ts, reading.seq
        for metric, value, score, cause, detail in scored:
            point = Point(device, kind, metric, ts, seq, value, score)
            alert = policy.update_one(point, cause, detail)
            if alert is not None:
                alerts.append(alert)
            points.append((point, cause, alert))
        return points, alerts

    def tick(self) -> list[Alert]:
        """A dropout alert per device silent at a checkpoint behind the site's watermark.

        When it is called changes when the alerts come out, never which: the watermark is
        event time (``SilenceWatch``), so calling it more often only finds them sooner.
        """
        if self.silence is None:
            return []
        return dropout_alerts(self.policy, self.silence)


@dataclass(frozen=True, slots=True)
class Link:
    """A relation between two kinds' metrics that a cross-device stage watches (``[[links]]``).

    ``waters``: the ``source`` metric (a valve's flow, 0 when closed) waters the ``target``
    metric (a soil probe's moisture) of devices learned to be in its zone (``IrrigationZones``).
    """

    relation: str
    source: tuple[str, str]  # (kind, metric)
    target: tuple[str, str]

    def __str__(self) -> str:
        return f"{'.'.join(self.source)} {self.relation} {'.'.join(self.target)}"


def _waters(link: Link, alert: AlertRules) -> ScoreStage:
    return IrrigationZones(*link.source, *link.target, valve_score=alert.raise_score)


# The relations a link may name, and the stage each one makes (one stage per link).
RELATIONS: dict[str, Callable[[Link, AlertRules], ScoreStage]] = {"waters": _waters}
# Without [[links]]: the built-in farm's valves water its soil probes (today's irrigation zones).
DEFAULT_LINKS = (Link("waters", ("irrigation_valve", "flow"), ("soil_probe", "moisture")),)

NODE_STAGES = ("stuck", "links", "switching")  # the node's, in order
ALL_STAGES = (*NODE_STAGES, "linked")  # "linked": the multivariate view (LinkedMetrics), a bench experiment


def make_stages(
    name: str, alert: AlertRules, catalog: Catalog = BUILTIN, links: Sequence[Link] = DEFAULT_LINKS
) -> list[ScoreStage]:
    """Fresh score stages by name (``ALL_STAGES``), with the alert rules, kinds and links they depend on.

    ``links`` makes one cross-device stage per link (none for an empty list); every other
    name makes one stage.
    """
    if name == "links":
        return [RELATIONS[link.relation](link, alert) for link in links]
    if name == "stuck":
        return [StuckWatch()]
    if name == "switching":
        return [SwitchContext(raise_score=alert.raise_score, catalog=catalog)]
    if name == "linked":
        return [LinkedMetrics()]
    raise KeyError(f"no score stage {name!r}; known: {', '.join(ALL_STAGES)}")


def build(
    site: str,
    alert: AlertRules,
    *,
    detector: str = EDGE_DETECTOR,
    choices: Mapping[str, ModelChoice] | None = None,
    catalog: Catalog = BUILTIN,
    links: Sequence[Link] = DEFAULT_LINKS,
    stages: Sequence[str] = NODE_STAGES,
    silence: bool = True,
    prior: PriorLookup | None = None,
    rate_prior: RatePriorLookup | None = None,
    event_check_ms: int | None = None,
    lateness_ms: int = 0,
    timer: Callable[[], float] | None = None,
) -> Detection:
    """The detection of one site: what the node runs, and what the quality bench measures.

    ``alert`` is the ``alert`` settings section (``AlertRules``); ``detector`` a name in
    ``DETECTORS`` (one template, cloned per series), ``choices`` the ``[detect.kinds]``
    entries that replace it for a kind or a kind.metric (``choose_detectors``); ``stages``
    names from ``ALL_STAGES``, in order; ``catalog`` the site's kinds (switch contexts read
    their metrics and resolutions); ``links`` the ``[[links]]`` (the node: ``links_of(settings)``),
    one cross-device stage each at the ``links`` step. ``prior(kind, metric)`` warm-starts new detectors (model sync);
    ``rate_prior(kind, metric, interval_s)`` those ``prior`` had nothing for, at their second
    reading (the node's built-in priors, kept per reporting rate: ``ReadingScorer``).
    ``lateness_ms``: how late (event time) a reading may arrive; dropouts are judged that far
    behind the site's event time (the node: ``aggregate.lateness_s``).
    """
    template = detector_factory(detector)()
    new_detector = choose_detectors(detector, choices or {})
    made = [stage for name in stages for stage in make_stages(name, alert, catalog, links)]
    scorer = ReadingScorer(new_detector, made, prior=prior, rate_prior=rate_prior)
    policy = AlertPolicy.from_settings(site, alert, model_version=type(template).__name__)
    watch = SilenceWatch(check_ms=event_check_ms or SILENCE_CHECK_MS, lateness_ms=lateness_ms) if silence else None
    return Detection(scorer, policy, watch, event_check_ms, timer)
