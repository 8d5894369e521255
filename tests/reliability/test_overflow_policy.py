"""R6: the edge outbox's bound and overflow policy are explicit and exact.

Policy (pipeline/edge/uplink.py): when a put would pass the budget, drop the oldest items of
the lowest tier first (batches, then model deltas, then aggregates), never a tier above the
incoming item's, and never alerts within their reserve; what cannot fit is refused. Every
dropped or refused item is counted under ``overflow`` and under its priority, and the node
publishes both in its health (``uplink_dropped.overflow``, ``uplink_dropped.<priority>``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgekit import LedgerDevices, Stack, running, stacks, wait_until
from waiting import GENEROUS_S

from pipeline.cloud.ingest import IngestWorker
from pipeline.edge.uplink import Priority, UplinkQueue
from pipeline.services import Mosquitto


@pytest.fixture
def stack(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with stacks(mosquitto_factory, tmp_path) as make:
        yield make

ITEM = 100  # bytes per payload


def put(q: UplinkQueue, priority: Priority, n: int) -> list[int]:
    return [q.put(priority, "t", lambda seq: b"%-99d|" % seq) for _ in range(n)]


def test_a_full_outbox_drops_exactly_the_oldest_lowest_tier_and_never_reserved_alerts(tmp_path: Path) -> None:
    # Room for 1,100 items; alerts keep 10 % (110 items) for themselves.
    q = UplinkQueue(tmp_path / "uplink.db", budget_bytes=1100 * ITEM, alert_reserve=0.10)
    alerts = put(q, Priority.ALERT, 100)
    aggregates = put(q, Priority.AGGREGATE, 1500)  # the link is down: nothing leaves
    batches = put(q, Priority.BATCH, 50)  # can displace only batches: there are none
    late_alerts = put(q, Priority.ALERT, 20)  # displace the oldest aggregates
    q.commit()
    stats = q.stats()
    kept = q.next_batch(10_000)
    kept_alerts = [i.seq for i in kept if i.priority == Priority.ALERT]
    kept_aggregates = [i.seq for i in kept if i.priority == Priority.AGGREGATE]
    print(
        f"R6 queue: put alerts={len(alerts) + len(late_alerts)} aggregates={len(aggregates)} "
        f"batches={len(batches)} | dropped={dict(stats.dropped)} by priority={dict(stats.dropped_by_priority)} "
        f"| kept alerts={len(kept_alerts)} aggregates={len(kept_aggregates)}"
    )
    assert stats.dropped == {"overflow": 500 + 50 + 20}
    assert stats.dropped_by_priority == {"aggregate": 520, "batch": 50}
    assert kept_alerts == alerts + late_alerts  # not one alert dropped
    assert kept_aggregates == aggregates[520:]  # exactly the newest ones, in order
    assert stats.bytes <= 1100 * ITEM
    q.close()


def test_a_tiny_uplink_budget_drops_counted_items_and_delivers_the_rest(stack: Callable[..., Stack]) -> None:
    s = stack(**{"uplink.budget_mb": 0.004})  # about 4 KB: seconds of traffic
    s.worker.client.close(1)  # the cloud is away while the outbox overflows
    with running(s.node), LedgerDevices(s.broker.url, s.site) as devices:
        assert wait_until(lambda: s.node.queue.stats().dropped["overflow"] >= 20, 30), s.node.queue.stats()
        devices.stop()
        s.node.request_drain()
        assert s.node.wait_drained(GENEROUS_S), "the node never closed its windows"
        overflow = s.node.counters.health(s.site, s.node.name, 0, uplink=s.node.queue.stats()).counters
        worker = IngestWorker(s.cloud_settings, s.store)
        worker.start(timeout=5)
        with running(worker):
            assert wait_until(lambda: s.node.queue.stats().items == 0, 60, step=0.25), s.node.queue.stats()
        stats = s.node.queue.stats()
        c = s.node.counters
        by_priority = {k: v for k, v in overflow.items() if k.startswith("uplink_dropped.")}
        print(
            f"R6 node: budget=4KB accepted={c.accepted} outbox seqs={s.node.queue.last_seq} "
            f"acked={stats.acked} dropped={dict(stats.dropped)} by priority={dict(stats.dropped_by_priority)} "
            f"health={by_priority} unaccounted={c.unaccounted}"
        )
        assert stats.dropped_by_priority.get("alert", 0) == 0
        assert sum(stats.dropped_by_priority.values()) == sum(stats.dropped.values())
        assert overflow["uplink_dropped.overflow"] == sum(
            v for k, v in overflow.items() if k in ("uplink_dropped.batch", "uplink_dropped.model", "uplink_dropped.aggregate")
        )
        # every uplink seq was either stored by the cloud or dropped, and counted: none in limbo
        assert stats.acked + sum(stats.dropped.values()) == s.node.queue.last_seq
        assert c.unaccounted == 0
