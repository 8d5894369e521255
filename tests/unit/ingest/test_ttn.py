"""The Things Stack v3 uplinks."""

from __future__ import annotations

import json

from ingestkit import ARRIVAL_MS, entry, fixture

from pipeline.ingest.ttn import TtnAdapter
from pipeline.protocol.reasons import Reason

TOPIC = "v3/orchard-sensors@ttn/devices/soil-probe-07/up"
MAPPED = {"moisture": "soil_moisture", "soil_temp": "soil_temperature"}


def adapter(**keys: object) -> TtnAdapter:
    return TtnAdapter(entry("ttn", kind="soil_probe", metrics=MAPPED, **keys), site="farm")


def test_the_documented_uplink_becomes_one_reading() -> None:
    out = adapter().decode_one(TOPIC, fixture("ttn_uplink.json"), ARRIVAL_MS)
    (reading,) = out.readings
    assert (reading.device, reading.kind, reading.ts) == ("soil-probe-07", "soil_probe", 1_709_633_742_338)
    assert reading.metrics == {"moisture": 31.7, "soil_temp": 12.4}
    assert out.extra_fields == 1  # battery
    assert not out.refused


def test_ignored_fields_are_not_counted_as_extra() -> None:
    out = adapter(ignore=["battery"]).decode_one(TOPIC, fixture("ttn_uplink.json"), ARRIVAL_MS)
    assert out.extra_fields == 0


def test_dev_eui_as_the_device_id() -> None:
    out = adapter(device_field="/end_device_ids/dev_eui").decode_one(TOPIC, fixture("ttn_uplink.json"), ARRIVAL_MS)
    assert out.readings[0].device == "70B3D57ED005A3F1"


def test_default_subscription_is_every_application_uplink() -> None:
    assert adapter().subscription() == "v3/+/devices/+/up"


def test_an_uplink_without_a_payload_formatter_is_missing_field() -> None:
    message = json.loads(fixture("ttn_uplink.json"))
    del message["uplink_message"]["decoded_payload"]
    out = adapter().decode_one(TOPIC, json.dumps(message).encode(), ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.MISSING_FIELD]
    assert "decoded_payload" in out.refused[0].detail


def test_a_metric_of_the_wrong_type_is_wrong_type() -> None:
    message = json.loads(fixture("ttn_uplink.json"))
    message["uplink_message"]["decoded_payload"]["soil_moisture"] = "wet"
    out = adapter().decode_one(TOPIC, json.dumps(message).encode(), ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.WRONG_TYPE]


def test_a_bad_received_at_is_bad_timestamp() -> None:
    message = json.loads(fixture("ttn_uplink.json"))
    message["received_at"] = "soon"
    out = adapter().decode_one(TOPIC, json.dumps(message).encode(), ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.BAD_TIMESTAMP]
