"""R9: with the cloud away, the edge keeps detecting and alerting; every alert raised offline
reaches the cloud after the link returns, in per-device order.

Alert latency is measured from the device's publish of the anomalous reading to the alert's
arrival at a subscriber on the edge's broker. Its figure (RELIABILITY.md R9: p95 <= 500 ms,
p99 <= 1 s) is the bench's (``latency.alert_p99_ms``, same-run baseline, quiet machine); this
test asserts what must hold on a busy one too: no alert waits for the uplink's ack timeout
(30 s), i.e. every latency is far below it.
The cloud worker does not exist during the partition, so the broker queues nothing for it:
the alerts it finally stores come from the edge's own disk outbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgekit import METRIC, LedgerDevices, Stack, now_ms, running, stacks, wait_until

from pipeline.mqtt import MqttClient
from pipeline.protocol import Alert, Topics, decode
from pipeline.services import Mosquitto


@pytest.fixture
def stack(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with stacks(mosquitto_factory, tmp_path) as make:
        yield make

TOPICS = Topics()
WARMUP = 150  # readings per device before the first spike (the detector warms up on 100)
EVERY = 50  # then one spike every 50 readings (1 s at 50 Hz)
# An alert that waited for the ack timeout (30 s) would arrive later than this, however busy the machine.
NO_ACK_WAIT_BOUND_S = 10.0


def spike(device: str, seq: int) -> bool:
    return seq >= WARMUP and (seq - WARMUP) % EVERY == 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def test_the_edge_keeps_alerting_offline_and_ships_every_alert_after_the_link_returns(
    stack: Callable[..., Stack],
) -> None:
    # A small in-flight window fills within a second with unacknowledged batches, as the
    # default 64 does in a long partition: alerts must not wait for the ack timeout.
    s = stack(start=False, **{"alert.cooldown_s": 0.2, "alert.clear_after": 3, "uplink.max_inflight": 4})
    s.node.start(timeout=5)
    spy = MqttClient(s.broker.url)
    spy.connect(timeout=5)
    spy.subscribe(TOPICS.alerts(s.site), qos=1)
    arrivals: list[tuple[float, Alert]] = []
    with running(s.node), LedgerDevices(s.broker.url, s.site, spike=spike) as devices:
        deadline = time.monotonic() + 8  # 8 s of partition: warm-up, then ~5 spikes per device
        while time.monotonic() < deadline:
            try:
                message = spy.messages.get(timeout=0.05)
            except Exception:  # queue.Empty
                continue
            arrivals.append((time.monotonic(), decode(message.payload, Alert)))
        devices.stop()
        raised_offline = dict(s.node.counters.alerts)
        queued = s.node.queue.stats().items_by_priority
        s.worker.start(timeout=5)  # the link returns
        with running(s.worker):
            total = sum(raised_offline.values())
            ok = wait_until(lambda: len(s.store.query_alerts(s.site, now_ms() - 3_600_000, 10_000)) >= total, 30)
            stored = s.store.query_alerts(s.site, now_ms() - 3_600_000, 10_000)
    spy.close(1)
    sent = {(e.device, e.ts): e.sent_at for e in devices.ledger}
    first: dict[str, tuple[float, Alert]] = {}
    for t, a in arrivals:  # unacknowledged alerts are resent every ack timeout: first arrival
        first.setdefault(a.data.alert_id + a.data.state, (t, a))
    latencies = [
        t - sent[(a.data.device, a.data.reading_ts)]
        for t, a in first.values()
        if a.data.state == "raised" and (a.data.device, a.data.reading_ts) in sent
    ]
    spikes = sum(1 for e in devices.ledger if spike(e.device, e.seq))
    c = s.node.counters
    p95, p99 = percentile(latencies, 95), percentile(latencies, 99)
    print(
        f"R9 offline 8s: spikes={spikes} alerts raised={raised_offline.get('raised', 0)} "
        f"cleared={raised_offline.get('cleared', 0)} queued_alerts_at_restore={queued.get(0, 0)} "
        f"stored={len(stored)} latency p95={p95 * 1000:.0f}ms p99={p99 * 1000:.0f}ms "
        f"points_scored={s.node.points_in[METRIC]} accepted={c.accepted}"
    )
    assert raised_offline.get("raised", 0) >= 3, "no detection while offline"
    assert ok and len(stored) == sum(raised_offline.values())
    assert s.node.points_in[METRIC] == c.accepted  # every accepted reading scored and learned
    assert latencies and max(latencies) < NO_ACK_WAIT_BOUND_S
    for device in devices.devices:
        # per-device order: raise, clear, raise, ... by reading time
        states = [a.state for a in sorted(stored, key=lambda a: a.reading_ts) if a.device == device]
        assert all(x != y for x, y in zip(states, states[1:], strict=False)), states
