"""DiskBuffer: the cloud worker's durable, bounded FIFO of writes while the store is down."""

from __future__ import annotations

from pathlib import Path

from pipeline.cloud.buffer import DiskBuffer, StoreWrite
from pipeline.protocol.messages import Health, Reading


def write(n: int, first_ts: int = 0) -> StoreWrite:
    readings = [
        Reading(v=1, device="d1", kind="fridge", ts=first_ts + i, seq=i, metrics={"temp": 4.0})
        for i in range(n)
    ]
    return StoreWrite(readings={"farm": readings})


def test_items_come_back_oldest_first_and_equal(tmp_path: Path) -> None:
    buffer = DiskBuffer(tmp_path / "b.db", 10_000_000)
    first, second = write(3), write(2, first_ts=100)
    buffer.put(first)
    buffer.put(second)

    item_id, got = buffer.oldest() or (0, None)
    assert got == first
    buffer.remove(item_id)
    assert buffer.oldest() == (item_id + 1, second)


def test_what_was_put_survives_a_reopen(tmp_path: Path) -> None:
    """put() returns only once the item is on disk: the worker acknowledges after it."""
    buffer = DiskBuffer(tmp_path / "b.db", 10_000_000)
    buffer.put(write(5))
    buffer.put(StoreWrite(health=[Health(v=1, site="farm", node="n", ts=1, status="online")]))
    size = buffer.bytes

    reopened = DiskBuffer(tmp_path / "b.db", 10_000_000)

    assert (reopened.items, reopened.bytes, reopened.points) == (2, size, 6)
    assert reopened.oldest() is not None


def test_a_put_over_the_budget_is_refused_and_counted(tmp_path: Path) -> None:
    buffer = DiskBuffer(tmp_path / "b.db", 2_000)
    accepted = [buffer.put(write(10)) for _ in range(20)]

    assert accepted.count(True) == buffer.items > 0
    assert accepted.count(False) == buffer.refused > 0
    assert buffer.bytes <= 2_000


def test_removing_frees_the_budget(tmp_path: Path) -> None:
    buffer = DiskBuffer(tmp_path / "b.db", 10_000_000)
    buffer.put(write(10))
    item_id, _ = buffer.oldest() or (0, None)

    buffer.remove(item_id)

    assert (buffer.items, buffer.bytes, buffer.points) == (0, 0, 0)
    assert buffer.oldest() is None


def test_an_undecodable_item_is_skipped_and_counted(tmp_path: Path) -> None:
    buffer = DiskBuffer(tmp_path / "b.db", 10_000_000)
    buffer._conn.execute("INSERT INTO items (points, body) VALUES (1, x'c1c1')")
    buffer.put(write(1))

    _, got = buffer.oldest() or (0, None)

    assert got == write(1)
    assert buffer.corrupt == 1
