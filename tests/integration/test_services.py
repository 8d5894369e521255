"""The service fixtures start real programs that work: MQTT round trip, InfluxDB write/read,
restart on the same port with persistence, and a clear error for a missing binary."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

import pipeline.services as services
from pipeline.errors import ServiceError
from pipeline.services import Influxd, Mosquitto

TIMEOUT = 5.0


class _Client:
    """A paho client that records messages; every wait is bounded by TIMEOUT."""

    def __init__(self, port: int) -> None:
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.got = threading.Event()
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.append(msg)
        self.got.set()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(TIMEOUT), "no SUBACK"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), "no PUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mosquitto_fixture_round_trip(mosquitto: Mosquitto) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    topic = f"edgepipe/v1/test/{uuid.uuid4().hex}"
    sub, pub = _Client(mosquitto.port), _Client(mosquitto.port)
    try:
        sub.subscribe(topic)
        pub.publish(topic, b'{"v": 1}')
        assert sub.got.wait(TIMEOUT), "message not delivered"
    finally:
        sub.close()
        pub.close()
    assert [(m.topic, m.payload) for m in sub.messages] == [(topic, b'{"v": 1}')]


def _post(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        return resp.status, resp.read()


def test_influxdb_write_then_query(influxdb: Influxd, influx_db: str) -> None:
    assert influxdb.url == f"http://127.0.0.1:{influxdb.port}"
    ts_ms = 1_700_000_000_123
    line = f"reading,device=d1,metric=temp value=21.5 {ts_ms}"
    write = f"{influxdb.url}/write?db={influx_db}&precision=ms"
    req = urllib.request.Request(write, data=line.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        assert resp.status == 204

    params = urllib.parse.urlencode({"db": influx_db, "q": "SELECT * FROM reading", "epoch": "ms"})
    status, body = _post(f"{influxdb.url}/query?{params}")
    assert status == 200
    series = json.loads(body)["results"][0]["series"][0]
    row = dict(zip(series["columns"], series["values"][0], strict=True))
    assert row == {"time": ts_ms, "device": "d1", "metric": "temp", "value": 21.5}

    # The helper sees the same point, and the database is fresh for this test.
    result = influxdb.query("SELECT count(value) FROM reading", db=influx_db)
    assert result["results"][0]["series"][0]["values"][0][1] == 1


def test_influx_db_is_fresh_per_test(influxdb: Influxd, influx_db: str) -> None:
    result = influxdb.query("SHOW MEASUREMENTS", db=influx_db)
    assert "series" not in result["results"][0]


def test_mosquitto_restart_keeps_port_and_retained_messages(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    broker = mosquitto_factory()
    port, pid = broker.port, broker.pid
    pub = _Client(port)
    pub.publish("edgepipe/v1/test/retained", b"kept", retain=True)
    pub.close()

    broker.restart()
    assert (broker.port, broker.url) == (port, f"mqtt://127.0.0.1:{port}")
    assert broker.pid != pid and broker.running

    sub = _Client(port)
    try:
        sub.subscribe("edgepipe/v1/test/retained")
        assert sub.got.wait(TIMEOUT), "retained message lost across restart"
    finally:
        sub.close()
    assert sub.messages[0].payload == b"kept"


def test_mosquitto_kill_and_stop_signal_only_own_pid(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    broker = mosquitto_factory()
    broker.kill(signal.SIGSTOP)  # frozen: stop() must still end it
    broker.stop(timeout=2)
    assert not broker.running
    broker.stop()  # idempotent
    broker.start()
    broker.kill(signal.SIGKILL)
    assert not broker.running
    with pytest.raises(ServiceError, match="not running"):
        broker.kill(signal.SIGTERM)
    broker.restart()
    assert broker.running


def test_influxd_restart_keeps_data(influxd_factory: Callable[..., Influxd]) -> None:
    server = influxd_factory()
    server.create_database("keep")
    server.write("keep", "m value=1 1700000000000")
    port = server.port
    started = time.monotonic()
    server.restart()
    assert server.port == port
    assert time.monotonic() - started < 30
    result = server.query("SELECT value FROM m", db="keep", epoch="ms")
    assert result["results"][0]["series"][0]["values"] == [[1_700_000_000_000, 1]]


@pytest.mark.parametrize(
    ("cls", "install"),
    [
        (Mosquitto, "apt-get install -y mosquitto mosquitto-clients"),
        (Influxd, "apt-get install -y influxdb"),
    ],
)
def test_missing_binary_names_the_install_command(
    cls: type[Mosquitto] | type[Influxd],
    install: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    monkeypatch.setattr(services.os.path, "isfile", lambda path: False)
    with pytest.raises(ServiceError, match=install):
        cls(tmp_path)
