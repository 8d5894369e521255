"""``edgepipe discover``: what a broker carries, as a proposed ``[[ingest]]`` and ``[kinds.*]``.

Pure functions over samples (topic, payload bytes, arrival time, retained flag), so that the
inference is tested on real payloads without a broker; ``pipeline/onboard.py`` listens and
writes. The steps:

1. **Family.** Each message is put in a family: edgepipe's own readings, a The Things Stack
   uplink, a ChirpStack ``up`` event or a Zigbee2MQTT state (all four known by their topics),
   else JSON or InfluxDB line protocol by what most messages of its topic shape are. Messages
   that are not readings by design (TTN joins, ChirpStack status, Zigbee2MQTT bridge and
   availability, edgepipe's alerts and health) are counted as ignored; messages that fit no
   family are counted as unclassified, with the reason.
2. **Devices and metrics.** Per family, each message becomes records (device id, numeric
   leaves by JSON pointer, string leaves). A device's metrics are the numeric leaves in most
   of its messages, so a few malformed payloads do not add metrics.
3. **Kinds.** Devices with the same metric set are one kind. When devices of several metric
   sets share a family, a string field or topic level that is the same for every device of a
   metric set (a TTN application, a ChirpStack device profile, a line-protocol measurement)
   names the kinds (``kind_field`` or ``{kind}``); failing that, one kind takes them all (a
   device sends the metrics it has).
4. **Proposal.** A metric's resolution is the smallest non-zero step seen (snapped to the
   decimals the values are written with); its ``low``/``high`` are what was seen, widened,
   and its unit is unknown: those lines carry a ``todo`` key that ``edgepipe config check``
   refuses (an unknown key), so a guess never goes live unreviewed. A kind the catalogue
   already has, with every metric seen and every value in its range, gets no table.

``verify`` runs the proposal (``todo`` lines removed) through the real adapters over the same
samples: the summary says how many messages it turns into readings.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from pipeline.config import IngestSettings, Settings, catalog_of, check_catalog_references
from pipeline.ingest.fields import Refusal, map_id, ts_from_iso
from pipeline.ingest.influx_line import parse_line
from pipeline.ingest.router import IngestRouter
from pipeline.protocol.catalog import BUILTIN, Catalog
from pipeline.protocol.topics import DEFAULT_ROOT, Topics, is_valid_id

MAX_RECORDS_PER_MESSAGE = 1000  # as the adapters: a JSON array or a line-protocol batch
DEFAULT_MAX_BYTES: int = IngestSettings.model_fields["max_bytes"].default  # larger: too_large
TIMESTAMP_WINDOW_MS = 400 * 86_400_000  # a number this close to arrival time is a timestamp
WIDEN_SPAN_SHARE = 0.5  # low/high placeholders: the seen range widened by half its span ...
WIDEN_MAGNITUDE_SHARE = 0.1  # ... or a tenth of the largest magnitude seen ...
WIDEN_RESOLUTIONS = 10  # ... or ten resolutions, whichever is largest
MAX_DECIMALS = 9  # finer steps are noise of a float, not a sensor's resolution
MIN_GRID_STEPS = 2  # differences seen before a grid coarser than the decimals is guessed
TODO_TEXT = (
    "unit, resolution, low and high are guesses from what was seen: set them, then delete this line"
)

# The formats' own fields that are not measurements (radio link quality of a Zigbee device).
NOT_METRICS: dict[str, frozenset[str]] = {"zigbee2mqtt": frozenset({"linkquality"})}
KIND_WORDS_RANKED = (
    "kind",
    "type",
    "profile",
    "model",
    "class",
    "category",
    "measurement",
    "application",
)
KIND_WORDS = re.compile("|".join(KIND_WORDS_RANKED), re.I)
ID_WORDS = re.compile(r"(^|[_/-])(id|eui)$|Id$|Eui$|uuid", re.I)
DEVICE_WORDS = re.compile(
    r"^(device|device_?id|dev_?id|dev_?eui|deveui|id|eui|sensor|sensor_?id|serial|mac|uid|node|node_?id|name)$",
    re.I,
)
TIME_WORDS = re.compile(r"time|^ts$|timestamp|date|_at$", re.I)
Z2M_IGNORED = frozenset({"availability", "set", "get"})
DEFAULT_TOPICS = {"ttn": "v3/+/devices/+/up", "chirpstack": "application/+/device/+/event/up"}


@dataclass(frozen=True, slots=True)
class Sample:
    """One message as heard: what discover works on."""

    topic: str
    payload: bytes
    arrival_ms: int
    retained: bool = False


@dataclass(slots=True)
class Record:
    """One would-be reading inside a message (a message may hold several: arrays, batches)."""

    levels: tuple[str, ...]
    device: str | None  # known from the payload where the format says where it is
    numbers: dict[str, float]  # path (a name or a JSON pointer) -> value; booleans are 0/1
    booleans: set[str]
    texts: dict[str, str]  # path -> string value: kind and device candidates
    top_level: set[str]  # top-level names of the values object (to list non-metrics in ignore)
    arrival_ms: int
    kind: str | None = None  # edgepipe readings carry it
    stamp: int | None = None  # a line-protocol point's timestamp, in its unknown precision


@dataclass(slots=True)
class Family:
    """Messages of one format on one topic shape: they become one ``[[ingest]]`` entry."""

    format: str
    key: tuple[str, ...]
    records: list[Record] = field(default_factory=list)
    messages: int = 0
    retained: int = 0


@dataclass(slots=True)
class MetricProposal:
    name: str
    path: str
    resolution: float
    seen_low: float
    seen_high: float
    low: float
    high: float
    readings: int
    boolean: bool


@dataclass(slots=True)
class KindProposal:
    name: str
    devices: list[str]
    messages: int
    metrics: dict[str, MetricProposal]
    known: bool = False  # the catalogue has it: no table unless asked
    replaces: str = ""  # why the catalogue's kind of this name does not take what was seen


@dataclass(slots=True)
class EntryProposal:
    """One ``[[ingest]]`` entry and the kinds it makes."""

    format: str
    keys: dict[str, Any]
    kinds: list[KindProposal]
    devices: int
    messages: int
    notes: list[str]
    set_aside: Counter[str] = field(default_factory=Counter)  # records unlike their device's


@dataclass(slots=True)
class Discovery:
    entries: list[EntryProposal]
    messages: int
    ignored: Counter[str]
    unclassified: Counter[str]
    examples: dict[str, str]  # unclassified reason -> an example topic

    @property
    def devices(self) -> int:
        return sum(e.devices for e in self.entries)


# -- 1. families ----------------------------------------------------------------------------


def _json(payload: bytes) -> Any:
    try:
        return msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def _leaves(obj: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(JSON pointer, value) of every scalar under ``obj``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            token = str(key).replace("~", "~0").replace("/", "~1")
            yield from _leaves(value, f"{prefix}/{token}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:16]):
            yield from _leaves(value, f"{prefix}/{i}")
    else:
        yield prefix, obj


def _path(pointer: str) -> str:
    """A top-level pointer whose name needs no escaping is written as the plain name."""
    name = pointer[1:]
    return name if "/" not in name and "~" not in name and name else pointer


def _record(
    levels: tuple[str, ...],
    values: Any,
    context: Any,
    device: str | None,
    arrival_ms: int,
    kind: str | None = None,
) -> Record:
    """Numbers from ``values`` (the object the adapter reads metrics from), strings from ``context``."""
    numbers: dict[str, float] = {}
    booleans: set[str] = set()
    for pointer, value in _leaves(values):
        if isinstance(value, bool):
            numbers[_path(pointer)] = 1.0 if value else 0.0
            booleans.add(_path(pointer))
        elif isinstance(value, int | float) and math.isfinite(float(value)):
            numbers[_path(pointer)] = float(value)
    texts = {_path(p): v for p, v in _leaves(context) if isinstance(v, str) and v}
    top = set(values) if isinstance(values, dict) else set()
    return Record(levels, device, numbers, booleans, texts, top, arrival_ms, kind)


def _edgepipe(
    sample: Sample, levels: tuple[str, ...], root_levels: int
) -> tuple[str, list[Record]]:
    if len(levels) != root_levels + 3 or levels[root_levels + 1] != "dev":
        return "ignored:edgepipe's own traffic (alerts, health, batches)", []
    message = _json(sample.payload)
    if not isinstance(message, dict):
        return "unclassified:edgepipe topic, payload not a JSON object", []
    device, kind, metrics = message.get("device"), message.get("kind"), message.get("metrics")
    if not (isinstance(device, str) and isinstance(kind, str) and isinstance(metrics, dict)):
        return "unclassified:edgepipe topic, no device, kind and metrics", []
    return "ok", [_record(levels, metrics, {}, device, sample.arrival_ms, kind)]


def _ttn(sample: Sample, levels: tuple[str, ...]) -> tuple[str, list[Record]]:
    if levels[-1] != "up":
        return "ignored:The Things Stack message that is not an uplink", []
    message = _json(sample.payload)
    if not isinstance(message, dict) or not isinstance(message.get("uplink_message"), dict):
        return "unclassified:TTN uplink topic, payload not an uplink message", []
    values = message["uplink_message"].get("decoded_payload")
    if not isinstance(values, dict):
        return "unclassified:TTN uplink without decoded_payload (no payload formatter?)", []
    ids = message.get("end_device_ids")
    device = ids.get("device_id") if isinstance(ids, dict) else None
    if not isinstance(device, str):
        return "unclassified:TTN uplink without end_device_ids.device_id", []
    context = {k: v for k, v in message.items() if k != "uplink_message"}
    return "ok", [_record(levels, values, context, device, sample.arrival_ms)]


def _chirpstack(sample: Sample, levels: tuple[str, ...]) -> tuple[str, list[Record]]:
    if levels[5] != "up":
        return f"ignored:ChirpStack {levels[5]} event (not an uplink)", []
    message = _json(sample.payload)
    if not isinstance(message, dict) or not isinstance(message.get("deviceInfo"), dict):
        return "unclassified:ChirpStack up topic, payload not an uplink event", []
    values = message.get("object")
    if not isinstance(values, dict):
        return "unclassified:ChirpStack uplink without object (no codec in the device profile?)", []
    device = message["deviceInfo"].get("devEui")
    if not isinstance(device, str):
        return "unclassified:ChirpStack uplink without deviceInfo.devEui", []
    context = {k: v for k, v in message.items() if k != "object"}
    return "ok", [_record(levels, values, context, device, sample.arrival_ms)]


def _zigbee2mqtt(sample: Sample, levels: tuple[str, ...]) -> tuple[str, list[Record]]:
    rest = levels[1:]
    if not rest or rest[0] == "bridge":
        return "ignored:Zigbee2MQTT bridge topic", []
    if rest[-1] in Z2M_IGNORED or (len(rest) > 1 and rest[-2] in Z2M_IGNORED):
        return "ignored:Zigbee2MQTT availability or command", []
    message = _json(sample.payload)
    if not isinstance(message, dict):
        return "unclassified:Zigbee2MQTT topic, payload not a JSON object", []
    return "ok", [_record(levels, message, message, "/".join(rest), sample.arrival_ms)]


def _line_protocol(sample: Sample, levels: tuple[str, ...]) -> list[Record] | None:
    try:
        text = sample.payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = [
        ln.rstrip("\r") for ln in text.split("\n") if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not lines or len(lines) > MAX_RECORDS_PER_MESSAGE:
        return None
    records = []
    for line in lines:
        try:
            point = parse_line(line)
        except Refusal:
            return None
        context = {
            "measurement": point.measurement,
            **{f"tag:{k}": v for k, v in point.tags.items()},
        }
        record = _record(levels, point.fields, context, None, sample.arrival_ms)
        record.stamp = point.timestamp
        records.append(record)
    return records


def _generic_json(sample: Sample, levels: tuple[str, ...]) -> list[Record] | None:
    message = _json(sample.payload)
    items = message if isinstance(message, list) else [message]
    if (
        not items
        or len(items) > MAX_RECORDS_PER_MESSAGE
        or not all(isinstance(i, dict) for i in items)
    ):
        return None
    records = [_record(levels, item, item, None, sample.arrival_ms) for item in items]
    return records if any(r.numbers for r in records) else None


def _why_not(payload: bytes) -> str:
    if not payload:
        return "empty payload"
    message = _json(payload)
    if message is None:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return "binary payload (not UTF-8): a decoder must turn it into JSON first"
        return "neither JSON nor InfluxDB line protocol"
    if isinstance(message, int | float | str | bool):
        return "a bare value (one metric per topic): the json format needs an object"
    return "JSON without a number in it"


def families(
    samples: Sequence[Sample], root: str = DEFAULT_ROOT
) -> tuple[list[Family], Counter[str], Counter[str], dict[str, str]]:
    """Messages by family, and the counts of those ignored and unclassified (by reason)."""
    root_levels = len(root.split("/"))
    found: dict[tuple[str, tuple[str, ...]], Family] = {}
    ignored: Counter[str] = Counter()
    unclassified: Counter[str] = Counter()
    examples: dict[str, str] = {}
    open_shapes: dict[tuple[str, ...], list[Sample]] = defaultdict(list)

    def add(fmt: str, key: tuple[str, ...], sample: Sample, records: list[Record]) -> None:
        family = found.setdefault((fmt, key), Family(fmt, key))
        family.messages += 1
        family.retained += sample.retained
        family.records.extend(records)

    for sample in samples:
        levels = tuple(sample.topic.split("/"))
        if len(sample.payload) > DEFAULT_MAX_BYTES:
            reason = (
                f"payload over {DEFAULT_MAX_BYTES} bytes: set max_bytes in its [[ingest]] entry"
            )
            unclassified[reason] += 1
            examples.setdefault(reason, sample.topic)
            continue
        known: tuple[str, tuple[str, ...], Any] | None = None
        if sample.topic.startswith(root + "/"):
            known = ("edgepipe", (root,), _edgepipe(sample, levels, root_levels))
        elif len(levels) >= 5 and levels[0] == "v3" and levels[2] == "devices":
            known = ("ttn", ("v3", str(len(levels))), _ttn(sample, levels))
        elif (
            len(levels) == 6
            and levels[0] == "application"
            and levels[2] == "device"
            and levels[4] == "event"
        ):
            known = ("chirpstack", ("application",), _chirpstack(sample, levels))
        elif levels[0].startswith("zigbee2mqtt"):
            known = ("zigbee2mqtt", (levels[0], str(len(levels))), _zigbee2mqtt(sample, levels))
        if known is None:
            open_shapes[(levels[0], str(len(levels)))].append(sample)
            continue
        fmt, key, (verdict, records) = known
        if verdict == "ok":
            add(fmt, key, sample, records)
            continue
        what, _, reason = verdict.partition(":")
        if what == "ignored":
            ignored[reason] += 1
        else:
            unclassified[reason] += 1
            examples.setdefault(reason, sample.topic)

    for key, group in open_shapes.items():
        parsed = [
            (
                s,
                _line_protocol(s, tuple(s.topic.split("/"))),
                _generic_json(s, tuple(s.topic.split("/"))),
            )
            for s in group
        ]
        lines = sum(1 for _, lp, _ in parsed if lp is not None)
        jsons = sum(1 for _, _, js in parsed if js is not None)
        fmt = "influx-line" if lines > jsons else "json"
        for sample, lp, js in parsed:
            records = lp if fmt == "influx-line" else js
            if records is not None:
                add(fmt, key, sample, records)
                continue
            reason = (
                _why_not(sample.payload)
                if lines == jsons == 0
                else f"not {fmt} like the rest of its topic shape"
            )
            unclassified[reason] += 1
            examples.setdefault(reason, sample.topic)
    return [f for f in found.values() if f.records], ignored, unclassified, examples


# -- 2. devices and their metrics -------------------------------------------------------------


@dataclass(slots=True)
class Device:
    id: str
    records: list[Record]
    metrics: frozenset[str] = frozenset()
    candidates: dict[str, str] = field(default_factory=dict)  # kind candidate -> its value here


def _majority(values: Iterable[str]) -> str | None:
    counts = Counter(values)
    if not counts:
        return None
    value, n = counts.most_common(1)[0]
    return value if n * 2 > sum(counts.values()) else None


def _metric_paths(
    records: Sequence[Record], not_metrics: frozenset[str], exclude: set[str]
) -> frozenset[str]:
    """Numeric paths in most of a device's records."""
    counts = Counter(p for r in records for p in r.numbers)
    half = len(records) / 2
    return frozenset(
        p for p, n in counts.items() if n > half and p not in not_metrics and p not in exclude
    )


def _unit_near(value: float, arrival_ms: int) -> str:
    """The unit (s, ms, us, ns) in which ``value`` is a time near ``arrival_ms``, else ''."""
    for unit, ms_per in (("s", 1000.0), ("ms", 1.0), ("us", 1e-3), ("ns", 1e-6)):
        if abs(value * ms_per - arrival_ms) < TIMESTAMP_WINDOW_MS:
            return unit
    return ""


def _line_precision(records: Sequence[Record]) -> str:
    """The precision of the line-protocol timestamps (Telegraf's ``precision``), if most have one."""
    votes = Counter(_unit_near(r.stamp, r.arrival_ms) for r in records if r.stamp is not None)
    if not votes:
        return ""
    unit, n = votes.most_common(1)[0]
    return unit if n * 2 > len(records) else ""


def _timestamp_path(records: Sequence[Record]) -> tuple[str, str] | None:
    """(path, unit) of a timestamp found in most records: ISO text or a number near arrival."""
    votes: Counter[tuple[str, str]] = Counter()
    for r in records:
        for path, text in r.texts.items():
            if any(c.isdigit() for c in text[:4]) and "-" in text:
                try:
                    if abs(ts_from_iso(text) - r.arrival_ms) < TIMESTAMP_WINDOW_MS:
                        votes[(path, "")] += 1
                except Refusal:
                    pass
        for path, value in r.numbers.items():
            unit = _unit_near(value, r.arrival_ms)
            if unit:
                votes[(path, unit)] += 1
    usable = [(k, n) for k, n in votes.items() if n * 2 > len(records)]
    if not usable:
        return None
    usable.sort(
        key=lambda kn: (not TIME_WORDS.search(kn[0][0].rsplit("/", 1)[-1]), -kn[1], kn[0][0])
    )
    return usable[0][0]


# -- 3. kinds ----------------------------------------------------------------------------------


def _candidate_score(name: str, values: int) -> tuple[int, int, int, str]:
    last = name.rsplit("/", 1)[-1].removeprefix("tag:")
    found = KIND_WORDS.search(last)
    rank = KIND_WORDS_RANKED.index(found.group(0).lower()) if found else len(KIND_WORDS_RANKED)
    return (rank, 1 if ID_WORDS.search(last) else 0, values, name)


def _kind_candidate(
    devices: Sequence[Device], kinds_seen: int
) -> tuple[str, dict[str, str]] | None:
    """A field or topic level that names each metric set's devices alike, if there is one."""
    names = set.intersection(*(set(d.candidates) for d in devices)) if devices else set()
    best: tuple[tuple[int, int, int, str], str] | None = None
    for name in names:
        by_value: dict[str, set[frozenset[str]]] = defaultdict(set)
        for d in devices:
            by_value[d.candidates[name]].add(d.metrics)
        if any(len(sets) > 1 for sets in by_value.values()):
            continue  # devices of one value with different metric sets: not a kind
        if all(d.candidates[name] == d.id for d in devices):
            continue  # the device id itself
        if kinds_seen == 1 and not KIND_WORDS.search(name.rsplit("/", 1)[-1]):
            continue  # one metric set: only a field that says it is a kind may split it
        score = _candidate_score(name, len(by_value))
        if best is None or score < best[0]:
            best = (score, name)
    if best is None:
        return None
    return best[1], {d.id: d.candidates[best[1]] for d in devices}


def _decimals(value: float) -> int:
    exponent = Decimal(repr(value)).normalize().as_tuple().exponent
    return min(max(-exponent, 0), MAX_DECIMALS) if isinstance(exponent, int) else 0


def resolution_of(values: Iterable[float]) -> float:
    """The grid the values seen lie on: the largest step every difference between them is a
    multiple of, snapped to their decimals. One difference (two distinct values, often two
    devices each holding still) says nothing of a grid: then the decimals decide, or a stock
    count seen at 33 and 214 would be quantised by 181.

    >>> resolution_of([4.4, 4.5, 4.7]), resolution_of([20.0, 22.5, 25.0]), resolution_of([3.0])
    (0.1, 2.5, 1.0)
    >>> resolution_of([33.0, 214.0]), resolution_of([0.0, 2.5, 7.0])
    (1.0, 0.5)
    """
    distinct = sorted(set(values))
    decimals = max((_decimals(v) for v in distinct), default=0)
    quantum = 10.0**-decimals
    steps = [round((b - a) / quantum) for a, b in zip(distinct, distinct[1:], strict=False)]
    steps = [step for step in steps if step > 0]
    if len(steps) < MIN_GRID_STEPS:
        return round(quantum, decimals)
    return round(max(math.gcd(*steps), 1) * quantum, decimals)


def widened(low: float, high: float, resolution: float) -> tuple[float, float]:
    """Placeholder bounds: the seen range widened, on the resolution's grid; never below 0 if
    nothing seen was.

    >>> widened(2.0, 8.0, 0.1), widened(0.0, 0.0, 1.0)
    ((0.0, 11.0), (0.0, 10.0))
    """
    margin = max(
        (high - low) * WIDEN_SPAN_SHARE,
        max(abs(low), abs(high)) * WIDEN_MAGNITUDE_SHARE,
        resolution * WIDEN_RESOLUTIONS,
    )
    decimals = max(_decimals(resolution), 0)
    lo = round(math.floor((low - margin) / resolution) * resolution, decimals)
    hi = round(math.ceil((high + margin) / resolution) * resolution, decimals)
    if low >= 0 > lo:
        lo = 0.0
    return lo, hi


def metric_name(path: str, taken: set[str]) -> str:
    """A metric id for a field path: the name itself when it is one, else its tokens joined.

    >>> metric_name("temp", set()), metric_name("/pm/2_5", set()), metric_name("/a b", {"a_b"})
    ('temp', 'pm_2_5', 'a_b_2')
    """
    base = (
        path
        if not path.startswith("/")
        else "_".join(t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/"))
    )
    name = re.sub(r"[^A-Za-z0-9_-]", "_", base)[:60] or "value"
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _kind_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", text).strip("_")[:64]
    return name or "devices"


def _unlike(catalog: Catalog, kind: KindProposal) -> str:
    """Why the catalogue's kind of this name does not take what was seen ('' if it does)."""
    found = catalog.kinds.get(kind.name)
    if found is None:
        return "not in the catalogue"
    for name, m in kind.metrics.items():
        spec = found.metrics.get(name)
        if spec is None:
            return f"it has no metric {name}"
        if not (spec.low <= m.seen_low and m.seen_high <= spec.high):
            return f"{name} seen {m.seen_low:g}..{m.seen_high:g}, outside its {spec.low:g}..{spec.high:g}"
    return ""


def _kind(
    name: str, devices: Sequence[Device], names: dict[str, str], catalog: Catalog
) -> KindProposal:
    values: dict[str, list[float]] = defaultdict(list)
    booleans: set[str] = set()
    for d in devices:
        for r in d.records:
            for path in d.metrics:
                if path in r.numbers:
                    values[path].append(r.numbers[path])
                    if path in r.booleans:
                        booleans.add(path)
    metrics: dict[str, MetricProposal] = {}
    for path in sorted(values, key=lambda p: names[p]):
        seen = values[path]
        lo, hi = min(seen), max(seen)
        boolean = path in booleans
        if boolean:
            resolution, low, high = 1.0, 0.0, 1.0
        else:
            resolution = resolution_of(seen)
            low, high = widened(lo, hi, resolution)
        metrics[names[path]] = MetricProposal(
            names[path], path, resolution, lo, hi, low, high, len(seen), boolean
        )
    kind = KindProposal(
        name, sorted(d.id for d in devices), sum(len(d.records) for d in devices), metrics
    )
    unlike = _unlike(catalog, kind)
    kind.known = not unlike
    kind.replaces = unlike if name in catalog.kinds else ""
    return kind


# -- 4. one family's proposal ------------------------------------------------------------------


def _topic_roles(family: Family, devices_by_topic: bool) -> tuple[list[str], int | None, list[int]]:
    """Each topic level as a literal or '+', the level that names the device (if any), and the
    other levels that vary. TTN and ChirpStack name the device in level 4 and the payload."""
    width = max(len(r.levels) for r in family.records)
    distinct = [{r.levels[i] for r in family.records if len(r.levels) > i} for i in range(width)]
    varying = [i for i in range(width) if len(distinct[i]) > 1]
    device_level = None
    if devices_by_topic and varying:
        device_level = max(varying, key=lambda i: (len(distinct[i]), i))
    levels = [next(iter(d)) if len(d) == 1 else "+" for d in distinct]
    if family.format in ("ttn", "chirpstack"):
        levels[3] = "+"  # the device, read from the payload: any device of the application
        varying = [i for i in varying if i != 3]
    return levels, device_level, [i for i in varying if i != device_level]


@dataclass(slots=True)
class _Draft:
    """One family's entry while it is worked out: its keys, topic levels and notes."""

    family: Family
    levels: list[str]
    device_level: int | None
    others: list[int]  # other topic levels that vary
    keys: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    structural: set[str] = field(default_factory=set)  # paths read for time and device
    device_field: str = ""  # a payload path ("tag:NAME" for line protocol) naming the device

    @property
    def format(self) -> str:
        return self.family.format

    def device_of(self, r: Record) -> str | None:
        """The record's device id; None when the field that names it is missing."""
        if r.device is not None and self.format != "zigbee2mqtt":
            return r.device
        if self.device_level is not None:
            return r.levels[self.device_level]
        if self.device_field:
            return r.texts.get(self.device_field)
        return r.device or "/".join(self.levels)


def propose_family(family: Family, catalog: Catalog = BUILTIN) -> EntryProposal:
    """The ``[[ingest]]`` entry and kinds for one family (see the module docstring)."""
    fmt = family.format
    arrays = fmt == "json" and len(family.records) > family.messages
    draft = _Draft(family, *_topic_roles(family, fmt in ("json", "zigbee2mqtt") and not arrays))
    if fmt == "edgepipe":
        draft.others = []  # {root}/{site}/dev/{device}: nothing to say about its levels
    _find_time_and_device(draft)
    devices, set_aside = _devices(draft)
    kind_of_device = _name_kinds(draft, devices)
    _place_device_and_topic(draft, kind_of_device)
    names = _metric_names(draft, devices)
    groups: dict[str, list[Device]] = defaultdict(list)
    for d in devices:
        groups[kind_of_device[d.id]].append(d)
    kinds = [_kind(name, members, names, catalog) for name, members in sorted(groups.items())]
    if family.retained:
        draft.notes.append(
            f"{family.retained} of the messages were retained: the broker's last stored state, "
            "perhaps old (zigbee2mqtt ignores retained states)"
        )
    keys = {} if fmt == "edgepipe" else draft.keys
    return EntryProposal(
        fmt, {"format": fmt, **keys}, kinds, len(devices), family.messages, draft.notes, +set_aside
    )


def _find_time_and_device(draft: _Draft) -> None:
    """The timestamp field (json), and the payload field naming the device where the topic
    does not (json: a field named like an id; line protocol: the ``device`` tag or another)."""
    records = draft.family.records
    if draft.format == "json":
        timestamp = _timestamp_path(records)
        if timestamp:
            draft.structural.add(timestamp[0])
            draft.keys["timestamp_field"] = timestamp[0]
            if timestamp[1]:
                draft.keys["timestamp_unit"] = timestamp[1]
        else:
            draft.notes.append("no timestamp in the payload: the edge dates readings on arrival")
        if draft.device_level is None:
            named = Counter(
                p for r in records for p in r.texts if DEVICE_WORDS.match(p.rsplit("/", 1)[-1])
            )
            usable = [p for p, n in named.items() if n * 2 > len(records)]
            if usable:
                draft.device_field = max(
                    usable, key=lambda p: (len({r.texts.get(p) for r in records}), p)
                )
                draft.structural.add(draft.device_field)
    if draft.format == "influx-line":
        precision = _line_precision(records)
        if precision not in ("", "ns"):
            draft.keys["timestamp_unit"] = precision
        tags = Counter(p for r in records for p in r.texts if p.startswith("tag:"))
        if tags.get("tag:device", 0) * 2 > len(records):
            draft.device_field = "tag:device"  # the adapter's default
        elif tags:
            draft.device_field = max(
                tags,
                key=lambda p: (
                    not DEVICE_WORDS.match(p[4:]),
                    len({r.texts.get(p) for r in records}),
                    p,
                ),
            )
            draft.keys["device_field"] = draft.device_field[4:]
            draft.notes.append(f"no 'device' tag: the device is the {draft.device_field[4:]!r} tag")


def _devices(draft: _Draft) -> tuple[list[Device], Counter[str]]:
    """The devices with their metrics and kind candidates, and the records set aside."""
    by_device: dict[str, list[Record]] = defaultdict(list)
    set_aside: Counter[str] = Counter()
    for r in draft.family.records:
        device = draft.device_of(r)
        if device is None:
            set_aside[
                f"no device id ({draft.device_field.removeprefix('tag:')}) in the message"
            ] += 1
        else:
            by_device[device].append(r)
    not_metrics = NOT_METRICS.get(draft.format, frozenset())
    devices: list[Device] = []
    for dev_id, recs in sorted(by_device.items()):
        d = Device(dev_id, recs, _metric_paths(recs, not_metrics, draft.structural))
        if not d.metrics:
            set_aside["device with no metric in most of its messages"] += len(recs)
            continue
        set_aside["message unlike the rest of its device's"] += sum(
            1 for r in recs if not d.metrics & r.numbers.keys()
        )
        if draft.format == "edgepipe":
            value = _majority(r.kind or "" for r in recs)
            d.candidates = {"kind": value} if value and is_valid_id(value) else {}
            devices.append(d)
            continue
        for i in draft.others:
            value = _majority(r.levels[i] for r in recs)
            if value is not None and is_valid_id(value):
                d.candidates[f"level:{i}"] = value
        for path in {p for r in recs for p in r.texts} - draft.structural - {draft.device_field}:
            value = _majority(r.texts.get(path, "") for r in recs)
            if value and is_valid_id(value) and value != dev_id:
                d.candidates[path] = value
        devices.append(d)
    return devices, set_aside


def _name_kinds(draft: _Draft, devices: Sequence[Device]) -> dict[str, str]:
    """Each device's kind, and the entry keys that say where the kind is read."""
    metric_sets = {d.metrics for d in devices}
    if draft.format == "edgepipe":
        return {d.id: d.candidates.get("kind", "") for d in devices}
    naming = _kind_candidate(devices, len(metric_sets))
    if naming is not None:
        name, kind_of_device = naming
        if name.startswith("level:"):
            draft.levels[int(name.removeprefix("level:"))] = "{kind}"
        elif name.startswith("tag:"):
            draft.keys["kind_field"] = name.removeprefix("tag:")
        elif name != "measurement":  # the measurement: the line-protocol adapter's default
            draft.keys["kind_field"] = name
        return kind_of_device
    literal = [lv for lv in draft.levels if lv != "+"]
    single = _kind_name(
        "_".join(literal[:3]) if draft.format == "json" else literal[0] if literal else draft.format
    )
    draft.keys["kind"] = single
    if len(metric_sets) > 1:
        draft.notes.append(
            f"{len(metric_sets)} different metric sets and nothing in topic or payload names their kind: "
            f"one kind {single!r} takes them all (each device sends the metrics it has)"
        )
    return {d.id: single for d in devices}


def _level_name(fmt: str, level: str) -> str:
    """What a topic level names: TTN's `{application_id}@{tenant_id}` names the application,
    which is the kind that `kind_field` reads (the tenant is not a site: `ttn` for most).

    >>> _level_name("ttn", "orchard-sensors@ttn"), _level_name("json", "a@b")
    ('orchard-sensors', 'a@b')
    """
    return level.split("@", 1)[0] if fmt == "ttn" else level


def _place_device_and_topic(draft: _Draft, kind_of_device: dict[str, str]) -> None:
    """``{device}`` in the topic (or ``device_field``/``device``), then the topic itself."""
    fmt, levels = draft.format, draft.levels
    if fmt == "json":
        if draft.device_level is not None:
            levels[draft.device_level] = "{device}"
        elif draft.device_field:
            draft.keys["device_field"] = draft.device_field
        else:
            draft.keys["device"] = map_id("/".join(draft.levels), False)
            draft.notes.append("one device seen and no id in the payload: the device id is fixed")
    if fmt == "zigbee2mqtt":
        others_vary = any(lv == "+" for i, lv in enumerate(levels) if i != draft.device_level)
        if draft.device_level is not None and ("{kind}" in levels or not others_vary):
            levels[draft.device_level] = "{device}"
        else:  # one device heard, or levels that vary besides it: the whole friendly name
            draft.levels = levels = [levels[0], "#"]
    topic = _topic(fmt, levels)
    if topic:
        draft.keys = {"topic": topic, **draft.keys}
    for i in draft.others:
        records = draft.family.records
        if (
            i < len(levels)
            and levels[i] == "+"
            and any(
                _level_name(fmt, r.levels[i]) != kind_of_device.get(draft.device_of(r) or "")
                for r in records
            )
        ):
            seen = sorted({r.levels[i] for r in records})
            draft.notes.append(
                f"topic level {i + 1} varies ({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}): "
                "if it names the site, write {site} there so that each edge node takes only its own"
            )


def _metric_names(draft: _Draft, devices: Sequence[Device]) -> dict[str, str]:
    """Metric names by path; ``metrics`` and ``ignore`` in the keys where names alone do not do."""
    paths = sorted({p for d in devices for p in d.metrics})
    names: dict[str, str] = {}
    for path in paths:
        names[path] = metric_name(path, set(names.values()))
    if draft.format == "edgepipe":
        return names
    if any(names[p] != p for p in paths):
        draft.keys["metrics"] = {names[p]: p for p in paths}
    kind_field = draft.keys.get("kind_field", "")
    ignore = sorted(
        {t for d in devices for r in d.records if d.metrics & r.numbers.keys() for t in r.top_level}
        - {_top(p) for p in paths}
        - {_top(p) for p in draft.structural}
        - ({_top(kind_field)} if kind_field else set())
    )
    if ignore:
        draft.keys["ignore"] = ignore
    return names


def _top(path: str) -> str:
    """The top-level field a path starts in (pointer tokens unescaped)."""
    if not path.startswith("/"):
        return path
    return path[1:].split("/")[0].replace("~1", "/").replace("~0", "~")


def _topic(fmt: str, levels: list[str]) -> str:
    """The entry's topic pattern; '' where the format's default is the same."""
    pattern = "/".join(levels)
    if fmt == "edgepipe" or pattern == DEFAULT_TOPICS.get(fmt):
        return ""
    return pattern


def discover(
    samples: Sequence[Sample], catalog: Catalog = BUILTIN, root: str = DEFAULT_ROOT
) -> Discovery:
    """Everything discover infers from ``samples``: entries, kinds, and what it set aside."""
    found, ignored, unclassified, examples = families(samples, root)
    order = ["edgepipe", "ttn", "chirpstack", "zigbee2mqtt", "influx-line", "json"]
    found.sort(key=lambda f: (order.index(f.format), f.key))
    entries = [propose_family(f, catalog) for f in found]
    for entry in entries:
        for reason, n in entry.set_aside.items():
            unclassified[reason] += n
            examples.setdefault(reason, entry.keys.get("topic") or f"the {entry.format} entry")
    entries = [e for e in entries if e.kinds]
    return Discovery(entries, len(samples), ignored, unclassified, examples)


# -- the proposal as TOML, and its check against what was heard --------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def merged_kinds(discovery: Discovery) -> dict[str, KindProposal]:
    """Every proposed kind by name; a kind made by two entries is one, its metrics merged."""
    kinds: dict[str, KindProposal] = {}
    for entry in discovery.entries:
        for kind in entry.kinds:
            have = kinds.get(kind.name)
            if have is None:
                kinds[kind.name] = KindProposal(
                    kind.name,
                    list(kind.devices),
                    kind.messages,
                    dict(kind.metrics),
                    kind.known,
                    kind.replaces,
                )
                continue
            have.devices = sorted({*have.devices, *kind.devices})
            have.messages += kind.messages
            have.known = have.known and kind.known
            have.replaces = have.replaces or kind.replaces
            for name, m in kind.metrics.items():
                old = have.metrics.get(name)
                if old is None:
                    have.metrics[name] = m
                    continue
                old.resolution = min(old.resolution, m.resolution)
                old.seen_low, old.seen_high = (
                    min(old.seen_low, m.seen_low),
                    max(old.seen_high, m.seen_high),
                )
                old.low, old.high = min(old.low, m.low), max(old.high, m.high)
                old.readings += m.readings
    return kinds


def _plural(n: int, word: str) -> str:
    """``1 device``, ``2 devices``, ``2 ingest entries``."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def _device_list(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:3])
    return f"{_plural(len(ids), 'device')} ({shown}{', ...' if len(ids) > 3 else ''})"


def render(discovery: Discovery, source: str, all_kinds: bool = False) -> str:
    """The proposal as a TOML settings file, every guess marked (see the module docstring)."""
    lines = [
        f"# Proposed by `edgepipe discover` from {source}.",
        "# Review it: every `todo = ...` line marks a guess (units and physical ranges cannot be",
        "# heard). Set the values, then delete the `todo` line: `edgepipe config check` refuses the",
        "# file while one is left. docs/onboarding.md walks through it.",
        "",
    ]
    for entry in discovery.entries:
        lines.append("[[ingest]]")
        lines.append(
            f"# {_plural(entry.messages, 'message')} from {_plural(entry.devices, 'device')}"
        )
        lines += [f"# NOTE: {note}" for note in entry.notes]
        lines += [f"{key} = {_toml(value)}" for key, value in entry.keys.items()]
        lines.append("")
    for kind in merged_kinds(discovery).values():
        if kind.known and not all_kinds:
            lines.append(
                f"# [kinds.{kind.name}]: known to the catalogue (built-in, or in --config); its metrics ({', '.join(kind.metrics)}) cover "
                f"what {_device_list(kind.devices)} sent, every value in range (--all-kinds proposes it anyway)"
            )
            lines.append("")
            continue
        lines.append(f"[kinds.{kind.name}]")
        lines.append(f"# {_device_list(kind.devices)}, {kind.messages} messages")
        if kind.replaces:
            lines.append(f"# NOTE: replaces the catalogue's kind {kind.name} ({kind.replaces})")
        lines.append('domain = "any"  # farm, retail, city or any')
        lines.append("")
        for m in kind.metrics.values():
            lines.append(f"[kinds.{kind.name}.metrics.{m.name}]")
            if m.boolean:
                lines.append(f"# true/false, read as 1/0 ({m.readings} readings)")
                lines += ['unit = ""', "resolution = 1.0", "low = 0.0", "high = 1.0", ""]
                continue
            lines.append(f"todo = {_toml(TODO_TEXT)}")
            lines.append('unit = ""  # TODO: the unit shown with the values')
            lines.append(
                f"resolution = {_toml(m.resolution)}  # TODO: the sensor's step (grid of the values seen)"
            )
            lines.append(
                f"low = {_toml(m.low)}  # TODO: lowest physical value (seen {m.seen_low:g} in {m.readings} readings)"
            )
            lines.append(
                f"high = {_toml(m.high)}  # TODO: highest physical value (seen {m.seen_high:g})"
            )
            lines.append("")
    if not any(line.startswith("todo = ") for line in lines):  # the header's advice is moot
        lines[1:4] = [
            "# Nothing to review: no `todo` line (every kind heard is in the catalogue, commented",
            "# below). Check it with `edgepipe config check` and run the edge node with it.",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def without_todos(text: str) -> str:
    """The proposal with its ``todo`` lines deleted: what a user who accepts every guess keeps."""
    return "".join(
        line for line in text.splitlines(keepends=True) if not line.startswith("todo = ")
    )


@dataclass(slots=True)
class Check:
    """What the proposal makes of the samples it was inferred from, through the real adapters."""

    readings: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    ignored: int = 0
    not_taken: int = 0  # messages no entry subscribes to


def verify(
    text: str, samples: Sequence[Sample], root: str = DEFAULT_ROOT, base: Catalog = BUILTIN
) -> Check:
    """Run the proposal (``todo`` lines deleted) over ``samples``: readings, refusals by reason.

    A reading is refused here as the validator would for its kind, metric or range.
    """
    settings = Settings.model_validate(tomllib.loads(without_todos(text)))
    check_catalog_references(settings)
    catalog = catalog_of(settings).with_kinds(
        {k: v for k, v in base.kinds.items() if k not in settings.kinds}
    )
    router = IngestRouter(settings.ingest, "discover", Topics(root), catalog)
    check = Check()
    for sample in samples:
        levels = sample.topic.split("/")
        if (
            router.native
            and sample.topic.startswith(root + "/")
            and len(levels) > 2
            and levels[-2] == "dev"
        ):
            message = _json(sample.payload)
            if not isinstance(message, dict):
                check.refused["bad_json"] += 1
                continue
            reason = _refusal(catalog, message.get("kind"), message.get("metrics"))
            _count(check, reason)
            continue
        adapter = router.route(sample.topic)
        if adapter is None:
            check.not_taken += 1
            continue
        decoded = adapter.decode_one(
            sample.topic, sample.payload, sample.arrival_ms, sample.retained
        )
        check.ignored += bool(decoded.ignored)
        for refused in decoded.refused:
            check.refused[refused.reason.value] += 1
        for reading in decoded.readings:
            _count(check, _refusal(catalog, reading.kind, reading.metrics))
    return check


def _count(check: Check, reason: str | None) -> None:
    if reason is None:
        check.readings += 1
    else:
        check.refused[reason] += 1


def _refusal(catalog: Catalog, kind: Any, metrics: Any) -> str | None:
    if not isinstance(kind, str) or kind not in catalog.kinds:
        return "unknown_kind"
    if not isinstance(metrics, dict) or not metrics:
        return "missing_field"
    for name, value in metrics.items():
        spec = catalog.metric(kind, name)
        if spec is None:
            return "unknown_metric"
        if not isinstance(value, int | float) or not spec.low <= value <= spec.high:
            return "out_of_range"
    return None


def summary(discovery: Discovery, check: Check | None, all_kinds: bool = False) -> list[str]:
    """Short lines for a human (stderr): groups, devices, messages, and what was set aside."""
    out = [
        f"{_plural(discovery.messages, 'message')}; {_plural(len(discovery.entries), 'ingest entry')}, "
        f"{_plural(discovery.devices, 'device')}, {_plural(len(merged_kinds(discovery)), 'kind')}"
    ]
    for entry in discovery.entries:
        where = entry.keys.get("topic", "(the format's default topic)")
        kinds = ", ".join(
            k.name + (" (known)" if k.known and not all_kinds else "") for k in entry.kinds
        )
        out.append(
            f"  {entry.format} on {where}: {entry.messages} messages, {entry.devices} devices, kinds {kinds}"
        )
        out += [f"    note: {note}" for note in entry.notes]
    for reason, n in sorted(discovery.ignored.items()):
        out.append(f"  ignored {n}: {reason}")
    for reason, n in sorted(discovery.unclassified.items()):
        out.append(f"  not classified {n}: {reason} (e.g. {discovery.examples.get(reason, '?')})")
    if check is not None:
        refused = ", ".join(f"{r} {n}" for r, n in sorted(check.refused.items())) or "none"
        out.append(
            f"check: the proposal turns the messages heard into {check.readings} readings; refused: {refused}"
        )
    todos = sum(
        1
        for k in merged_kinds(discovery).values()
        if all_kinds or not k.known
        for m in k.metrics.values()
        if not m.boolean
    )
    if todos:
        out.append(
            f"{_plural(todos, 'metric')} to review (todo lines): units and ranges are guesses"
        )
    return out
