"""The base of every edgepipe value detector: a river anomaly detector with a fast path.

``ValueDetector`` subclasses river's ``AnomalyDetector``: ``learn_one(x)`` and
``score_one(x)`` take the feature dict of ``pipeline.detect.features`` (``x["value"]``,
optional ``x["ts_ms"]``); ``clone()``, ``repr`` and ``_get_params()`` come from river's
``Base``, which reads the ``__init__`` arguments back from attributes of the same names.
So a detector stores every constructor argument unchanged under its own name and keeps
learned state in underscore attributes.

The hot path: the node scores every metric of every reading, and building a dict per call
cost about 0.3 µs of the ~20 µs a reading takes (docs/decisions/0007-detection-package.md).
Each detector therefore implements ``score_value(value, ts_ms)`` and
``learn_value(value, ts_ms)``; the dict API calls them, and so does the node's scorer
directly: one implementation, two entry points.

``WarmStartable``: detectors that can start from a device kind's merged model (model sync)
have ``warm_start(prior)``; the scorer checks with ``isinstance``.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from river.base import AnomalyDetector

from pipeline.detect.features import TS_MS, VALUE

if TYPE_CHECKING:
    from pipeline.learn.sync_stats import DetectorPrior


class ValueDetector(AnomalyDetector):
    """A river anomaly detector of one metric's values; score in [0, 1], high = anomalous."""

    @abc.abstractmethod
    def score_value(self, value: float, ts_ms: int | None = None) -> float:
        """Score in [0, 1] of a value not learned yet (``ts_ms``: event time, Unix ms)."""

    @abc.abstractmethod
    def learn_value(self, value: float, ts_ms: int | None = None) -> None:
        """Learn a value (after scoring it)."""

    def __repr__(self) -> str:
        """``Name(param=value, ...)`` on one line, from river's ``_get_params``.

        Why not river's multi-line repr: ours can be pasted back as code (``eval(repr(d))``
        rebuilds the detector, which the tests and the docs rely on) and fits one log line.
        """
        args = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({args})"

    def score_one(self, x: dict[Any, Any]) -> float:
        """river's API: ``x[VALUE]``, optional ``x[TS_MS]`` (pipeline.detect.features)."""
        return self.score_value(x[VALUE], x.get(TS_MS))

    def learn_one(self, x: dict[Any, Any]) -> None:
        """river's API: ``x[VALUE]``, optional ``x[TS_MS]`` (pipeline.detect.features)."""
        self.learn_value(x[VALUE], x.get(TS_MS))


@runtime_checkable
class WarmStartable(Protocol):
    """A detector that can start from its kind's merged model instead of from nothing."""

    def warm_start(self, prior: DetectorPrior) -> None: ...
