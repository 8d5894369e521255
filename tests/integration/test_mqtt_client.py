"""MqttClient over a real Mosquitto: publish, receive, reconnect, refuse oversize payloads."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Callable, Iterator

import pytest

from pipeline.errors import ConfigError
from pipeline.mqtt import BrokerUrl, Message, MqttClient, PayloadTooLarge, parse_broker_url
from pipeline.services import Mosquitto


@pytest.fixture
def connect() -> Iterator[Callable[..., MqttClient]]:
    clients: list[MqttClient] = []

    def make(url: str, **kwargs: object) -> MqttClient:
        client = MqttClient(url, **kwargs)  # type: ignore[arg-type]
        client.connect(timeout=5)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=1)


def topic() -> str:
    return f"test/{uuid.uuid4().hex}"


def next_message(client: MqttClient, timeout: float = 5.0) -> Message:
    return client.messages.get(timeout=timeout)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_qos1_publish_arrives_and_is_acknowledged(
    mosquitto: Mosquitto, connect: Callable[..., MqttClient], protocol: str
) -> None:
    name = topic()
    receiver = connect(mosquitto.url, protocol=protocol)
    receiver.subscribe(name, qos=1)
    sender = connect(mosquitto.url, protocol=protocol)
    receiver_ready(receiver, sender, name)
    sender.publish(name, b"hello", qos=1)
    assert sender.flush(timeout=5)
    assert next_message(receiver).payload == b"hello"


def receiver_ready(receiver: MqttClient, sender: MqttClient, name: str) -> None:
    """Publish probes until the subscription is active (SUBACK is asynchronous)."""
    for _ in range(50):
        sender.publish(name, b"probe", qos=0)
        try:
            if receiver.messages.get(timeout=0.1).payload == b"probe":
                break
        except queue.Empty:
            continue
    while not receiver.messages.empty():
        receiver.messages.get_nowait()


def test_an_oversize_publish_is_refused_before_the_broker_sees_it(
    mosquitto: Mosquitto, connect: Callable[..., MqttClient]
) -> None:
    name = topic()
    receiver = connect(mosquitto.url)
    receiver.subscribe(name)
    sender = connect(mosquitto.url, max_payload=1000)
    receiver_ready(receiver, sender, name)
    with pytest.raises(PayloadTooLarge):
        sender.publish(name, b"x" * 1001, qos=1)
    sender.publish(name, b"after", qos=1)
    assert sender.flush(timeout=5)
    assert next_message(receiver).payload == b"after"
    assert sender.stats.disconnects == 0


def test_subscriptions_come_back_after_a_broker_restart(
    mosquitto_factory: Callable[..., Mosquitto], connect: Callable[..., MqttClient]
) -> None:
    broker = mosquitto_factory()
    name = topic()
    receiver = connect(broker.url, reconnect_delay=(1, 1))
    receiver.subscribe(name, qos=1)
    broker.restart()
    sender = connect(broker.url)
    for _ in range(100):  # bounded: about 10 s
        sender.publish(name, b"after-restart", qos=0)
        try:
            if receiver.messages.get(timeout=0.1).payload == b"after-restart":
                break
        except queue.Empty:
            continue
    else:
        pytest.fail("no message after the broker restarted")
    assert receiver.stats.disconnects == 1


def test_a_durable_session_keeps_messages_published_while_away(
    mosquitto: Mosquitto, connect: Callable[..., MqttClient]
) -> None:
    name, client_id = topic(), f"durable-{uuid.uuid4().hex[:8]}"
    first = MqttClient(mosquitto.url, client_id=client_id, session_expiry=60)
    first.connect(timeout=5)
    first.subscribe(name, qos=1)
    sender = connect(mosquitto.url)
    receiver_ready(first, sender, name)
    first.close()
    for i in range(5):
        sender.publish(name, f"m{i}".encode(), qos=1)
    assert sender.flush(timeout=5)
    again = connect(mosquitto.url, client_id=client_id, session_expiry=60)
    got = [next_message(again).payload for _ in range(5)]
    assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerUrl("127.0.0.1", 1883)),
        ("mqtt://localhost", BrokerUrl("localhost", 1883)),
        ("mqtts://broker:8883", BrokerUrl("broker", 8883, tls=True)),
        ("mqtt://edge%2F1:s3cr%40t@h:1", BrokerUrl("h", 1, username="edge/1", password="s3cr@t")),
    ],
)
def test_broker_urls_parse(url: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize("url", ["http://h:1", "mqtt://", "mqtt://h:notaport", "h:1883", "mqtt://h:1/path"])
def test_bad_broker_urls_name_the_setting(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_broker_url(url)
    assert info.value.key == "mqtt.url"
