"""A cloud that does not answer is asked again less and less often, and normally once it does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from pipeline.clock import ManualClock
from pipeline.config import load_settings
from pipeline.edge.node import ACK_BACKOFF_MAX, EdgeNode
from pipeline.edge.uplink import Priority
from pipeline.protocol import Ack

T0 = 1_800_000_000_000
TIMEOUT_MS = 30_000


@pytest.fixture
def node(tmp_path: Path) -> Iterator[EdgeNode]:
    settings = load_settings(overrides={"edge.state_dir": str(tmp_path), "mqtt.url": "mqtt://127.0.0.1:1"})
    n = EdgeNode(settings, clock=ManualClock(T0))
    yield n
    n.queue.close()


def _send(node: EdgeNode) -> int:
    """Take the next queued item as if published now (what ``pump`` does when connected)."""
    node.queue.commit()
    [item] = node.queue.next_batch(1)
    node.queue.mark_sent([item.seq])
    node._inflight[item.seq] = node.clock.now_ms()
    return item.seq


def _wait(node: EdgeNode, ms: int) -> int:
    node.clock.advance(ms)  # type: ignore[attr-defined]
    before = node.counters.uplink_requeued
    node.requeue_timed_out(node.clock.now_ms())
    return node.counters.uplink_requeued - before


def test_every_unanswered_timeout_doubles_the_next_wait(node: EdgeNode) -> None:
    node._put(Priority.BATCH, "farm/edge/batch", lambda seq: b"batch")
    _send(node)
    assert _wait(node, TIMEOUT_MS) == 1
    _send(node)
    assert _wait(node, TIMEOUT_MS) == 0  # now 60 s
    assert _wait(node, TIMEOUT_MS) == 1


def test_the_wait_never_grows_beyond_its_ceiling(node: EdgeNode) -> None:
    node._put(Priority.BATCH, "farm/edge/batch", lambda seq: b"batch")
    for _ in range(8):
        _send(node)
        _wait(node, TIMEOUT_MS * ACK_BACKOFF_MAX)
    assert node._ack_timeout_ms == TIMEOUT_MS * ACK_BACKOFF_MAX


def test_an_ack_brings_the_wait_back_to_the_setting(node: EdgeNode) -> None:
    node._put(Priority.BATCH, "farm/edge/batch", lambda seq: b"batch")
    node._put(Priority.BATCH, "farm/edge/batch", lambda seq: b"batch")
    first = _send(node)
    _wait(node, TIMEOUT_MS)
    node.on_ack(msgspec.json.encode(Ack(v=1, site="farm", seq=first)))
    _send(node)
    assert _wait(node, TIMEOUT_MS) == 1
