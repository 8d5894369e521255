"""ChirpStack v4 uplink events."""

from __future__ import annotations

import json

from ingestkit import ARRIVAL_MS, entry, fixture

from pipeline.ingest.chirpstack import ChirpStackAdapter
from pipeline.protocol.reasons import Reason

TOPIC = "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/0101010101010103/event/up"


def test_the_documented_event_becomes_one_reading_with_the_kind_from_the_profile() -> None:
    adapter = ChirpStackAdapter(entry("chirpstack", kind_field="/deviceInfo/deviceProfileName"), site="city")
    out = adapter.decode_one(TOPIC, fixture("chirpstack_up.json"), ARRIVAL_MS)
    (reading,) = out.readings
    assert (reading.device, reading.kind, reading.ts) == ("0101010101010103", "air_quality", 1_709_633_742_775)
    assert reading.metrics == {"pm25": 18.4, "no2": 41.2}
    assert out.extra_fields == 1  # temperature


def test_the_device_name_is_mapped_to_a_valid_id_deterministically() -> None:
    adapter = ChirpStackAdapter(entry("chirpstack", kind="air_quality", device_field="/deviceInfo/deviceName"), site="city")
    first = adapter.decode_one(TOPIC, fixture("chirpstack_up.json"), ARRIVAL_MS).readings[0].device
    again = adapter.decode_one(TOPIC, fixture("chirpstack_up.json"), ARRIVAL_MS).readings[0].device
    assert first == again and first.startswith("Station_Rue_Verte__3-")


def test_strict_ids_refuse_the_device_name() -> None:
    adapter = ChirpStackAdapter(
        entry("chirpstack", kind="air_quality", device_field="/deviceInfo/deviceName", strict_ids=True), site="city"
    )
    out = adapter.decode_one(TOPIC, fixture("chirpstack_up.json"), ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.BAD_ID]


def test_an_unknown_profile_name_is_unknown_kind() -> None:
    message = json.loads(fixture("chirpstack_up.json"))
    message["deviceInfo"]["deviceProfileName"] = "Dragino LHT65"
    adapter = ChirpStackAdapter(entry("chirpstack", kind_field="/deviceInfo/deviceProfileName"), site="city")
    out = adapter.decode_one(TOPIC, json.dumps(message).encode(), ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.UNKNOWN_KIND]


def test_an_event_without_object_is_missing_field() -> None:
    message = json.loads(fixture("chirpstack_up.json"))
    del message["object"]
    adapter = ChirpStackAdapter(entry("chirpstack", kind="air_quality"), site="city")
    out = adapter.decode_one(TOPIC, json.dumps(message).encode(), ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.MISSING_FIELD]
