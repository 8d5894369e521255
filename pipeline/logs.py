"""What the long-running roles log, and how: text for people, JSON lines for log shippers.

A log call that carries data names it as fields, through :func:`event`: the text line reads
``summary received=1200 accepted=1180 dead_letters.bad_json=18``, and the JSON line is one
object ``{"ts", "level", "logger", "msg", "received": 1200, ...}``. Only
:func:`configure_logging` (called once by ``cli.py``) touches handlers; everything else
just logs. :class:`WarningBudget` keeps floods (dead letters) from drowning the log.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def flatten(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in fields.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return json.dumps(text) if not text or any(c in text for c in ' ="') else text


def key_values(fields: Mapping[str, Any]) -> str:
    """``k=v k=v``, nested mappings flattened; values with spaces or quotes are quoted."""
    return " ".join(f"{k}={_text(v)}" for k, v in flatten(fields).items())


def event(logger: logging.Logger, level: int, what: str, /, **fields: Any) -> None:
    """Log ``what`` with ``fields``: appended as ``k=v`` in text, as keys in JSON."""
    if not logger.isEnabledFor(level):
        return
    message = f"{what} {key_values(fields)}" if fields else what
    logger.log(level, "%s", message, extra={"event": what, "fields": fields}, stacklevel=2)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": getattr(record, "event", None) or record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                out.setdefault(str(key), value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(verbose: bool = False, fmt: LogFormat = "text") -> None:
    """The root logger to stderr in ``fmt``, INFO (DEBUG with ``verbose``); replaces handlers."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )


class WarningBudget:
    """At most ``per_window`` warnings per key per ``window_s``; the rest counted, not logged.

    Why: a device sending garbage at 100 messages a second must not bury everything else,
    yet the operator must learn that it happened and how much. Time is given, not read.

    >>> budget = WarningBudget(per_window=2, window_s=60)
    >>> [budget.allow("bad_json", now) for now in (0, 1, 2, 3)]
    [True, True, False, False]
    >>> budget.take_suppressed(now=30), budget.take_suppressed(now=61)
    ({}, {'bad_json': 2})
    >>> budget.allow("bad_json", 61)
    True
    """

    def __init__(self, per_window: int, window_s: float = 60.0) -> None:
        if per_window < 0 or window_s <= 0:
            raise ValueError("per_window must be >= 0 and window_s > 0")
        self.per_window = per_window
        self.window_s = window_s
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> (start, logged, suppressed)

    def allow(self, key: str, now: float) -> bool:
        """Whether to log this one; a refusal is counted for :meth:`take_suppressed`."""
        start, logged, suppressed = self._windows.get(key, (now, 0, 0))
        if now - start >= self.window_s:  # not yet taken: the count carries into the new window
            start, logged = now, 0
        if logged < self.per_window:
            self._windows[key] = (start, logged + 1, suppressed)
            return True
        self._windows[key] = (start, logged, suppressed + 1)
        return False

    def take_suppressed(self, now: float) -> dict[str, int]:
        """Keys whose window has ended with warnings suppressed, and how many; windows reset."""
        due: dict[str, int] = {}
        for key, (start, _logged, suppressed) in list(self._windows.items()):
            if now - start >= self.window_s:
                if suppressed:
                    due[key] = suppressed
                del self._windows[key]
        return due
