"""R5: a broker sized for the outage drops nothing for an offline durable subscriber, and the
ledger check that says so does detect loss when the broker is undersized.

Mosquitto drops the *newest* messages beyond ``max_queued_messages`` silently while still
PUBACKing the publisher (RELIABILITY.md key number 3), so only a ledger notices. The
subscriber is durable like the cloud worker: fixed client id, QoS 1, MQTT 5 session expiry.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable

from pipeline.mqtt import MqttClient
from pipeline.services import Mosquitto

MESSAGES = 3000  # what the edges would publish while the writer is away (scaled down)
TOPIC = "edgepipe/v1/r5/edge/agg"
DROPPED = "$SYS/broker/publish/messages/dropped"


def sys_dropped(broker: Mosquitto) -> int:
    """The broker's own count of dropped publishes (``$SYS``, refreshed every second here)."""
    client = MqttClient(broker.url)
    client.connect(timeout=5)
    try:
        client.subscribe(DROPPED, qos=0)
        return int(client.messages.get(timeout=5).payload)
    finally:
        client.close(1)


def missing_after_offline(broker: Mosquitto, n: int, expect: int) -> tuple[int, int, int]:
    """Publish ``n`` ledgered QoS 1 messages while a durable subscriber is offline; return
    (acknowledged to the publisher, received by the subscriber, missing from the ledger).

    The subscriber takes its queued session until it holds ``expect`` messages (bounded), then
    until a second of quiet, so a delivery that more than ``expect`` would still be seen."""
    sub_id = f"writer-{uuid.uuid4().hex[:6]}"
    subscriber = MqttClient(broker.url, client_id=sub_id, session_expiry=3600)
    subscriber.connect(timeout=5)
    subscriber.subscribe(TOPIC, qos=1)
    subscriber.publish(TOPIC, b"-1", qos=1)  # its own probe comes back once the subscription holds
    assert int(subscriber.messages.get(timeout=30).payload) == -1
    subscriber.close(1)

    publisher = MqttClient(broker.url)
    publisher.connect(timeout=5)
    deliveries = {i: publisher.publish_tracked(TOPIC, b"%d" % i) for i in range(n)}
    assert publisher.flush(60)
    publisher.close(1)
    acked = {i for i, d in deliveries.items() if d.acknowledged}

    subscriber = MqttClient(broker.url, client_id=sub_id, session_expiry=3600)
    subscriber.connect(timeout=5)
    received: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            received.add(int(subscriber.messages.get(timeout=1.0).payload))
        except queue.Empty:
            if len(received) >= expect:
                break  # what was expected, then a second of quiet
    subscriber.close(1)
    return len(acked), len(received), len(acked - received)


def test_a_broker_sized_for_the_backlog_drops_nothing_for_an_offline_writer(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    broker = mosquitto_factory(max_queued_messages=2 * MESSAGES, extra_config="sys_interval 1")
    before = sys_dropped(broker)
    acked, received, missing = missing_after_offline(broker, MESSAGES, expect=MESSAGES)
    time.sleep(1.2)  # one $SYS refresh: a drop would show by then (a false pass at worst, never a false failure)
    after = sys_dropped(broker)
    print(f"R5 sized queue: published={MESSAGES} acked={acked} received={received} missing={missing} "
          f"$SYS dropped {before}->{after}")
    assert acked == MESSAGES
    assert missing == 0
    assert after == before


def test_the_ledger_check_detects_loss_from_an_undersized_broker_queue(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    broker = mosquitto_factory(max_queued_messages=1000, extra_config="sys_interval 1")
    acked, received, missing = missing_after_offline(broker, MESSAGES, expect=1000)
    deadline = time.monotonic() + 30  # $SYS refreshes every second; a busy machine may lag
    while (dropped := sys_dropped(broker)) < missing and time.monotonic() < deadline:
        time.sleep(0.5)
    print(f"R5 negative control (max_queued_messages 1000): published={MESSAGES} acked={acked} "
          f"received={received} missing={missing} $SYS dropped={dropped}")
    assert acked == MESSAGES, "the broker PUBACKs what it then drops"
    assert missing == MESSAGES - 1000
    assert dropped >= missing
