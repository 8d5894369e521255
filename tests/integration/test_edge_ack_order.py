"""A device's readings reach the edge node in the order the device published them, while the
cloud's acks (and merged models) arrive in between: through a real Mosquitto 2.0.11.

Why this can break: the node acknowledges device readings only after its journal commits,
in batches, but used to acknowledge a cloud ack at once, ahead of readings received before
it. MQTT requires PUBACKs in the order the PUBLISHes came (MQTT-4.6.0-2), and Mosquitto
2.0.11 answers such an out-of-order PUBACK by handing its next new message straight to the
socket while older ones still wait in its queue for the node's inflight window: the node
got a block of hundreds of readings after later ones (a false dropout, a window cut short,
the CSV replay finding of issue 17's helper). The device's readings are published as fast
as the client goes, so the broker's queue for the node is never empty; the cloud acks are
published from a second client meanwhile. The order is recorded where the node's MQTT
client hands messages to the node (its inbox), so a reorder anywhere before that shows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
from nodekit import edge_settings, new_site, now_ms, reading
from waiting import wait_for

from pipeline.config import Settings
from pipeline.edge.node import EdgeNode
from pipeline.mqtt import Message, MqttClient
from pipeline.protocol import Topics, encode
from pipeline.protocol.messages import SCHEMA_VERSION, Ack
from pipeline.services import Mosquitto

TOPICS = Topics()
DEVICE = "soil_probe-0001"
READINGS = 6_000
ACK_EVERY = 150  # a cloud ack after every this many readings: 40 acks among the readings
STEP_MS = 100  # event time between readings: 10 minutes in all, within the node's clock checks


class ArrivalLog(queue.Queue[Message]):
    """The node's inbox, noting each device reading's ``ts`` as the MQTT client hands it over."""

    def __init__(self) -> None:
        super().__init__()
        self.reading_ts: list[int] = []

    def put(self, item: Message, block: bool = True, timeout: float | None = None) -> None:
        if "/dev/" in item.topic:
            self.reading_ts.append(msgspec.json.decode(item.payload)["ts"])
        super().put(item, block, timeout)


@contextmanager
def node_with_arrival_log(settings: Settings) -> Iterator[tuple[EdgeNode, ArrivalLog]]:
    node = EdgeNode(settings)
    inbox = ArrivalLog()
    node.client.messages = inbox  # before start(): paho hands every message to this queue
    node.start(timeout=30)
    stop = threading.Event()
    thread = threading.Thread(target=node.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield node, inbox
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the node did not stop within 15 s"


def test_a_devices_readings_arrive_in_order_while_cloud_acks_arrive_in_between(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = new_site()
    settings = edge_settings(mosquitto.url, tmp_path, site)
    device = MqttClient(mosquitto.url)
    cloud = MqttClient(mosquitto.url)
    device.connect(timeout=30)
    cloud.connect(timeout=30)
    first_ts = now_ms() - READINGS * STEP_MS
    try:
        with node_with_arrival_log(settings) as (node, inbox):
            for i in range(READINGS):
                device.publish(
                    TOPICS.reading(site, DEVICE),
                    reading(DEVICE, "soil_probe", first_ts + i * STEP_MS, {"moisture": 30.0}),
                    qos=1,
                )
                if i % ACK_EVERY == ACK_EVERY - 1:
                    # an ack of nothing the node sent: the node still takes and acknowledges it
                    ack = Ack(
                        v=SCHEMA_VERSION,
                        site=site,
                        seq=10_000_000 + i,
                        ranges=[[10_000_000 + i, 10_000_000 + i]],
                    )
                    cloud.publish(TOPICS.cloud_ack(site), encode(ack), qos=1)
            wait_for(
                lambda: len(inbox.reading_ts) >= READINGS, "every reading at the node", timeout=300
            )
            wait_for(
                lambda: node.counters.received >= READINGS, "every reading handled", timeout=300
            )
    finally:
        device.close(10)
        cloud.close(10)
    arrived = inbox.reading_ts
    behind = [
        (arrived[k - 1], arrived[k]) for k in range(1, len(arrived)) if arrived[k] < arrived[k - 1]
    ]
    assert len(arrived) == READINGS
    assert not behind, f"{len(behind)} readings arrived after later ones, first: {behind[:3]}"
    assert node.counters.accepted == READINGS, node.summary()
