"""Zigbee2MQTT device states, and the topics that are not readings."""

from __future__ import annotations

import pytest
from ingestkit import ARRIVAL_MS, entry, fixture

from pipeline.ingest.zigbee2mqtt import Zigbee2MqttAdapter
from pipeline.protocol.reasons import Reason


def adapter() -> Zigbee2MqttAdapter:
    return Zigbee2MqttAdapter(
        entry("zigbee2mqtt", kind="fridge", metrics={"temp": "temperature", "door": "contact"}, ignore=["battery"]),
        site="retail",
    )


def test_a_state_message_is_a_reading_at_arrival_time_named_after_the_friendly_name() -> None:
    out = adapter().decode_one("zigbee2mqtt/shop/fridge 1", fixture("zigbee2mqtt_state.json"), ARRIVAL_MS)
    (reading,) = out.readings
    assert reading.ts == ARRIVAL_MS and reading.kind == "fridge"
    assert reading.device.startswith("shop_fridge_1-")
    assert reading.metrics == {"temp": 4.3, "door": 0.0}
    assert out.extra_fields == 4  # humidity, linkquality, voltage, device_temperature


@pytest.mark.parametrize(
    ("topic", "retained", "why"),
    [
        pytest.param("zigbee2mqtt/bridge/state", False, "bridge", id="bridge-state"),
        pytest.param("zigbee2mqtt/bridge/devices", True, "bridge", id="bridge-devices"),
        pytest.param("zigbee2mqtt/fridge/availability", False, "availability", id="availability"),
        pytest.param("zigbee2mqtt/fridge/set", False, "command", id="set"),
        pytest.param("zigbee2mqtt/fridge/set/state", False, "command", id="set-attribute"),
        pytest.param("zigbee2mqtt/fridge", True, "retained", id="retained-state"),
    ],
)
def test_topics_that_are_not_readings_are_ignored_not_refused(topic: str, retained: bool, why: str) -> None:
    out = adapter().decode_one(topic, b'{"state":"online"}', ARRIVAL_MS, retained=retained)
    assert out.ignored == why and not out.readings and not out.refused


def test_a_legacy_plain_text_state_is_bad_json() -> None:
    out = adapter().decode_one("zigbee2mqtt/fridge", b"online", ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.BAD_JSON]


def test_a_state_without_any_mapped_metric_is_no_metrics() -> None:
    out = adapter().decode_one("zigbee2mqtt/fridge", b'{"linkquality": 80}', ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.NO_METRICS]
