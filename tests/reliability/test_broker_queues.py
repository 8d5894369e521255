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

from waiting import GENEROUS_S

from pipeline.mqtt import MqttClient
from pipeline.services import Mosquitto

MESSAGES = 3000  # what the edges would publish while the writer is away (scaled down)
TOPIC = "edgepipe/v1/r5/edge/agg"
DROPPED = "$SYS/broker/publish/messages/dropped"
UPTIME = "$SYS/broker/uptime"
PROBE, SENTINEL = b"-1", b"-2"  # the subscriber's own messages (the ledger's are 0..n-1)


def sys_dropped(broker: Mosquitto) -> int:
    """The broker's own count of dropped publishes (``$SYS``), as of a refresh made after this
    call began: what was dropped before the call is in it, on a busy machine too.

    Mosquitto refreshes ``$SYS`` every ``sys_interval`` (1 s here), the uptime at every
    refresh, the dropped count when it changed. Two live uptimes after subscribing mean a
    whole refresh ran after the call began, and every message of it, in order, has arrived.
    """
    client = MqttClient(broker.url)
    client.connect(timeout=5)
    try:
        client.subscribe(DROPPED, qos=0)
        client.subscribe(UPTIME, qos=0)
        dropped: int | None = None
        live_uptimes = 0
        deadline = time.monotonic() + GENEROUS_S
        while live_uptimes < 2 or dropped is None:
            assert time.monotonic() < deadline, f"no $SYS refresh within {GENEROUS_S:g} s"
            try:
                message = client.messages.get(timeout=1.0)
            except queue.Empty:
                continue
            if message.topic == DROPPED:
                dropped = int(message.payload)
            elif not message.retain:
                live_uptimes += 1
        return dropped
    finally:
        client.close(1)


def missing_after_offline(broker: Mosquitto, n: int, expect: int) -> tuple[int, int, int]:
    """Publish ``n`` ledgered QoS 1 messages while a durable subscriber is offline; return
    (acknowledged to the publisher, received by the subscriber, missing from the ledger).

    The subscriber takes its queued session until it holds ``expect`` messages (bounded), then
    sends itself a sentinel and takes everything up to it: the broker queues the sentinel
    behind whatever it still holds for the subscriber, so a delivery beyond ``expect`` would
    be seen, on a busy machine too (no "quiet for a second" guess)."""
    sub_id = f"writer-{uuid.uuid4().hex[:6]}"
    subscriber = MqttClient(broker.url, client_id=sub_id, session_expiry=3600)
    subscriber.connect(timeout=5)
    subscriber.subscribe(TOPIC, qos=1)
    subscriber.publish(TOPIC, PROBE, qos=1)  # its own probe comes back once the subscription holds
    assert take(subscriber, until=lambda got: int(PROBE) in got) == {int(PROBE)}
    subscriber.close(1)

    publisher = MqttClient(broker.url)
    publisher.connect(timeout=5)
    deliveries = {i: publisher.publish_tracked(TOPIC, b"%d" % i) for i in range(n)}
    assert publisher.flush(60)
    publisher.close(1)
    acked = {i for i, d in deliveries.items() if d.acknowledged}

    subscriber = MqttClient(broker.url, client_id=sub_id, session_expiry=3600)
    subscriber.connect(timeout=5)
    received = take(subscriber, until=lambda got: len(got) >= expect)
    subscriber.publish(TOPIC, SENTINEL, qos=1)
    received |= take(subscriber, until=lambda got: int(SENTINEL) in got)
    subscriber.close(1)
    received -= {int(SENTINEL)}
    return len(acked), len(received), len(acked - received)


def take(subscriber: MqttClient, until: Callable[[set[int]], bool]) -> set[int]:
    """The message numbers ``subscriber`` receives until ``until(received)`` holds; fails
    after ``GENEROUS_S`` of no progress towards it (a queued session may take a while)."""
    received: set[int] = set()
    deadline = time.monotonic() + GENEROUS_S
    while not until(received):
        try:
            received.add(int(subscriber.messages.get(timeout=1.0).payload))
            deadline = time.monotonic() + GENEROUS_S
        except queue.Empty:
            assert time.monotonic() < deadline, f"stuck at {len(received)} messages for {GENEROUS_S:g} s"
    return received


def test_a_broker_sized_for_the_backlog_drops_nothing_for_an_offline_writer(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    broker = mosquitto_factory(max_queued_messages=2 * MESSAGES, extra_config="sys_interval 1")
    before = sys_dropped(broker)
    acked, received, missing = missing_after_offline(broker, MESSAGES, expect=MESSAGES)
    after = sys_dropped(broker)  # a refresh after every publish: any drop is in it
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
    dropped = sys_dropped(broker)
    print(f"R5 negative control (max_queued_messages 1000): published={MESSAGES} acked={acked} "
          f"received={received} missing={missing} $SYS dropped={dropped}")
    assert acked == MESSAGES, "the broker PUBACKs what it then drops"
    assert missing == MESSAGES - 1000
    assert dropped >= missing
