"""`edgepipe alerts` over a real Mosquitto: the edge's and the fleet analyst's alerts share
the alert topics, and a line says which raised it; --source keeps one of them (which it
leaves out: tests/unit/test_tail.py)."""

from __future__ import annotations

import uuid

import pytest

from pipeline.config import load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import Alert, Topics, encode
from pipeline.protocol.messages import AlertData
from pipeline.services import Mosquitto
from pipeline.tail import tail_alerts

TIMEOUT_S = 30.0


def alert(site: str, device: str, source: str) -> Alert:
    data = AlertData(
        v=1,
        alert_id=f"{site}.{device}.moisture.1",
        site=site,
        device=device,
        kind="soil_probe",
        metric="moisture",
        state="raised",
        severity="warning",
        score=0.9,
        value=41.5,
        reading_ts=1_796_000_000_000,
        reason="anomaly: score >= 0.8",
        model_version="m1",
        source=source,
    )
    return Alert(
        id=data.alert_id,
        source=f"edgepipe/{source}",
        type="edgepipe.alert",
        time="2026-12-01T00:00:00.000Z",
        subject=device,
        data=data,
    )


@pytest.fixture
def site_with_both_alerts(mosquitto: Mosquitto) -> str:
    """A site whose edge and analyst each raised one alert, retained so that a tail that
    subscribes later still gets both, whatever the machine's load."""
    site = f"farm-{uuid.uuid4().hex[:8]}"
    topics = Topics()
    client = MqttClient(mosquitto.url, client_id=f"test-{site}")
    client.connect()
    try:
        for device, source in (("soil_probe-0001", "edge"), ("soil_probe-0002", "cloud")):
            payload = encode(alert(site, device, source))
            client.publish(topics.alert(site, device), payload, qos=1, retain=True)
        assert client.flush(timeout=TIMEOUT_S)
    finally:
        client.close()
    return site


@pytest.mark.parametrize(
    ("source", "device"), [("cloud", "soil_probe-0002"), ("edge", "soil_probe-0001")]
)
def test_alerts_with_a_source_prints_that_sources_alert_marked_by_who_raised_it(
    mosquitto: Mosquitto, site_with_both_alerts: str, source: str, device: str
) -> None:
    settings = load_settings(overrides={"mqtt.url": mosquitto.url})
    lines: list[str] = []
    tail_alerts(
        settings,
        site=site_with_both_alerts,
        source=source,
        count=1,
        timeout=TIMEOUT_S,
        echo=lines.append,
    )
    assert len(lines) == 1, f"no {source} alert within {TIMEOUT_S} s"
    assert f"{site_with_both_alerts}/{device}" in lines[0]
    assert ("(cloud)" in lines[0]) == (source == "cloud")
