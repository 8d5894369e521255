"""The multivariate view at the edge: metrics of one device that move together, and readings that break the link.

Some metrics of a device are physically linked: a traffic counter's speed falls as its
vehicle count rises, an air-quality monitor's PM2.5 and NO2 follow the same traffic, a
cold cabinet's temperature falls while its compressor draws power. An anomaly that breaks
the link (an accident: few vehicles *and* slow ones; a door left open: the compressor runs
and the cabinet still warms) may look ordinary one metric at a time.

Two small stages, no I/O:

* ``LinkedPair`` (one per device and candidate relation): an exponentially weighted linear
  regression of ``y`` on ``x``, where ``x`` is metric A's value and ``y`` is metric B's value
  (``LEVEL``) or its change since the previous reading (``CHANGE``). Six floats of moments,
  the previous B, and a small forgetting memory of the largest standardised residuals.
* ``LinkedMetrics`` (one per node): the pairs of every device. On a device's first reading
  every pair of its metrics gets three candidates (B on A, the change of B on A, the change
  of A on B); at the end of the warm-up only the candidates whose learned correlation
  ``|rho|`` reaches ``keep`` stay, so unrelated metrics cost nothing and never score.

Meaning of the score: ``z`` is B's residual from the learned line over the residual scale
``sqrt(var_y (1 - rho^2))``; ``r = |z| / ref`` with ``ref`` the ``top_k``-th largest ``|z|``
remembered (slowly forgotten, at least ``floor``); score ``r^2 / (1 + r^2)``, the univariate
detectors' scale (0.5: as far off the line as the usual largest; 0.8: twice). A pair scores
only while ``|rho| >= threshold``. The score goes to the metric of the pair that is further
from its own mean (in its own standard deviations), so a spike on one metric, which also
breaks the link, lands on the metric the univariate detector already flags.
"""

from __future__ import annotations

import math
from array import array
from itertools import combinations

from pipeline.detect.stages import ScoreStage, StageContext
from pipeline.learn.memory import DecayingTopK
from pipeline.learn.scores import ratio_score
from pipeline.protocol import Reading
from pipeline.protocol.causes import Cause

LEVEL = 0
CHANGE = 1

MAX_RHO_SQUARED = 0.999  # a perfect correlation would make the residual scale 0 (every z infinite)

# indices into LinkedPair._s
_N, _MX, _MY, _VX, _VY, _CXY, _PREV = range(7)


class LinkedPair:
    """One learned relation of a device: ``y`` (B, or B's change) on ``x`` (A).

    >>> p = LinkedPair("a", "b", LEVEL, warmup=50)
    >>> for i in range(400):
    ...     x = float(i % 17)
    ...     p.learn_one(x, 2.0 * x + 0.1 * (i % 3))
    >>> round(p.correlation, 2)
    1.0
    >>> p.score_one(5.0, 10.1) < 0.5, p.score_one(5.0, 30.0) > 0.99
    (True, True)
    """

    __slots__ = ("_growth", "_memory", "_s", "a", "b", "floor", "forget", "mode", "threshold", "top_k", "warmup", "weight")

    def __init__(
        self,
        a: str,
        b: str,
        mode: int = LEVEL,
        warmup: int = 720,
        weight: float = 0.002,
        threshold: float = 0.8,
        top_k: int = 4,
        forget: float = 1e-4,
        floor: float = 3.0,
    ) -> None:
        if mode not in (LEVEL, CHANGE):
            raise ValueError(f"mode must be LEVEL or CHANGE, got {mode}")
        if warmup < 2 or not 0.0 < weight < 1.0 or top_k < 1 or not 0.0 <= forget < 1.0:
            raise ValueError("need warmup >= 2, weight in (0, 1), top_k >= 1, forget in [0, 1)")
        self.a, self.b, self.mode = a, b, mode
        self.warmup, self.weight, self.threshold = warmup, weight, threshold
        self.top_k, self.forget, self.floor = top_k, forget, floor
        self._s = array("d", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.nan])
        self._memory = DecayingTopK(top_k)  # the largest |z| remembered, slowly forgotten
        self._growth = 1.0 / (1.0 - forget)

    def __repr__(self) -> str:
        mode = "LEVEL" if self.mode == LEVEL else "CHANGE"
        return f"LinkedPair({self.a!r}, {self.b!r}, {mode}, rho={self.correlation:.2f})"

    @property
    def correlation(self) -> float:
        """The learned correlation of ``x`` and ``y`` (0 while either has no spread)."""
        s = self._s
        vxy = s[_VX] * s[_VY]
        return s[_CXY] / math.sqrt(vxy) if vxy > 0.0 else 0.0

    @property
    def warm(self) -> bool:
        return self._s[_N] >= self.warmup

    def _y(self, xb: float) -> float:
        return xb if self.mode == LEVEL else xb - self._s[_PREV]

    def residual(self, xa: float, xb: float) -> tuple[float, float, float]:
        """(z of the residual from the line, A's z from its mean, y's z from its mean); NaN if unknown."""
        s = self._s
        y = self._y(xb)
        vx, vy = s[_VX], s[_VY]
        if vx <= 0.0 or vy <= 0.0 or y != y:
            return math.nan, math.nan, math.nan
        rho2 = min(s[_CXY] * s[_CXY] / (vx * vy), MAX_RHO_SQUARED)
        e = y - s[_MY] - s[_CXY] / vx * (xa - s[_MX])
        return e / math.sqrt(vy * (1.0 - rho2)), (xa - s[_MX]) / math.sqrt(vx), (y - s[_MY]) / math.sqrt(vy)

    def reference(self) -> float:
        return max(self.floor, self._memory.kth_when_full())

    def score_one(self, xa: float, xb: float) -> float:
        """How far ``(xa, xb)`` is off the learned line, in [0, 1); 0 while warming up or weak."""
        if not self.warm or abs(self.correlation) < self.threshold:
            return 0.0
        z = self.residual(xa, xb)[0]
        return 0.0 if z != z else ratio_score(abs(z) / self.reference())

    def learn_one(self, xa: float, xb: float) -> None:
        s = self._s
        y = self._y(xb)
        s[_PREV] = xb
        if xa != xa or y != y:
            return
        if s[_N] >= self.warmup // 2:  # remember the residual before the line learns it
            z = abs(self.residual(xa, xb)[0])
            if z == z:
                self._remember(z)
        s[_N] += 1.0
        w = max(self.weight, 1.0 / s[_N])
        dx, dy = xa - s[_MX], y - s[_MY]
        s[_MX] += w * dx
        s[_MY] += w * dy
        k = 1.0 - w
        s[_VX] = k * (s[_VX] + w * dx * dx)
        s[_VY] = k * (s[_VY] + w * dy * dy)
        s[_CXY] = k * (s[_CXY] + w * dx * dy)

    def _remember(self, z: float) -> None:
        memory = self._memory
        memory.decay(self._growth)
        memory.add(z)


class LinkedMetrics(ScoreStage):
    """The linked pairs of every device: ``score_one(reading)`` then ``learn_one(reading)``.

    A device's candidates are made on its first reading (up to ``max_metrics`` metrics, the
    first ones of the reading); those whose ``|rho|`` is below ``keep`` at the end of the
    warm-up are dropped. ``score_one`` returns the relation score of each metric that has
    one (the highest of its pairs'); metrics without a strong pair are absent.
    """

    def __init__(
        self,
        warmup: int = 720,
        threshold: float = 0.8,
        keep: float = 0.6,
        max_metrics: int = 4,
        modes: tuple[int, ...] = (LEVEL, CHANGE),
        weight: float = 0.002,
        floor: float = 3.0,
    ) -> None:
        self.warmup, self.threshold, self.keep = warmup, threshold, keep
        self.weight, self.floor = weight, floor
        self.max_metrics, self.modes = max_metrics, modes
        # a device's pairs: a list while it warms up, a tuple of the strong ones after
        self.pairs: dict[str, list[LinkedPair] | tuple[LinkedPair, ...]] = {}
        self._relation: dict[str, float] = {}  # the current reading's relation scores, by metric

    def begin_one(self, reading: Reading) -> None:
        """Score, then learn, the reading's pairs (before its metrics are adjusted)."""
        self._relation = self.score_one(reading)
        self.learn_one(reading)

    def adjust_one(self, ctx: StageContext, score: float, cause: Cause) -> tuple[float, Cause]:
        """Raise the metric's score to its relation score (cause ``relation``) when higher."""
        relation = self._relation
        linked = relation.get(ctx.metric, 0.0) if relation else 0.0
        if linked > score:
            return linked, Cause.RELATION
        return score, cause

    def _candidates(self, reading: Reading) -> list[LinkedPair]:
        names = list(reading.metrics)[: self.max_metrics]
        out = []
        for a, b in combinations(names, 2):
            for mode in self.modes:
                out.append(self._pair(a, b, mode))
                if mode == CHANGE:
                    out.append(self._pair(b, a, mode))
        return out

    def _pair(self, a: str, b: str, mode: int) -> LinkedPair:
        return LinkedPair(
            a, b, mode, warmup=self.warmup, weight=self.weight, threshold=self.threshold, floor=self.floor
        )

    def score_one(self, reading: Reading) -> dict[str, float]:
        """The relation score of each metric of ``reading`` that belongs to a strong pair."""
        out: dict[str, float] = {}
        metrics = reading.metrics
        for p in self.pairs.get(reading.device, ()):
            xa, xb = metrics.get(p.a), metrics.get(p.b)
            if xa is None or xb is None:
                continue
            score = p.score_one(xa, xb)
            if score <= 0.0:
                continue
            _, za, zy = p.residual(xa, xb)
            metric = p.a if abs(za) > abs(zy) else p.b
            if score > out.get(metric, 0.0):
                out[metric] = score
        return out

    def learn_one(self, reading: Reading) -> None:
        device = reading.device
        pairs = self.pairs.get(device)
        if pairs is None:
            if len(reading.metrics) < 2:
                self.pairs[device] = ()
                return
            pairs = self.pairs[device] = self._candidates(reading)
        metrics = reading.metrics
        for p in pairs:
            xa, xb = metrics.get(p.a), metrics.get(p.b)
            if xa is not None and xb is not None:
                p.learn_one(xa, xb)
        if isinstance(pairs, list) and pairs and pairs[0].warm:
            self.pairs[device] = tuple(p for p in pairs if abs(p.correlation) >= self.keep)
