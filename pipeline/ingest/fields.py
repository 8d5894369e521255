"""Small pure helpers shared by the adapters: topic patterns, JSON pointers, ids, timestamps.

Kept apart from the adapters so that ``pipeline.config`` can check ``[[ingest]]`` entries
(topic patterns, pointers) with the very code that later applies them.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.protocol.reasons import Reason
from pipeline.protocol.topics import is_valid_id

PLACEHOLDERS = ("{site}", "{device}", "{kind}")
_MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_INT_DIVISORS = {"ms": 1, "us": 1000, "ns": 1_000_000}
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: beyond, a timestamp is garbage


class Refusal(Exception):
    """Raised inside an adapter; the adapter turns it into a typed refusal (never escapes)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason.value}: {detail}")


# -- topic patterns ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicPattern:
    """An MQTT topic filter whose levels may be ``{site}``, ``{device}`` or ``{kind}``.

    A placeholder matches one level, like ``+``, and captures it; a trailing ``#`` captures
    the rest (Zigbee2MQTT friendly names may contain ``/``).

    >>> p = TopicPattern.parse("sensors/{site}/{device}/data")
    >>> p.subscription(site="farm"), p.match("sensors/farm/p1/data")
    ('sensors/farm/+/data', {'site': 'farm', 'device': 'p1'})
    >>> TopicPattern.parse("zigbee2mqtt/#").match("zigbee2mqtt/kitchen/fridge")
    {'#': 'kitchen/fridge'}
    """

    levels: tuple[str, ...]

    @classmethod
    def parse(cls, pattern: str) -> TopicPattern:
        """The pattern, or ``ValueError`` saying what is wrong with it (config check)."""
        if not pattern:
            raise ValueError("empty topic pattern")
        if len(pattern.encode("utf-8", "surrogatepass")) > 65535 or "\x00" in pattern:
            raise ValueError("not a valid MQTT topic filter")
        levels = tuple(pattern.split("/"))
        seen: set[str] = set()
        for i, level in enumerate(levels):
            if level == "#":
                if i != len(levels) - 1:
                    raise ValueError("'#' must be the last level")
            elif level == "+" or level in PLACEHOLDERS:
                if level != "+" and level in seen:
                    raise ValueError(f"{level} appears twice")
                seen.add(level)
            elif any(c in level for c in "+#{}"):
                raise ValueError(
                    f"level {level!r}: wildcards and placeholders ({', '.join(PLACEHOLDERS)}) "
                    "must fill a whole level"
                )
        return cls(levels)

    def has(self, placeholder: str) -> bool:
        return "{" + placeholder + "}" in self.levels

    def subscription(self, site: str) -> str:
        """The MQTT filter to subscribe to: placeholders become ``+``, ``{site}`` the node's site."""
        out = [site if lv == "{site}" else "+" if lv in PLACEHOLDERS else lv for lv in self.levels]
        return "/".join(out)

    def match(self, topic: str) -> dict[str, str] | None:
        """Captured placeholders (and ``#``: the rest) if ``topic`` matches, else None."""
        parts = topic.split("/")
        captured: dict[str, str] = {}
        for i, level in enumerate(self.levels):
            if level == "#":
                if i == 0 and topic.startswith("$"):
                    return None  # MQTT: '#' alone does not match $SYS and the like
                captured["#"] = "/".join(parts[i:])
                return captured
            if i >= len(parts):
                return None
            part = parts[i]
            if level == "+":
                continue
            if level in PLACEHOLDERS:
                captured[level[1:-1]] = part
            elif level != part:
                return None
        return captured if len(parts) == len(self.levels) else None


# -- field paths: a top-level name or an RFC 6901 JSON pointer ---------------------------------


def check_path(path: str) -> str:
    """``path`` if it is a field name or a valid JSON pointer, else ``ValueError``."""
    if not path:
        raise ValueError("empty field path")
    if path.startswith("/"):
        if re.search(r"~(?![01])", path):
            raise ValueError(f"JSON pointer {path!r}: '~' must be followed by 0 or 1 (RFC 6901)")
    return path


def _tokens(path: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def resolve(obj: Any, path: str) -> Any:
    """The value at ``path`` in ``obj`` (a name: ``obj[path]``; a pointer: RFC 6901), or None.

    >>> resolve({"a": {"b/c": [1, 2]}}, "/a/b~1c/1"), resolve({"x": 3}, "x"), resolve({}, "/q")
    (2, 3, None)
    """
    if not path.startswith("/"):
        return obj.get(path) if isinstance(obj, dict) else None
    return _walk(obj, _tokens(path))


def _walk(node: Any, tokens: Iterable[str]) -> Any:
    """Follow unescaped pointer tokens through objects and arrays (None where one is missing)."""
    for token in tokens:
        if isinstance(node, dict):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and token.isascii():
            index = int(token)
            node = node[index] if index < len(node) else None
        else:
            return None
        if node is None:
            return None
    return node


Getter = Callable[[Any], Any]


def compile_path(path: str) -> Getter:
    """``resolve`` for one fixed path, with the pointer split and unescaped once, not per message.

    >>> compile_path("/a/b~1c/1")({"a": {"b/c": [1, 2]}}), compile_path("x")({"x": 3})
    (2, 3)
    """
    if not path.startswith("/"):

        def field(obj: Any) -> Any:
            return obj.get(path) if isinstance(obj, dict) else None

        return field
    tokens = tuple(_tokens(path))
    if len(tokens) == 2 and not any(t.isdigit() and t.isascii() for t in tokens):
        outer, inner = tokens  # the common shape (``/end_device_ids/device_id``): two objects

        def nested(obj: Any) -> Any:
            node = obj.get(outer) if isinstance(obj, dict) else None
            return node.get(inner) if isinstance(node, dict) else None

        return nested

    def pointer(obj: Any) -> Any:
        return _walk(obj, tokens)

    return pointer


def top_level(path: str) -> str:
    """The top-level field a path reads from (to tell mapped fields from extra ones)."""
    return _tokens(path)[0] if path.startswith("/") else path


# -- values, ids, timestamps ------------------------------------------------------------------


def number(value: Any, what: str) -> float:
    """A finite float from a JSON number or boolean (true is 1: a door open, a contact made)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            result = float(value)
        except OverflowError:
            raise Refusal(Reason.NON_FINITE, f"{what} overflows a double") from None
        if not math.isfinite(result):
            raise Refusal(Reason.NON_FINITE, f"{what}={value}")
        return result
    raise Refusal(Reason.WRONG_TYPE, f"{what} is a {type(value).__name__}, not a number")


def map_id(raw: Any, strict: bool, what: str = "device") -> str:
    """A foreign id as an edgepipe id (``[A-Za-z0-9_-]{1,64}``), or a ``bad_id`` refusal.

    A valid id is kept as is. Otherwise (unless ``strict``) every other character becomes
    ``_`` and a hash of the original is appended, so that the mapping is deterministic and
    two foreign ids never share an edgepipe id ("a b" and "a_b" stay apart).

    >>> map_id("0004A30B001C0530", False), map_id("kitchen/fridge", False)
    ('0004A30B001C0530', 'kitchen_fridge-bb301780')
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw:
        raise Refusal(Reason.BAD_ID, f"{what} id missing or not a string")
    if is_valid_id(raw):
        return raw
    if strict:
        raise Refusal(Reason.BAD_ID, f"{what} {raw[:80]!r} is not [A-Za-z0-9_-]{{1,64}}")
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", raw[:55])
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,12}))?"
    r"(Z|z|[+-]\d{2}:?\d{2})?"
)


_DAYS: dict[str, int] = {}  # "YYYY-MM-DD" -> Unix seconds at its midnight (a small cache)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_ONE_MS = datetime.timedelta(milliseconds=1)


def ts_from_iso(text: str) -> int:
    """Unix ms from an ISO 8601 / RFC 3339 time; no offset means UTC; nanoseconds are cut.

    The pattern decides what is accepted. ``datetime.fromisoformat`` (C, Python 3.11) then
    does the arithmetic for the shapes it takes, which agree with ours on every time both
    accept (fractions are cut, not rounded); the rest (a leap second, a lower-case ``z``,
    an offset beyond 23:59, a date that does not exist) takes the step-by-step path below.

    >>> ts_from_iso("2020-08-17T12:31:42.338766154Z"), ts_from_iso("2022-07-18T09:34:15.775+02:00")
    (1597667502338, 1658129655775)
    """
    m = _ISO.fullmatch(text.strip()) if len(text) < 64 else None
    if m is None:
        raise Refusal(Reason.BAD_TIMESTAMP, f"{text[:64]!r} is not an ISO 8601 time")
    try:
        moment = datetime.datetime.fromisoformat(m.group(0))
    except ValueError:
        return _ts_from_iso_match(text, m)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return (moment - _EPOCH) // _ONE_MS


def _ts_from_iso_match(text: str, m: re.Match[str]) -> int:
    """The times ``fromisoformat`` refuses, field by field (or a refusal saying which is wrong)."""
    date, hour, minute, second = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
    midnight = _DAYS.get(date)
    if midnight is None:
        year, month, day = int(date[:4]), int(date[5:7]), int(date[8:10])
        # year 0 too: calendar raised ValueError on it, an adapter_error instead of this
        if not (year >= 1 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
            raise Refusal(Reason.BAD_TIMESTAMP, f"{text[:64]!r} is not a valid date")
        midnight = calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0))
        if len(_DAYS) > 4096:
            _DAYS.clear()
        _DAYS[date] = midnight
    if not (hour < 24 and minute < 60 and second < 61):
        raise Refusal(Reason.BAD_TIMESTAMP, f"{text[:64]!r} is not a valid time")
    fraction = m.group(5)
    ms = int((fraction + "00")[:3]) if fraction else 0
    offset = m.group(6)
    shift = 0
    if offset and offset not in "Zz":
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        shift = sign * (int(digits[:2]) * 60 + int(digits[2:])) * 60_000
    return (midnight + hour * 3600 + minute * 60 + second) * 1000 + ms - shift


def ts_from_value(value: Any, unit: str) -> int:
    """Unix ms from a number in ``unit`` (s, ms, us, ns) or an ISO 8601 string.

    Integers are converted exactly (a float division turned some ns stamps into the ms
    before); floats are rounded to the microsecond first, then cut to the ms.

    >>> ts_from_value(706_617_138_757_000_000, "ns"), ts_from_value(1709633742.123, "s")
    (706617138757, 1709633742123)
    """
    if isinstance(value, str):
        return ts_from_iso(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refusal(Reason.BAD_TIMESTAMP, f"timestamp is a {type(value).__name__}")
    if isinstance(value, int):
        ms = value * 1000 if unit == "s" else value // _INT_DIVISORS[unit]
    else:
        try:
            scaled = round(value * _MS_PER_UNIT[unit], 3)
        except OverflowError:
            raise Refusal(Reason.BAD_TIMESTAMP, "timestamp overflows") from None
        if not math.isfinite(scaled):
            raise Refusal(Reason.BAD_TIMESTAMP, f"timestamp {value} {unit} is out of range")
        ms = math.floor(scaled)
    if not 0 <= ms <= MAX_TS_MS:
        raise Refusal(Reason.BAD_TIMESTAMP, f"timestamp {value} {unit} is out of range")
    return ms
