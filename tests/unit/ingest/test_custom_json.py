"""Any JSON, mapped by configuration: topic placeholders, pointers, units, scale, ignore."""

from __future__ import annotations

import pytest
from ingestkit import ARRIVAL_MS, entry, fixture

from pipeline.ingest.custom_json import JsonAdapter
from pipeline.protocol.reasons import Reason


def air(**keys: object) -> JsonAdapter:
    base: dict[str, object] = {
        "topic": "sensors/{site}/{device}/state",
        "kind": "air_quality",
        "timestamp_field": "/meta/time",
        "metrics": {"pm25": "/pm/2_5", "no2": "no2_ppb"},
        "scale": {"no2": 2.0},
        "ignore": ["rssi"],
    }
    return JsonAdapter(entry("json", **{**base, **keys}), site="city")


def test_the_vendor_payload_maps_by_pointer_scale_and_topic() -> None:
    out = air().decode_one("sensors/city/aq-box-11/state", fixture("custom_air.json"), ARRIVAL_MS)
    (reading,) = out.readings
    assert (reading.device, reading.ts) == ("aq-box-11", 1_709_633_742_000)
    assert reading.metrics == {"pm25": 17.9, "no2": 40.2}
    assert out.extra_fields == 1  # id (meta is the timestamp's field; rssi is ignored)


def test_the_subscription_is_narrowed_to_the_nodes_site() -> None:
    assert air().subscription() == "sensors/city/+/state"


@pytest.mark.parametrize(("unit", "value"), [("s", 1_709_633_742), ("ms", 1_709_633_742_000), ("ns", 1_709_633_742_000_000_000)])
def test_numeric_time_fields_in_each_unit(unit: str, value: int) -> None:
    adapter = air(timestamp_field="t", timestamp_unit=unit)
    out = adapter.decode_one("sensors/city/a/state", b'{"t": %d, "no2_ppb": 1}' % value, ARRIVAL_MS)
    assert out.readings[0].ts == 1_709_633_742_000


def test_kind_and_device_from_fields_and_arrival_time() -> None:
    adapter = JsonAdapter(entry("json", topic="bus/readings", kind_field="type", device_field="/src/id"), site="farm")
    out = adapter.decode_one("bus/readings", b'{"type":"soil_probe","src":{"id":"p 9"},"moisture":40}', ARRIVAL_MS)
    (reading,) = out.readings
    assert (reading.kind, reading.ts, reading.metrics) == ("soil_probe", ARRIVAL_MS, {"moisture": 40.0})
    assert reading.device.startswith("p_9-")


def test_an_array_is_several_readings_and_a_bad_element_is_refused_alone() -> None:
    adapter = JsonAdapter(entry("json", topic="bus", kind="noise_meter", device_field="id"), site="city")
    out = adapter.decode_one("bus", b'[{"id":"n1","noise":50},{"id":"n2","noise":"loud"},{"id":"n3","noise":55}]', ARRIVAL_MS)
    assert [r.device for r in out.readings] == ["n1", "n3"]
    assert [(r.reason, r.raw) for r in out.refused] == [(Reason.WRONG_TYPE, b'{"id":"n2","noise":"loud"}')]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", Reason.EMPTY),
        (b"\xff\xfe", Reason.NOT_UTF8),
        (b"{", Reason.BAD_JSON),
        (b"42", Reason.NOT_OBJECT),
        (b'{"no2_ppb": 1e999}', Reason.NON_FINITE),
        (b'{"meta":{"time":"2024-03-05T10:15:42Z"}}', Reason.NO_METRICS),
        (b'{"no2_ppb": 3}', Reason.MISSING_FIELD),
    ],
)
def test_refusals_carry_a_typed_reason(payload: bytes, reason: Reason) -> None:
    out = air().decode_one("sensors/city/x/state", payload, ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [reason]
    assert not out.readings


def test_an_oversized_payload_is_too_large() -> None:
    out = air(max_bytes=64).decode_one("sensors/city/x/state", b'{"no2_ppb": 1, "pad": "' + b"x" * 100 + b'"}', ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.TOO_LARGE]
