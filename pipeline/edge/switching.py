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
metric's floor and range) and the smallest change between two readings (its step); at
each **switch-on** (the previous reading at the floor, this one at least ``rise_share`` of
the range above it) the device's other metrics' values, the last ``remember`` of them.

What is scored (``adjust_one``, after the detector): a switch-on whose score reaches
``raise_score`` is **explained** when, for every other metric of the reading, at least
``agree`` remembered switch-on contexts lie within ``max(steps * step, share * |value|)``
of its value; an explained switch-on scores at most ``explained_cap``. Only switch-ons:
a drop to the floor is how a dip or a failure looks, and those must stay alerts.

An injected power spike of a lamp in daylight has an ambient reading of thousands of lux,
far from the dusk contexts, and still alerts; so does a switch-on with nothing to compare
(a device with one metric, or fewer than ``agree`` remembered switch-ons).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping


class _Series:
    __slots__ = ("contexts", "high", "low", "previous", "step")

    def __init__(self, value: float) -> None:
        self.low = value
        self.high = value
        self.previous = value
        self.step = math.inf  # the smallest non-zero change between two readings
        self.contexts: deque[dict[str, float]] | None = None  # other metrics at switch-ons


class SwitchContext:
    """Caps the score of a switch-on that the device's other metrics explain (see the module docstring).

    Parameters
    ----------
    raise_score
        Only switch-ons scored at least this high are examined (the alert policy's raise score).
    explained_cap
        The score of an explained switch-on (below the alert policy's clear score).
    rise_share
        A switch-on rises from the floor by at least this share of the metric's range.
    remember, agree
        Contexts kept per metric, and how many must agree with the reading's.
    steps, share
        Agreement: within ``max(steps * step, share * |value|)`` on every other metric.
    """

    def __init__(
        self,
        raise_score: float = 0.8,
        explained_cap: float = 0.3,
        rise_share: float = 0.1,
        remember: int = 8,
        agree: int = 2,
        steps: float = 2.0,
        share: float = 0.02,
    ) -> None:
        if agree < 1 or remember < agree:
            raise ValueError(f"need 1 <= agree <= remember, got agree={agree}, remember={remember}")
        self.raise_score = raise_score
        self.explained_cap = explained_cap
        self.rise_share = rise_share
        self.remember = remember
        self.agree = agree
        self.steps = steps
        self.share = share
        self._series: dict[tuple[str, str], _Series] = {}
        self.explained = 0  # switch-ons whose score was capped

    def adjust_one(self, device: str, metrics: Mapping[str, float], metric: str, score: float) -> float:
        """The score of ``metric`` in a reading of ``device`` (all its ``metrics``), before ``learn_one``."""
        if len(metrics) < 2:
            return score
        s = self._series.get((device, metric))
        value = metrics[metric]
        if s is None or not self._switch_on(s, value):
            return score
        others = {m: v for m, v in metrics.items() if m != metric}
        contexts = s.contexts
        if score >= self.raise_score and contexts is not None and self._agrees(device, contexts, others):
            score = min(score, self.explained_cap)
            self.explained += 1
        if contexts is None:
            contexts = s.contexts = deque(maxlen=self.remember)
        contexts.append(others)
        return score

    def learn_one(self, device: str, metrics: Mapping[str, float]) -> None:
        """Learn a reading's values (after every metric of it has been adjusted)."""
        if len(metrics) < 2:
            return
        for metric, value in metrics.items():
            s = self._series.get((device, metric))
            if s is None:
                self._series[(device, metric)] = _Series(value)
                continue
            change = abs(value - s.previous)
            if 0.0 < change < s.step:
                s.step = change
            s.low = min(s.low, value)
            s.high = max(s.high, value)
            s.previous = value

    def _switch_on(self, s: _Series, value: float) -> bool:
        span = s.high - s.low
        return span > 0.0 and s.previous <= s.low and value >= s.low + self.rise_share * span

    def _agrees(self, device: str, contexts: deque[dict[str, float]], others: Mapping[str, float]) -> bool:
        for metric, value in others.items():
            other = self._series.get((device, metric))
            step = other.step if other is not None and other.step < math.inf else 0.0
            tolerance = max(self.steps * step, self.share * abs(value))
            near = sum(1 for c in contexts if abs(c.get(metric, math.inf) - value) <= tolerance)
            if near < self.agree:
                return False
        return True

    def __repr__(self) -> str:
        return f"SwitchContext(series={len(self._series)}, explained={self.explained})"
