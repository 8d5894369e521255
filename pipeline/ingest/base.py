"""What every ingest adapter shares: its result type, its protocol and the field mapping.

An adapter is a pure function of (topic, payload bytes, arrival time, retained flag): it
returns readings, refusals (typed reasons, with the offending bytes), or "ignored" for a
message that is not a reading by design (a Zigbee2MQTT availability message). It never
raises: ``decode_one`` turns any surprise into an ``adapter_error`` refusal, so a bug in a
format cannot stop the edge node's receive loop. Readings it makes are then validated like
native ones (kinds, ranges, timestamps, duplicates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import msgspec

from pipeline.ingest.fields import (
    Getter,
    Refusal,
    TopicPattern,
    compile_path,
    map_id,
    number,
    top_level,
    ts_from_value,
)
from pipeline.protocol.catalog import BUILTIN, Catalog
from pipeline.protocol.messages import SCHEMA_VERSION, Reading
from pipeline.protocol.reasons import Reason

if TYPE_CHECKING:
    from pipeline.config import IngestSettings

MAX_ITEMS = 1000  # readings one message may carry (JSON array, line-protocol batch)
# topics and foreign ids whose resolution an adapter keeps (then it starts over)
MAX_REMEMBERED = 4096

# per kind: (metric, its getter, its scale factor) for each mapped metric, the top-level
# fields that are not extra, and the paths named in a ``no_metrics`` refusal
KindMapping = tuple[tuple[tuple[str, Getter, float | None], ...], frozenset[str], str]


@dataclass(frozen=True, slots=True)
class Refused:
    """One refusal: why, and the bytes it concerns (the payload, or one line or element)."""

    reason: Reason
    detail: str
    raw: bytes


@dataclass(slots=True)
class Decoded:
    """What one message became. ``ignored`` non-empty: not a reading by design (why)."""

    readings: list[Reading] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    ignored: str = ""
    extra_fields: int = 0  # fields neither mapped to a metric nor listed in ``ignore``
    # reading index -> its own bytes, when it is one part of the message (a line, an element):
    # a refusal of that reading at validation then names and hashes those bytes alone
    parts: dict[int, bytes] = field(default_factory=dict)


@runtime_checkable
class Adapter(Protocol):
    """One payload format. ``subscription`` is the MQTT filter the node subscribes to."""

    format: ClassVar[str]
    pattern: TopicPattern

    def subscription(self) -> str: ...

    def decode_one(self, topic: str, payload: bytes, arrival_ms: int, retained: bool = False) -> Decoded: ...


def as_object(message: Any) -> dict[str, Any]:
    """``message`` if it is a JSON object, else a refusal: every mapped format starts from one."""
    if not isinstance(message, dict):
        raise Refusal(Reason.NOT_OBJECT, f"JSON {type(message).__name__}, expected an object")
    return message


def load_json(payload: bytes, max_bytes: int) -> Any:
    """The payload as JSON values, or a refusal naming what is wrong with it."""
    if not payload:
        raise Refusal(Reason.EMPTY)
    if len(payload) > max_bytes:
        raise Refusal(Reason.TOO_LARGE, f"{len(payload)} bytes > {max_bytes}")
    try:
        return msgspec.json.decode(payload)
    except UnicodeDecodeError:
        raise Refusal(Reason.NOT_UTF8, "payload is not UTF-8") from None
    except msgspec.DecodeError as exc:
        if str(exc).startswith("Number out of range"):
            raise Refusal(Reason.NON_FINITE, "a number overflows a double") from None
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(Reason.NOT_UTF8, "payload is not UTF-8") from None
        raise Refusal(Reason.BAD_JSON, str(exc)[:200]) from None


class MappedAdapter:
    """An adapter configured by one ``[[ingest]]`` entry: kind, device, time and metric paths.

    Subclasses say where their values are (``values_of``) and their defaults; this class maps
    a message to a reading by the entry's rules, shared by every format.
    """

    format: ClassVar[str] = ""
    default_topic: ClassVar[str] = ""
    default_device_field: ClassVar[str] = ""
    default_timestamp_field: ClassVar[str] = ""
    default_unit: ClassVar[str] = "ms"

    def __init__(self, entry: IngestSettings, site: str, catalog: Catalog = BUILTIN) -> None:
        self.entry = entry
        self.site = site
        self.catalog = catalog
        self.pattern = TopicPattern.parse(entry.topic or self.default_topic)
        self.device_field = entry.device_field or self.default_device_field
        self.timestamp_field = entry.timestamp_field or self.default_timestamp_field
        self.unit = entry.timestamp_unit or self.default_unit
        self.ignore = frozenset(entry.ignore)
        self.scale = dict(entry.scale)
        # Why the precompiled paths and the two memories: a fleet repeats the same topics and
        # ids in every message, and walking them anew cost more than the JSON decode
        # (docs/benchmarks.md, "Ingest adapters").
        self._kind_at = compile_path(entry.kind_field) if entry.kind_field else None
        self._device_at = compile_path(self.device_field) if self.device_field else None
        self._ts_at = compile_path(self.timestamp_field) if self.timestamp_field else None
        self._mappings: dict[str, KindMapping] = {}
        self._captures: dict[str, dict[str, str] | None] = {}
        self._ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(topic={'/'.join(self.pattern.levels)!r}, kind={self.entry.kind!r})"

    def subscription(self) -> str:
        return self.pattern.subscription(self.site)

    def decode_one(self, topic: str, payload: bytes, arrival_ms: int, retained: bool = False) -> Decoded:
        """Never raises: a refusal is a typed reason, a bug an ``adapter_error``."""
        try:
            return self.decode(topic, payload, arrival_ms, retained)
        except Refusal as r:
            return Decoded(refused=[Refused(r.reason, r.detail, payload)])
        except Exception as exc:  # noqa: BLE001 - R11: one bad payload must not stop the loop
            detail = f"{self.format}: {type(exc).__name__}: {exc}"[:200]
            return Decoded(refused=[Refused(Reason.ADAPTER_ERROR, detail, payload)])

    def decode(self, topic: str, payload: bytes, arrival_ms: int, retained: bool) -> Decoded:
        raise NotImplementedError

    # -- the shared mapping ----------------------------------------------------------------

    def captured(self, topic: str) -> dict[str, str] | None:
        """``pattern.match(topic)``, remembered per topic (callers only read the dict)."""
        try:
            return self._captures[topic]
        except KeyError:
            pass
        if len(self._captures) >= MAX_REMEMBERED:
            self._captures.clear()
        found = self._captures[topic] = self.pattern.match(topic)
        return found

    def kind_of(self, message: Any, captured: dict[str, str]) -> str:
        if self.entry.kind:
            return self.entry.kind
        raw: Any = captured.get("kind")
        if raw is None and self._kind_at is not None:
            raw = self._kind_at(message)
        if not isinstance(raw, str) or not raw:
            raise Refusal(Reason.MISSING_FIELD, f"no kind at {self.entry.kind_field or '{kind}'}")
        if raw not in self.catalog.kinds:
            raise Refusal(Reason.UNKNOWN_KIND, f"kind {raw[:80]!r}")
        return raw

    def device_of(self, message: Any, captured: dict[str, str]) -> str:
        if self.entry.device:
            raw: Any = self.entry.device
        elif "device" in captured:
            raw = captured["device"]
        elif self._device_at is not None:
            raw = self._device_at(message)
            if raw is None:
                raise Refusal(Reason.MISSING_FIELD, f"no device id at {self.device_field}")
        elif "#" in captured:
            raw = captured["#"]
        else:
            raise Refusal(Reason.MISSING_FIELD, "no device id")
        return self.mapped_id(raw)

    def mapped_id(self, raw: Any) -> str:
        """``map_id`` by the entry's rule, remembered per foreign id (refusals are not)."""
        if type(raw) is str:
            found = self._ids.get(raw)
            if found is None:
                found = map_id(raw, self.entry.strict_ids)
                if len(self._ids) >= MAX_REMEMBERED:
                    self._ids.clear()
                self._ids[raw] = found
            return found
        return map_id(raw, self.entry.strict_ids)

    def ts_of(self, message: Any, arrival_ms: int) -> int:
        if self._ts_at is None:
            return arrival_ms
        raw = self._ts_at(message)
        if raw is None:
            raise Refusal(Reason.MISSING_FIELD, f"no timestamp at {self.timestamp_field}")
        return ts_from_value(raw, self.unit)

    def mapping(self, kind: str) -> KindMapping:
        """(metric, getter, scale) per mapped metric, the top-level fields that are not extra,
        and the paths for a ``no_metrics`` refusal: worked out once per kind."""
        found = self._mappings.get(kind)
        if found is None:
            paths = dict(self.entry.metrics) or {
                m: m for m in self.catalog.kinds[kind].metrics if m not in self.ignore
            }
            used = {top_level(p) for p in paths.values()} | self.ignore | self.structural_fields()
            getters = tuple(
                (metric, compile_path(path), self.scale.get(metric)) for metric, path in paths.items()
            )
            named = ", ".join(sorted(paths.values()))[:150]
            found = self._mappings[kind] = (getters, frozenset(used), named)
        return found

    def structural_fields(self) -> set[str]:
        """Top-level fields the entry reads for other things than metrics (not extra)."""
        paths = (self.entry.kind_field, self.device_field, self.timestamp_field)
        return {top_level(p) for p in paths if p}

    def metrics_of(self, values: Any, kind: str) -> tuple[dict[str, float], int]:
        """The mapped metrics (scaled) and how many fields were extra."""
        if not isinstance(values, dict):
            raise Refusal(Reason.NOT_OBJECT, f"values are a {type(values).__name__}, not an object")
        getters, used, named = self.mapping(kind)
        metrics: dict[str, float] = {}
        for metric, get, factor in getters:
            raw = get(values)
            if raw is None:
                continue  # devices often send a subset (a door event without the temperature)
            # a finite float needs no conversion (x - x is 0.0 only for finite x)
            value = raw if type(raw) is float and raw - raw == 0.0 else number(raw, metric)
            if factor is not None:
                value = number(value * factor, metric)
            metrics[metric] = value
        if not metrics:
            raise Refusal(Reason.NO_METRICS, f"none of {named}")
        return metrics, len(values.keys() - used)

    def reading(self, device: str, kind: str, ts: int, metrics: dict[str, float]) -> Reading:
        # seq: foreign counters reset (LoRaWAN frame counters on rejoin); ts is increasing
        return Reading(SCHEMA_VERSION, device, kind, ts, ts if ts > 0 else 0, metrics)
