"""The edge's residual detector: closest residual, neighbouring time-of-day bins, signed memory.

``EdgeResidualDetector`` is ``SeasonalResidualDetector`` with ``residual="closest"`` (the
smallest residual of the predictors that predict) and four changes, each measured on the
simulators' labelled data (docs/detection.md):

1. **Neighbouring bins**: the time-of-day profile predicts from its own 15-minute bin and
   the ``neighbours`` bins either side: a reading that the usual value a quarter of an hour
   earlier or later explains is ordinary.
2. **Signed residual memory** (``signed=True``): rises (the reading above its closest
   prediction) are compared with the largest rises remembered, drops with the largest
   drops, each memory the ``top_k`` largest, forgotten alike. The reference is never below
   ``resolution_floor`` times the series' resolution (the smallest non-zero change between
   two readings seen), and while one side holds fewer than ``top_k`` residuals the two
   memories are used together (the ``top_k``-th largest of both, as unsigned).

Why: daily switching does not happen at the same minute every day. A streetlight's
photocell switches at dusk a few minutes earlier or later with the clouds; a valve closes
at 04:25, inside a bin whose profile is a mix of "open" and "closed". Within its own bin the
profile explains neither value, the previous value explains no jump, so every switch was a
residual as large as the whole step: a false alarm until the residual memory had seen
about four days of switches (top-k 8). The neighbouring bin holds the value on the other
side of the switch. On simulated data (docs/detection.md) false alarms fell from 150 to 82
(streetlight power 52 to 6, valve flow 29 to 1), F1 0.79 to 0.81.

What it costs: drift recall fell (0.60 to 0.24): most drifts were "detected" by the jump
back to normal at the end of their window, which a neighbouring bin now explains too.
Timestamps are needed; without them it is the closest residual of the previous value.

Why signed: many series are lopsided. A shelf's stock rises by a restock of a hundred
items and falls by one or two sales a minute, so one memory holds the restocks and a
theft of twenty items in a few minutes looks ordinary; a valve opens by 20-80 L/min, a
door by 1; a level shift or a door left open moves one way only. Against their own side's
largest, recall rose from 0.75 to 0.81 (level shift 0.69 to 0.86, door open 0.46 to 0.85,
theft 0.18 to 0.24, irrigation leak 0.10 to 0.21), false alarms 56 to 74; F1 0.83 to 0.86.
The resolution floor is what keeps it from alarming on one-item sales: on a quiet shelf
the closest residual of most drops is a fraction of an item (the day profile explains
them), so without the floor the drop memory was far below one item (F1 0.81, 174 false
alarms). Memory: about 380 bytes more per series than ``SeasonalResidualDetector``
(the second top-k list; the new attributes are slots).

3. **Young-memory calibration** (``young_calibration=True``): while the residual memory
   stands for fewer readings ``n`` than its horizon ``H = 1 / forget``, the ratio is divided
   by ``log(H / k) / log(n / k)`` (``k`` = ``top_k``, ``n`` at least ``e * k``).

Why the young-memory calibration: the ``top_k``-th largest of ``n`` residuals is about
the ``1 - k/n`` quantile, so a memory of one day (1 440 readings) holds a far lower
quantile than the mature one (``1 - k/H``): "twice the usual largest" is reached by
ordinary readings of a young series (wind gusts, a valve's second day of switching). If
residual tails are roughly exponential, the quantile grows with ``log(1/p)``, hence the
divisor: 3.9 after 50 remembered readings, 1.37 after a day of one-minute readings, 1.0 at
the horizon. A warm-started memory stands for ``PRIOR_EFFECTIVE_N`` readings. On simulated
data (docs/detection.md, fourth round) false alarms fell from 29 to 10 (precision 0.90 to
0.96) for a recall of 0.83 to 0.79, F1 0.861 to 0.864; a cold node's first day had 10.5 false
alarms per device-day, 4.3 with it.

4. **Bounded teaching** (``memory_clamp``): once the memory stands for ``clamp_after``
   readings, a residual is remembered at most ``memory_clamp`` times the reference of its
   side. An outlier then moves the memory by one slot of at most 1.5 × the reference, so
   the next anomaly of the same size still stands out; a new, noisier normal still raises
   the memory, geometrically (1.5 × per ``top_k`` large residuals).

Why bounded teaching: every anomaly used to teach the memory its own size. With about two
anomalies per device and day in the simulators, after a few days the ``top_k`` largest
residuals were mostly earlier anomalies, and recall fell with the node's age: F1 0.864 over
day 2 of a 2-day run, 0.832 over days 4-7 of a 7-day run (recall 0.73; door openings 0.53,
thefts 0.04). Bounded: 0.878 and 0.855, false alarms unchanged (docs/detection.md, fourth
round). Not from the first reading: a young memory has not yet seen a series' usual large
jumps (a door, a compressor): bounding from the 200th reading raised false alarms from 10
to 170; from the 350th to the 1 000th, F1 stays within 0.01.

``default_detector()`` (NAB, ``edgepipe detect``) is not affected.

>>> import math
>>> d = EdgeResidualDetector(warmup=20)
>>> day_ms = 86_400_000
>>> def lamp(t):  # on from 20:00, off from 06:00 (every day), 100 W
...     hour = t % day_ms / 3_600_000
...     return 100.0 if hour >= 20 or hour < 6 else 0.0
>>> for i in range(2 * 1440):  # two days, one reading a minute
...     t = i * 60_000
...     _ = d.score_value(lamp(t), t)
...     d.learn_value(lamp(t), t)
>>> t = 2 * day_ms + 19 * 3_600_000 + 50 * 60_000  # 19:50 on day three: on ten minutes early
>>> d.score_value(100.0, t) < 0.5  # the 20:00 bin, a neighbour, says 100
True
"""

from __future__ import annotations

from pipeline.detect.residual_memory import (  # noqa: F401 - young_divisor: documented here
    MAX_STEPS_PER_READING,
    EdgeResidualMemory,
    young_divisor,
)
from pipeline.detect.seasonal import SeasonalResidualDetector

__all__ = ["MAX_STEPS_PER_READING", "EdgeResidualDetector", "young_divisor"]


class EdgeResidualDetector(SeasonalResidualDetector):
    """``SeasonalResidualDetector`` (closest residual), neighbouring day bins, rises and drops apart.

    Parameters are those of ``SeasonalResidualDetector`` (``residual`` is always
    ``"closest"``; ``cooldown`` defaults to 0, as at the edge ``AlertPolicy`` makes one
    alert per episode), plus:

    neighbours
        How many time-of-day bins on each side of the reading's own bin also predict it
        (>= 0; 0 is the plain closest residual).
    signed
        Compare rises with remembered rises and drops with remembered drops (False: one
        memory, as ``SeasonalResidualDetector``).
    resolution_floor
        With ``signed``: the reference is at least this many times the smallest non-zero
        change between two readings seen (>= 0).
    young_calibration
        Divide the ratio by ``log(H / top_k) / log(n / top_k)`` while the residual memory
        stands for fewer than ``H = 1 / forget`` readings (``n``; at least ``e * top_k``).
    memory_clamp
        Once the memory stands for ``clamp_after`` readings, remember a residual at most
        this many times its side's reference (``math.inf``: unbounded; > 1).
    clamp_after
        Readings the memory stands for before residuals are bounded (>= 0).
    """

    # Parameters in slots: the base class keeps its instance dict as it is (memory per series).
    __slots__ = (
        "clamp_after",
        "memory_clamp",
        "neighbours",
        "reference_interval_s",
        "resolution_floor",
        "signed",
        "young_calibration",
    )

    def __init__(
        self,
        warmup: int = 100,
        top_k: int = 8,
        forget: float = 1e-4,
        error_alpha: float = 0.01,
        season_alpha: float = 0.1,
        day_bin_s: int = 900,
        week_bin_s: int = 1800,
        range_margin: float = 0.1,
        alert_ratio: float = 1.2,
        cooldown: int = 0,
        cooldown_factor: float = 0.5,
        neighbours: int = 1,
        signed: bool = True,
        resolution_floor: float = 2.0,
        young_calibration: bool = True,
        memory_clamp: float = 1.5,
        clamp_after: int = 500,
        reference_interval_s: float | None = None,
    ) -> None:
        super().__init__(
            warmup,
            top_k,
            forget,
            error_alpha,
            season_alpha,
            day_bin_s,
            week_bin_s,
            range_margin,
            alert_ratio,
            cooldown,
            cooldown_factor,
            residual="closest",
        )
        if neighbours < 0:
            raise ValueError(f"neighbours must be at least 0, got {neighbours}")
        if resolution_floor < 0.0:
            raise ValueError(f"resolution_floor must be at least 0, got {resolution_floor}")
        if not memory_clamp > 1.0:
            raise ValueError(f"memory_clamp must be above 1, got {memory_clamp}")
        if clamp_after < 0:
            raise ValueError(f"clamp_after must be at least 0, got {clamp_after}")
        if reference_interval_s is not None and not reference_interval_s > 0.0:
            raise ValueError(f"reference_interval_s must be positive, got {reference_interval_s}")
        self.neighbours = neighbours
        self.signed = signed
        self.resolution_floor = resolution_floor
        self.young_calibration = young_calibration
        self.memory_clamp = memory_clamp
        self.clamp_after = clamp_after
        self.reference_interval_s = reference_interval_s
        self._neighbours = neighbours
        self._residual_memory = EdgeResidualMemory(
            top_k,
            forget,
            signed,
            resolution_floor,
            young_calibration,
            memory_clamp,
            clamp_after,
            reference_interval_s,
        )
