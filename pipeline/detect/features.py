"""The feature dict every edgepipe detector takes (river's ``learn_one(x)``/``score_one(x)``).

``x[VALUE]``: float, the metric's value. ``x[TS_MS]``: int, the reading's event time in Unix
milliseconds; optional. Detectors that use time (``SeasonalResidualDetector``,
``EdgeResidualDetector``, the reading view of ``TwoViewDetector``: time-of-day and
day-of-week profiles; ``EdgeResidualDetector`` also forgets by elapsed time) fall back to
the previous value alone without it; ``ZScoreDetector`` ignores it.

>>> from pipeline.detect.zscore import ZScoreDetector
>>> d = ZScoreDetector(warmup=2)
>>> for v in (1.0, 1.1, 0.9):
...     d.learn_one({VALUE: v, TS_MS: 1_719_792_000_000})
>>> d.score_one({VALUE: 5.0}) > 0.99
True
"""

from __future__ import annotations

VALUE = "value"
TS_MS = "ts_ms"
