"""Publishes keep their order across a broker restart (the root cause the 60 s R1 test found).

paho 2.x sends a message published between its reconnect and the CONNACK ahead of the
backlog it resends at the CONNACK. The edge drops a reading whose ``ts`` is not newer than
the device's last as a redelivery, so one such overtaking message turned a whole outage's
backlog into "duplicates" (9,008 of 10,815 readings lost in the 60 s SIGTERM run).
``MqttClient`` now holds publishes made while disconnected and hands them to paho only after
paho's own backlog is on the wire.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from pipeline.mqtt import MqttClient
from pipeline.services import Mosquitto

TOPIC = "edgepipe/v1/order/dev/d1"


def test_publishes_arrive_in_order_across_a_broker_restart(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory()
    sub_id = f"order-{uuid.uuid4().hex[:6]}"
    subscriber = MqttClient(broker.url, client_id=sub_id, session_expiry=3600, reconnect_delay=(1, 1))
    subscriber.connect(timeout=5)
    subscriber.subscribe(TOPIC, qos=1)
    publisher = MqttClient(broker.url, reconnect_delay=(1, 1))
    publisher.connect(timeout=5)
    stop = threading.Event()
    sent = 0

    def publish() -> None:
        nonlocal sent
        while not stop.is_set() and sent < 100_000:
            publisher.publish(TOPIC, b"%d" % sent, qos=1)
            sent += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        for _ in range(3):  # three restarts: each reconnect is a chance to overtake
            time.sleep(1)
            broker.stop()
            time.sleep(1.5)
            broker.start()
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join(5)
    assert publisher.flush(60)
    publisher.close(1)
    received: list[int] = []
    deadline = time.monotonic() + 60
    while len(set(received)) < sent and time.monotonic() < deadline:
        try:
            received.append(int(subscriber.messages.get(timeout=1).payload))
        except Exception:  # queue.Empty: keep waiting until the deadline
            continue
    subscriber.close(1)
    firsts: list[int] = []
    seen: set[int] = set()
    for n in received:  # a redelivery (QoS 1 DUP) may repeat a number; order is of first arrivals
        if n not in seen:
            seen.add(n)
            firsts.append(n)
    overtaken = sum(1 for a, b in zip(firsts, firsts[1:], strict=False) if b < a)
    print(f"publish order: sent={sent} received={len(received)} distinct={len(seen)} out_of_order={overtaken}")
    assert len(seen) == sent
    assert overtaken == 0
