"""Switch-ons that a device's other sensors explain: a street lamp lit because its photocell reads dusk.

Why: some metrics switch. A street lamp goes from 0 W to its power when its own ambient
sensor reads about 20 lx; a compressor starts when the cabinet reaches its upper
temperature. The time of day of a switch moves with the weather: on a cloudy evening every
lamp of a city site lit 20 minutes before the day profile expected it, and each one raised
an alert (6 of the 29 false alarms of the full quality run, docs/detection.md). The
device's other metrics say why: the ambient reading at that switch-on is the one of every
earlier switch-on. A linear relation between metrics (``LinkedMetrics``) cannot say this;
the context of the switch can.

What is learned, per device and metric, online: the lowest and highest value seen (the
metric's floor and range); at each **switch-on** (the previous reading at the floor, this
one at least ``rise_share`` of the range above it, once the device has sent
``min_readings``) the device's other metrics' values, the last ``remember`` of them. State:
one array of three doubles per metric and device, and contexts only for metrics that
switch (in the bench's 10,000-device farm site, about 0.5 MB; a first version with an
object per series took 17 MB).

What is scored (``adjust_one``, after the detector): a switch-on whose score reaches
``raise_score`` is **explained** when, for every other metric of the reading, at least
``agree`` remembered switch-on contexts lie within ``max(steps * resolution, share *
|value|)`` of its value (the catalogue's resolution, docs/protocol.md); an explained
switch-on scores at most ``explained_cap``. Only switch-ons: a drop to the floor is how a
dip or a failure looks, and those must stay alerts. Measured (docs/detection.md, sixth
round): full quality run F1 0.898 -> 0.900, false alarms 29 -> 24.

An injected power spike of a lamp in daylight has an ambient reading of thousands of lux,
far from the dusk contexts, and still alerts; so does a switch-on with nothing to compare
(a device with one metric, or fewer than ``agree`` remembered switch-ons).
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Mapping

from pipeline.detect.stages import ScoreStage, StageContext
from pipeline.protocol import Reading
from pipeline.protocol.catalog import BUILTIN, Catalog
from pipeline.protocol.causes import Cause

_LOW, _HIGH, _PREVIOUS = 0, 1, 2  # per metric, in the device's array


class _Device:
    __slots__ = ("contexts", "index", "readings", "values")

    def __init__(self, index: dict[str, int]) -> None:
        self.index = index  # metric -> position (the kind's catalogue order), shared per kind
        self.values = array("d", [math.nan]) * (3 * len(index))
        self.readings = 0
        self.contexts: dict[str, deque[dict[str, float]]] | None = None  # other metrics at switch-ons


class SwitchContext(ScoreStage):
    """Caps the score of a switch-on that the device's other metrics explain (see the module docstring).

    Parameters
    ----------
    raise_score
        Only switch-ons scored at least this high are examined (the alert policy's raise score).
    explained_cap
        The score of an explained switch-on (below the alert policy's clear score).
    rise_share
        A switch-on rises from the floor by at least this share of the metric's range.
    min_readings
        Readings of a device before its switch-ons count (a young range makes every rise one).
    remember, agree
        Contexts kept per metric, and how many must agree with the reading's.
    steps, share
        Agreement: within ``max(steps * resolution, share * |value|)`` on every other metric.
    """

    def __init__(
        self,
        raise_score: float = 0.8,
        explained_cap: float = 0.3,
        rise_share: float = 0.1,
        min_readings: int = 100,
        remember: int = 8,
        agree: int = 2,
        steps: float = 2.0,
        share: float = 0.02,
        catalog: Catalog = BUILTIN,
    ) -> None:
        if agree < 1 or remember < agree:
            raise ValueError(f"need 1 <= agree <= remember, got agree={agree}, remember={remember}")
        self.raise_score = raise_score
        self.explained_cap = explained_cap
        self.rise_share = rise_share
        self.min_readings = min_readings
        self.remember = remember
        self.agree = agree
        self.steps = steps
        self.share = share
        self.catalog = catalog  # the site's kinds (built-ins and [kinds.NAME]): metrics and resolutions
        self._resolutions = catalog.resolutions
        self._devices: dict[str, _Device] = {}
        self._indexes: dict[str, dict[str, int]] = {
            name: {m: i for i, m in enumerate(kind.metrics)} for name, kind in catalog.kinds.items() if len(kind.metrics) > 1
        }
        self.explained = 0  # switch-ons whose score was capped

    def cap_one(self, device: str, kind: str, metrics: Mapping[str, float], metric: str, score: float) -> float:
        """``adjust_one``'s score for ``metric`` of a reading of ``device`` (all its ``metrics``)."""
        ctx = StageContext(device, kind, metric, metrics[metric], 0, metrics, (device, metric))
        return self.adjust_one(ctx, score, Cause.ANOMALY)[0]

    def end_one(self, reading: Reading) -> None:
        """Learn the reading once all its metrics were adjusted."""
        self.learn_one(reading.device, reading.kind, reading.metrics)

    def adjust_one(self, ctx: StageContext, score: float, cause: Cause) -> tuple[float, Cause]:
        """The score of ``ctx.metric`` (the reading's other metrics in view), before ``learn_one``; the cause unchanged."""
        device, kind, metrics, metric = ctx.device, ctx.kind, ctx.metrics, ctx.metric
        d = self._devices.get(device)
        if d is None or len(metrics) < 2 or d.readings < self.min_readings:
            return score, cause
        j = d.index.get(metric)
        if j is None:
            return score, cause
        i = 3 * j
        low, high, previous = d.values[i + _LOW], d.values[i + _HIGH], d.values[i + _PREVIOUS]
        span = high - low
        if not (span > 0.0 and previous <= low and metrics[metric] >= low + self.rise_share * span):
            return score, cause  # not a switch-on (NaN compares false: a metric not seen yet)
        others = {m: v for m, v in metrics.items() if m != metric}
        contexts = d.contexts.get(metric) if d.contexts is not None else None
        if score >= self.raise_score and contexts is not None and self._agrees(kind, contexts, others):
            score = min(score, self.explained_cap)
            self.explained += 1
        if contexts is None:
            if d.contexts is None:
                d.contexts = {}
            contexts = d.contexts[metric] = deque(maxlen=self.remember)
        contexts.append(others)
        return score, cause

    def learn_one(self, device: str, kind: str, metrics: Mapping[str, float]) -> None:
        """Learn a reading's values (after every metric of it has been adjusted)."""
        d = self._devices.get(device)
        if d is None:
            index = self._indexes.get(kind)
            if index is None:
                return  # a kind of one metric (or not in the catalogue): nothing to explain with
            d = self._devices[device] = _Device(index)
        values = d.values
        for metric, value in metrics.items():
            j = d.index.get(metric)
            if j is None:
                continue
            i = 3 * j
            if not value >= values[i + _LOW]:  # also the first value (NaN)
                values[i + _LOW] = value
            if not value <= values[i + _HIGH]:
                values[i + _HIGH] = value
            values[i + _PREVIOUS] = value
        d.readings += 1

    def _agrees(self, kind: str, contexts: deque[dict[str, float]], others: Mapping[str, float]) -> bool:
        for metric, value in others.items():
            tolerance = max(self.steps * self._resolutions.get((kind, metric), 0.0), self.share * abs(value))
            near = sum(1 for c in contexts if abs(c.get(metric, math.inf) - value) <= tolerance)
            if near < self.agree:
                return False
        return True

    def __repr__(self) -> str:
        return f"SwitchContext(devices={len(self._devices)}, explained={self.explained})"
