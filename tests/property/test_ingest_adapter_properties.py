"""Every ingest adapter: any bytes give readings, typed refusals or "ignored", never an
exception; valid payloads generated in each format give back the readings they encode."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import IngestSettings
from pipeline.ingest.base import Decoded, MappedAdapter
from pipeline.ingest.edgepipe import EdgepipeAdapter
from pipeline.ingest.registry import ADAPTERS
from pipeline.protocol.catalog import KINDS
from pipeline.protocol.reasons import Reason

ARRIVAL = 1_800_000_000_000
FUZZ = settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
ROUND = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)

ENTRIES: dict[str, dict[str, Any]] = {
    "json": {"topic": "s/{site}/{device}", "kind_field": "kind", "timestamp_field": "/m/ts"},
    "ttn": {"kind": "weather_station"},
    "chirpstack": {"kind_field": "/deviceInfo/deviceProfileName"},
    "zigbee2mqtt": {"kind": "fridge"},
    "influx-line": {},
}
TOPICS = {
    "json": "s/farm/d1",
    "ttn": "v3/app@ttn/devices/d1/up",
    "chirpstack": "application/1/device/0102030405060708/event/up",
    "zigbee2mqtt": "zigbee2mqtt/d1",
    "influx-line": "telegraf/h/m",
}


def adapter(fmt: str) -> MappedAdapter:
    return ADAPTERS[fmt](IngestSettings.model_validate({"format": fmt, **ENTRIES[fmt]}), site="farm")


ADAPTER_OBJECTS = {fmt: adapter(fmt) for fmt in ADAPTERS}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=24,
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(list(KINDS)) | json_values,
        "m": st.fixed_dictionaries({}, optional={"ts": json_values | st.integers(0, 2**70)}),
        "moisture": json_values,
        "temp": json_values,
        "received_at": st.text(max_size=40) | json_values,
        "time": st.text(max_size=40) | json_values,
        "end_device_ids": st.fixed_dictionaries({}, optional={"device_id": st.text(max_size=70) | json_values}),
        "uplink_message": st.fixed_dictionaries({}, optional={"decoded_payload": json_values}),
        "deviceInfo": st.fixed_dictionaries(
            {}, optional={"devEui": json_values | st.text(max_size=20), "deviceProfileName": json_values}
        ),
        "object": json_values,
    },
)


def _well_formed(out: Decoded) -> None:
    assert isinstance(out, Decoded)
    for refused in out.refused:
        assert isinstance(refused.reason, Reason) and refused.reason is not Reason.ADAPTER_ERROR, refused
    for reading in out.readings:
        assert all(math.isfinite(v) for v in reading.metrics.values())


@FUZZ
@given(fmt=st.sampled_from(sorted(ADAPTERS)), payload=st.binary(max_size=300), retained=st.booleans())
def test_any_bytes_never_raise(fmt: str, payload: bytes, retained: bool) -> None:
    _well_formed(ADAPTER_OBJECTS[fmt].decode_one(TOPICS[fmt], payload, ARRIVAL, retained))


@FUZZ
@given(fmt=st.sampled_from(sorted(ADAPTERS)), message=shaped | json_values)
def test_format_shaped_json_never_raises(fmt: str, message: Any) -> None:
    payload = json.dumps(message, allow_nan=True).encode()
    _well_formed(ADAPTER_OBJECTS[fmt].decode_one(TOPICS[fmt], payload, ARRIVAL))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list('ab ,=\\"\n#tf1i.-e')), max_size=80))
def test_line_protocol_shaped_text_never_raises(text: str) -> None:
    _well_formed(ADAPTER_OBJECTS["influx-line"].decode_one("telegraf/h/m", text.encode(), ARRIVAL))


@FUZZ
@given(payload=st.binary(max_size=300))
def test_the_native_adapter_never_raises(payload: bytes) -> None:
    _well_formed(EdgepipeAdapter("farm").decode_one("edgepipe/v1/farm/dev/d1", payload, ARRIVAL))


# -- round trips: a reading encoded in each format decodes back to itself -----------------------

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789_-", min_size=1, max_size=64)
timestamps = st.integers(0, 4_102_444_800_000)  # 1970 to 2100, ms


@st.composite
def readings(draw: st.DrawFn) -> tuple[str, str, int, dict[str, float]]:
    kind = draw(st.sampled_from([k for k in KINDS if k != "replay"]))
    spec = KINDS[kind]
    names = draw(st.lists(st.sampled_from(list(spec.metrics)), min_size=1, unique=True))
    metrics = {
        n: draw(st.floats(spec.metrics[n].low, spec.metrics[n].high, allow_nan=False, allow_infinity=False))
        for n in names
    }
    return draw(ids), kind, draw(timestamps), metrics


def _iso(ms: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _entry(fmt: str, kind: str) -> MappedAdapter:
    keys: dict[str, Any] = {"kind": kind}
    if fmt == "json":
        keys = {"topic": "s/{device}", "kind_field": "kind", "timestamp_field": "ts"}
    if fmt == "influx-line":
        keys = {}
    return ADAPTERS[fmt](IngestSettings.model_validate({"format": fmt, **keys}), site="farm")


def _line(device: str, kind: str, ts: int, metrics: dict[str, float]) -> bytes:
    fields = ",".join(f"{k}={v!r}" for k, v in metrics.items())
    return f"{kind},device={device} {fields} {ts * 1_000_000}".encode()


@ROUND
@given(fmt=st.sampled_from(sorted(ADAPTERS)), reading=readings())
def test_valid_payloads_round_trip_to_their_reading(fmt: str, reading: tuple[str, str, int, dict[str, float]]) -> None:
    device, kind, ts, metrics = reading
    if fmt == "json":
        topic, payload = f"s/{device}", json.dumps({"kind": kind, "ts": ts, **metrics}).encode()
    elif fmt == "ttn":
        topic = f"v3/app/devices/{device}/up"
        body = {"end_device_ids": {"device_id": device}, "received_at": _iso(ts), "uplink_message": {"decoded_payload": metrics}}
        payload = json.dumps(body).encode()
    elif fmt == "chirpstack":
        topic = f"application/1/device/{device}/event/up"
        payload = json.dumps({"deviceInfo": {"devEui": device}, "time": _iso(ts), "object": metrics}).encode()
    elif fmt == "zigbee2mqtt":
        topic, payload, ts = f"zigbee2mqtt/{device}", json.dumps(metrics).encode(), ARRIVAL
    else:
        topic, payload = f"telegraf/h/{kind}", _line(device, kind, ts, metrics)
    out = _entry(fmt, kind).decode_one(topic, payload, ARRIVAL)
    assert not out.refused, out.refused
    (got,) = out.readings
    assert (got.device, got.kind, got.ts, got.metrics) == (device, kind, ts, metrics)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("ab ,=tf1i.-e9")), max_size=40))
def test_the_fast_line_parser_agrees_with_the_general_one(text: str) -> None:
    from pipeline.ingest.fields import Refusal
    from pipeline.ingest.influx_line import _parse_escaped, _parse_plain

    def parsed(parse: Any) -> Any:
        try:
            p = parse(text)
        except Refusal as r:
            return r.reason
        return (p.measurement, p.tags, p.fields, p.timestamp)

    assert parsed(_parse_plain) == parsed(_parse_escaped)
