"""R9: with the cloud away, the edge keeps detecting and alerting; every alert raised offline
reaches the edge broker's subscribers at once, in per-device order, and reaches the cloud
after the link returns, in per-device order.

"At once" is a functional statement here, not a figure: while the cloud is away nothing is
acknowledged, the uplink window fills with batches, and the ack timeout is set so long that
nothing times out during the test; an alert that waited for room in the window would never
arrive. How fast alerts arrive (RELIABILITY.md R9: p95 <= 500 ms, p99 <= 1 s) is a speed
figure, measured by the bench on a quiet machine (``latency.alert_p99_ms``, and
``latency.alert_p99_ms_offline`` with the cloud away), never by this test.

The cloud worker does not exist during the partition, so the broker queues nothing for it:
the alerts it finally stores come from the edge's own disk outbox. The link returns as the
node sees it after a partition: its connection drops and comes back (a TCP proxy resets it),
and what was in flight is sent again, now to a cloud that is there.
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgekit import METRIC, SPIKE_VALUE, LedgerDevices, Stack, now_ms, running, stacks, wait_for
from waiting import GENEROUS_S

from pipeline.faults import TcpProxy
from pipeline.mqtt import MqttClient
from pipeline.protocol import Alert, AlertData, Topics, decode
from pipeline.services import LOOPBACK, Mosquitto


@pytest.fixture
def stack(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with stacks(mosquitto_factory, tmp_path) as make:
        yield make


TOPICS = Topics()
WARMUP = 150  # readings per device before the first spike (the detector warms up on 100)
EVERY = 50  # then one spike every 50 readings (1 s at 50 Hz)
RAISES_PER_DEVICE = 2  # offline alerts each device must see (raise, clear, raise)
DIP_VALUE = -35.0  # a fridge at -35 °C: the other side of SPIKE_VALUE, inside the kind's range
MAX_INFLIGHT = 4  # a window that unacknowledged batches fill within a second
NEVER_S = 3600.0  # the ack timeout: nothing is sent again during the test unless the link drops


def spike(device: str, seq: int) -> float | None:
    """Every ``EVERY`` readings a spike, up and down in turn: on its first day a detector takes
    a repeat of an anomaly it has seen as its usual largest (docs/detection.md, eighth round),
    so the second raise comes from the other side."""
    if seq < WARMUP or (seq - WARMUP) % EVERY:
        return None
    return SPIKE_VALUE if (seq - WARMUP) // EVERY % 2 == 0 else DIP_VALUE


class AlertSpy:
    """A subscriber to the site's alerts on the edge broker: each alert's first arrival, in
    arrival order (a resent alert arrives again; its first arrival is the one that counts)."""

    def __init__(self, url: str, site: str) -> None:
        self.client = MqttClient(url)
        self.client.connect(timeout=5)
        self.client.subscribe(TOPICS.alerts(site), qos=1)
        self.arrived: dict[tuple[str, str], Alert] = {}  # (alert_id, state) -> alert, arrival order

    def take(self) -> None:
        """Take what has arrived so far (waits at most a tick)."""
        try:
            message = self.client.messages.get(timeout=0.05)
        except queue.Empty:
            return
        alert = decode(message.payload, Alert)
        self.arrived.setdefault((alert.data.alert_id, alert.data.state), alert)

    def raised_per_device(self) -> Counter[str]:
        return Counter(a.data.device for a in self.arrived.values() if a.data.state == "raised")

    def take_until(self, condition: Callable[[], bool], what: str) -> None:
        """Take arrivals until ``condition()`` holds; fail naming ``what`` after ``GENEROUS_S``."""
        deadline = time.monotonic() + GENEROUS_S
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not within {GENEROUS_S:g} s"
            self.take()


def states_by_reading_time(alerts: list[AlertData], device: str) -> list[str]:
    return [a.state for a in sorted(alerts, key=lambda a: a.reading_ts) if a.device == device]


def alternate(states: list[str]) -> bool:
    """Raise, clear, raise, ...: never two of a kind in a row, and a clear never first."""
    return (not states or states[0] == "raised") and all(x != y for x, y in zip(states, states[1:], strict=False))


def test_the_edge_keeps_alerting_offline_and_ships_every_alert_after_the_link_returns(
    stack: Callable[..., Stack], mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    with TcpProxy(LOOPBACK, broker.port) as proxy:
        s = stack(
            broker=broker,
            edge_url=proxy.url,
            start=False,
            **{
                "alert.cooldown_s": 0.2,
                "alert.clear_after": 3,
                "alert.clear_after_s": 0.0,  # readings at 50 Hz: clear on three calm ones
                "uplink.max_inflight": MAX_INFLIGHT,
                "uplink.ack_timeout_s": NEVER_S,
            },
        )
        s.node.start(timeout=5)
        spy = AlertSpy(broker.url, s.site)
        with running(s.node), LedgerDevices(broker.url, s.site, spike=spike) as devices:
            # The partition: the node detects and alerts with no cloud to acknowledge anything.
            spy.take_until(
                lambda: all(spy.raised_per_device()[d] >= RAISES_PER_DEVICE for d in devices.devices),
                f"{RAISES_PER_DEVICE} alerts raised offline for every device, at the edge broker",
            )
            devices.stop()
            acked = len(devices.acked())
            wait_for(lambda: s.node.counters.accepted >= acked, "the node took every reading")
            raised_offline = dict(s.node.counters.alerts)
            spy.take_until(
                lambda: len(spy.arrived) >= sum(raised_offline.values()),
                "every alert the node raised offline, at the edge broker",
            )
            window = s.node.queue.stats().inflight
            requeued_offline = s.node.counters.uplink_requeued
            at_broker = [a.data for a in spy.arrived.values()]

            # The link returns: the cloud is there, the node's connection drops and comes back.
            s.worker.start(timeout=5)
            with running(s.worker):
                proxy.set_mode("reset")
                wait_for(lambda: not s.node.client.connected, "the node saw its link drop")
                proxy.set_mode("pass")
                total = sum(raised_offline.values())
                wait_for(
                    lambda: len(s.store.query_alerts(s.site, now_ms() - 3_600_000, 10_000)) >= total,
                    f"all {total} offline alerts in the cloud store",
                )
                stored = s.store.query_alerts(s.site, now_ms() - 3_600_000, 10_000)
    spy.client.close(1)
    spikes = sum(1 for e in devices.ledger if spike(e.device, e.seq) is not None)
    c = s.node.counters
    print(
        f"R9 offline: spikes={spikes} alerts raised={raised_offline.get('raised', 0)} "
        f"cleared={raised_offline.get('cleared', 0)} at the edge broker={len(at_broker)} "
        f"uplink window={window}/{MAX_INFLIGHT} requeued offline={requeued_offline} stored={len(stored)} "
        f"points_scored={s.node.points_in[METRIC]} accepted={c.accepted}"
    )
    # Preconditions: the window was full of unacknowledged batches and nothing was sent
    # twice, so every alert at the edge broker left while the window had no room.
    assert window >= MAX_INFLIGHT
    assert requeued_offline == 0
    # Every alert raised offline reached the edge broker, once each, in per-device order.
    assert len(at_broker) == sum(raised_offline.values())
    assert s.node.points_in[METRIC] == c.accepted  # every accepted reading scored and learned
    for device in devices.devices:
        arrival_order = [a.reading_ts for a in at_broker if a.device == device]
        assert arrival_order == sorted(arrival_order), f"{device}: alerts arrived out of order"
        assert alternate(states_by_reading_time(at_broker, device)), states_by_reading_time(at_broker, device)
    # After the link returned: every one of them in the cloud, once, in per-device order.
    assert len(stored) == sum(raised_offline.values())
    for device in devices.devices:
        assert alternate(states_by_reading_time(stored, device)), states_by_reading_time(stored, device)
