"""UplinkQueue: priorities, exact acks, requeue, overflow policy with exact counts, journal replay.

Budgets in the overflow tests are multiples of one payload size (``SIZE``), so "room for
1,000 batches" is exact. Every test that reopens the queue closes it first (one process, one
open queue per file: the queue refuses a second one).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pipeline.clock import ManualClock
from pipeline.edge.uplink import OVERFLOW, Priority, UplinkError, UplinkQueue
from pipeline.protocol.messages import seq_ranges, seqs_of

SIZE = 100  # bytes of every payload built by ``body``
A, G, M, B = Priority.ALERT, Priority.AGGREGATE, Priority.MODEL, Priority.BATCH


def body(size: int = SIZE) -> Any:
    """A make_payload of exactly ``size`` bytes that starts with the seq (cut if too short)."""
    return lambda seq: (str(seq).encode() + b"." * size)[:size]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000_000)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "uplink.db"


@pytest.fixture
def q(path: Path, clock: ManualClock) -> Iterator[UplinkQueue]:
    queue = UplinkQueue(path, clock=clock)
    yield queue
    queue.close()


def put_all(q: UplinkQueue, priorities: list[Priority], size: int = SIZE) -> list[int]:
    seqs = [q.put(p, f"t/{p.name.lower()}", body(size)) for p in priorities]
    q.commit()
    return seqs


def seqs_sent(q: UplinkQueue, limit: int = 10_000) -> list[int]:
    return [item.seq for item in q.next_batch(limit)]


# -- priorities and batches --------------------------------------------------------------


def test_next_batch_orders_by_priority_then_seq(q: UplinkQueue) -> None:
    put_all(q, [B, G, A, M, B, A, G])  # seqs 1..7
    assert [(i.priority, i.seq) for i in q.next_batch(10)] == [
        (A, 3), (A, 6), (G, 2), (G, 7), (M, 4), (B, 1), (B, 5),
    ]  # fmt: skip


def test_an_item_carries_its_seq_topic_payload_and_creation_time(
    q: UplinkQueue, clock: ManualClock
) -> None:
    seq = q.put(Priority.AGGREGATE, "farm/edge/agg", lambda s: b"seq=%d" % s)
    q.commit()
    [item] = q.next_batch(1)
    assert (item.seq, item.topic, item.payload) == (seq, "farm/edge/agg", b"seq=%d" % seq)
    assert (item.created_ms, item.attempts) == (clock.now_ms(), 0)


def test_items_are_not_offered_before_they_are_committed(q: UplinkQueue) -> None:
    q.put(Priority.ALERT, "t", body())
    assert q.next_batch(10) == []
    q.commit()
    assert len(q.next_batch(10)) == 1


def test_next_batch_stops_at_limit_and_max_bytes(q: UplinkQueue) -> None:
    put_all(q, [B] * 10)
    assert seqs_sent(q, limit=3) == [1, 2, 3]
    assert [i.seq for i in q.next_batch(10, max_bytes=3 * SIZE + 1)] == [1, 2, 3]


def test_an_item_larger_than_max_bytes_is_still_offered_alone(q: UplinkQueue) -> None:
    put_all(q, [B], size=5000)
    assert [len(i.payload) for i in q.next_batch(10, max_bytes=100)] == [5000]


# -- seq ---------------------------------------------------------------------------------


def test_seq_keeps_growing_across_reopen_after_every_item_was_acked(
    path: Path, clock: ManualClock
) -> None:
    with UplinkQueue(path, clock=clock) as q:
        assert put_all(q, [B, B, B]) == [1, 2, 3]
        q.ack([1, 2, 3])
    with UplinkQueue(path, clock=clock) as q:
        assert q.last_seq == 3
        assert q.put(Priority.BATCH, "t", body()) == 4


def test_a_refused_item_uses_up_its_seq(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=SIZE) as q:
        q.put(Priority.ALERT, "t", body())
        assert q.put(Priority.BATCH, "t", body()) == 2  # refused: the budget holds an alert
        assert q.put(Priority.ALERT, "t", body()) == 3


def test_a_failing_payload_builder_uses_no_seq(q: UplinkQueue) -> None:
    def boom(seq: int) -> bytes:
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError):
        q.put(Priority.BATCH, "t", boom)
    assert q.put(Priority.BATCH, "t", body()) == 1


# -- acks, in flight, requeue -------------------------------------------------------------


def test_ack_deletes_exactly_the_listed_seqs(q: UplinkQueue) -> None:
    put_all(q, [B] * 6)
    assert q.ack([2, 5, 99]) == 2  # 99 is unknown: ignored
    q.commit()
    assert q.seqs() == [1, 3, 4, 6]
    assert q.stats().acked == 2


def test_ack_takes_the_clouds_ranges(q: UplinkQueue) -> None:
    put_all(q, [A, B, B, G, B, B, B])
    stored = [1, 2, 3, 6, 7]
    assert q.ack(seqs_of(seq_ranges(stored))) == 5
    assert q.seqs() == [4, 5]


def test_items_in_flight_are_not_offered_again(q: UplinkQueue) -> None:
    put_all(q, [B] * 4)
    assert q.mark_sent([1, 2]) == 2
    assert seqs_sent(q) == [3, 4]
    assert q.stats().inflight == 2


def test_requeue_after_reconnect_resends_in_priority_then_seq_order(q: UplinkQueue) -> None:
    put_all(q, [B, B, A, G])
    q.mark_sent(seqs_sent(q))
    q.ack([3])
    assert q.requeue_inflight() == 3
    items = q.next_batch(10)
    assert [(i.seq, i.attempts) for i in items] == [(4, 1), (1, 1), (2, 1)]
    assert (q.stats().retries, q.stats().inflight) == (3, 0)


def test_requeue_older_than_takes_only_timed_out_items(q: UplinkQueue, clock: ManualClock) -> None:
    put_all(q, [B, B])
    q.mark_sent([1])
    clock.advance(5_000)
    q.mark_sent([2])
    clock.advance(1_000)
    assert q.requeue_inflight(older_than_ms=3_000) == 1
    assert seqs_sent(q) == [1]


def test_reopen_returns_items_in_flight_to_pending(path: Path) -> None:
    with UplinkQueue(path) as q:
        put_all(q, [B, G])
        q.mark_sent([1, 2])
    with UplinkQueue(path) as q:
        assert seqs_sent(q) == [2, 1]
        assert (q.stats().inflight, q.stats().retries) == (0, 2)


# -- overflow ----------------------------------------------------------------------------


def test_overflow_drops_exactly_the_oldest_batches(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=1000 * SIZE) as q:
        put_all(q, [B] * 1500)
        stats = q.stats()
        assert q.seqs() == list(range(501, 1501))
        assert stats.dropped == {OVERFLOW: 500}
        assert stats.dropped_bytes == {OVERFLOW: 500 * SIZE}
        assert (stats.items, stats.bytes) == (1000, 1000 * SIZE)


def test_overflow_drops_batches_then_models_then_aggregates(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=6 * SIZE) as q:
        put_all(q, [G, G, M, M, B, B])  # full
        put_all(q, [G, G, G])  # drops both batches, then the oldest model
        assert q.seqs(B) == [] and q.seqs(M) == [4]
        put_all(q, [G, G])  # drops the last model, then the oldest aggregate
        assert q.seqs() == [2, 7, 8, 9, 10, 11]
        assert q.stats().dropped[OVERFLOW] == 5


def test_a_lower_tier_item_is_refused_rather_than_displace_a_higher_tier(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=3 * SIZE) as q:
        put_all(q, [G, G, M])
        put_all(q, [B])
        assert q.seqs() == [1, 2, 3]
        assert q.stats().dropped == {OVERFLOW: 1}


def test_a_refused_item_drops_nothing_else(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=4 * SIZE) as q:
        put_all(q, [G, G, G, B])
        put_all(q, [B], size=2 * SIZE)  # dropping the one batch would not make room
        assert q.seqs() == [1, 2, 3, 4]
        assert q.stats().dropped_bytes == {OVERFLOW: 2 * SIZE}


def test_an_item_may_displace_every_older_item_of_its_tier_to_fit_exactly(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=3 * SIZE) as q:
        put_all(q, [A, B, B])
        put_all(q, [B], size=2 * SIZE)
        assert q.seqs() == [1, 4]
        assert q.stats().dropped == {OVERFLOW: 2}


def test_an_item_larger_than_the_whole_budget_is_refused_not_raised(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=SIZE) as q:
        put_all(q, [A], size=SIZE + 1)
        assert q.seqs() == [] and q.stats().dropped == {OVERFLOW: 1}


def test_alerts_within_their_reserve_survive_a_flood_of_batches(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=100 * SIZE, alert_reserve=0.10) as q:
        alerts = put_all(q, [A] * 10)
        put_all(q, [B] * 1000)
        assert q.seqs(A) == alerts
        assert q.stats().items_by_priority[B] == 90
        assert q.stats().dropped[OVERFLOW] == 910


def test_an_alert_displaces_the_oldest_batch(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=3 * SIZE) as q:
        put_all(q, [B, B, B])
        put_all(q, [A])
        assert q.seqs() == [2, 3, 4]


def test_beyond_the_reserve_a_new_alert_drops_the_oldest_alert(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=10 * SIZE, alert_reserve=0.10) as q:
        put_all(q, [A] * 12)
        assert q.seqs() == list(range(3, 13))
        assert q.stats().dropped == {OVERFLOW: 2}


def test_a_new_alert_never_pushes_alerts_below_the_reserve(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=10 * SIZE, alert_reserve=0.5) as q:
        put_all(q, [A] * 10)
        put_all(q, [A], size=6 * SIZE)  # would need 6 alerts gone, leaving 4 < 5 reserved
        assert q.seqs() == list(range(1, 11))
        assert q.stats().dropped == {OVERFLOW: 1}


def test_with_a_full_reserve_no_alert_is_ever_dropped(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=3 * SIZE, alert_reserve=1.0) as q:
        put_all(q, [A] * 5)
        assert q.seqs() == [1, 2, 3]
        assert q.stats().dropped == {OVERFLOW: 2}


def test_dropped_counts_survive_reopen(path: Path) -> None:
    with UplinkQueue(path, budget_bytes=2 * SIZE) as q:
        put_all(q, [B] * 5)
    with UplinkQueue(path, budget_bytes=2 * SIZE) as q:
        assert q.stats().dropped == {OVERFLOW: 3}
        assert q.stats().dropped_bytes == {OVERFLOW: 3 * SIZE}


# -- journal -----------------------------------------------------------------------------


def test_journal_replays_committed_entries_after_reopen(path: Path) -> None:
    with UplinkQueue(path) as q:
        ids = [q.append_journal(f"dev-{i % 3}", b"r%d" % i) for i in range(10)]
        q.commit()
    with UplinkQueue(path) as q:
        assert list(q.journal_since(ids[6])) == [
            (ids[i], f"dev-{i % 3}", b"r%d" % i) for i in range(7, 10)
        ]


def test_journal_since_reads_across_chunk_boundaries(path: Path) -> None:
    with UplinkQueue(path, journal_chunk=3) as q:
        for i in range(10):
            q.append_journal("d", b"%d" % i)
        q.commit()
        assert [jid for jid, _, _ in q.journal_since(0)] == list(range(1, 11))
        assert [jid for jid, _, _ in q.journal_since(3)] == list(range(4, 11))


def test_journal_since_shows_only_committed_entries(q: UplinkQueue) -> None:
    q.append_journal("d", b"committed")
    q.commit()
    q.append_journal("d", b"pending")
    assert [p for _, _, p in q.journal_since(0)] == [b"committed"]


def test_close_without_commit_loses_appends_puts_and_meta_like_a_crash(path: Path) -> None:
    with UplinkQueue(path) as q:
        q.append_journal("d", b"kept")
        q.commit()
    q = UplinkQueue(path, flush_rows=2)  # some appends reach the open transaction, some not
    for i in range(5):
        q.append_journal("d", b"lost %d" % i)
    q.put(Priority.ALERT, "t", body())
    q.set_meta("watermark", b"5")
    q.close(commit=False)
    with UplinkQueue(path) as q:
        assert [p for _, _, p in q.journal_since(0)] == [b"kept"]
        assert (q.seqs(), q.get_meta("watermark"), q.stats().journal_items) == ([], None, 1)
        assert q.append_journal("d", b"next") == 2


def test_trim_journal_deletes_up_to_the_id_and_ids_keep_growing(path: Path) -> None:
    with UplinkQueue(path) as q:
        for _ in range(5):
            q.append_journal("d", b"12345")
        assert q.trim_journal(3) == 3
        q.commit()
        assert [jid for jid, _, _ in q.journal_since(0)] == [4, 5]
        assert (q.stats().journal_items, q.stats().journal_bytes) == (2, 10)
        q.trim_journal(5)
    with UplinkQueue(path) as q:
        assert q.append_journal("d", b"x") == 6
        assert (q.stats().journal_items, q.stats().journal_bytes) == (1, 1)


def test_one_commit_covers_journal_outbox_and_meta(path: Path) -> None:
    with UplinkQueue(path) as q:
        q.append_journal("d", b"r")
        q.put(Priority.BATCH, "t", body())
        q.set_meta("watermark", b"1")
    reader = sqlite3.connect(path)
    try:
        counts = [
            reader.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("journal", "outbox", "meta")
        ]
    finally:
        reader.close()
    assert counts == [1, 1, 1]


def test_a_failed_commit_discards_the_transaction_and_keeps_what_was_committed(
    q: UplinkQueue,
) -> None:
    q.append_journal("d", b"kept")
    put_all(q, [B])
    assert q._conn is not None
    pages = q._conn.execute("PRAGMA page_count").fetchone()[0]
    q._conn.execute(f"PRAGMA max_page_count = {pages}")  # the file cannot grow: disk full
    for _ in range(200):
        q.append_journal("d", b"x" * 1000)
    with pytest.raises(UplinkError, match="commit failed"):
        q.commit()
    q._conn.execute("PRAGMA max_page_count = 1073741823")
    assert [p for _, _, p in q.journal_since(0)] == [b"kept"]
    assert (q.stats().journal_items, q.stats().items) == (1, 1)
    assert q.append_journal("d", b"next") == 2


# -- meta, stats, file -------------------------------------------------------------------


def test_meta_round_trips_and_overwrites(path: Path) -> None:
    with UplinkQueue(path) as q:
        assert q.get_meta("w") is None
        q.set_meta("w", b"1")
        q.set_meta("w", b"2")
    with UplinkQueue(path) as q:
        assert q.get_meta("w") == b"2"


def test_stats_report_depth_bytes_age_and_in_flight(q: UplinkQueue, clock: ManualClock) -> None:
    put_all(q, [A, B, B])
    q.mark_sent([1])
    clock.advance(2_500)
    stats = q.stats()
    assert (stats.items, stats.bytes, stats.inflight, stats.oldest_age_ms) == (
        3,
        3 * SIZE,
        1,
        2_500,
    )
    assert stats.items_by_priority == {A: 1, G: 0, M: 0, B: 2}
    assert stats.bytes_by_priority[B] == 2 * SIZE


def test_the_file_is_wal_and_passes_integrity_check(q: UplinkQueue, path: Path) -> None:
    put_all(q, [B])
    assert q.check()
    reader = sqlite3.connect(path)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        reader.close()


def test_a_second_queue_on_the_same_file_is_refused(q: UplinkQueue, path: Path) -> None:
    with pytest.raises(UplinkError, match="open by another"):
        UplinkQueue(path)


def test_in_state_dir_uses_one_file_in_the_folder(tmp_path: Path) -> None:
    with UplinkQueue.in_state_dir(tmp_path / "edge", budget_bytes=1000) as q:
        assert q.path == tmp_path / "edge" / "uplink.db" and q.budget_bytes == 1000


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"budget_bytes": 0}, id="budget"),
        pytest.param({"alert_reserve": 1.5}, id="reserve"),
        pytest.param({"synchronous": "OFF"}, id="synchronous"),
    ],
)
def test_bad_settings_are_refused_with_the_name(path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        UplinkQueue(path, **kwargs)


# -- property: stats always equal the table; the policy matches a plain model ------------


class QueueMachine(RuleBasedStateMachine):
    """Random puts, sends, acks, requeues and reopens against a tiny budget.

    The model is the overflow policy written plainly over a dict; a second connection reads
    the committed table to check that ``stats()`` equals what the file holds.
    """

    BUDGET, RESERVE = 400, 0.25

    @initialize()
    def open(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="uplink-"))
        self.path = self.dir / "uplink.db"
        self.q = self._open()
        self.reader = sqlite3.connect(self.path)
        self.model: dict[int, tuple[Priority, int]] = {}  # seq -> (priority, size)
        self.inflight: set[int] = set()
        self.next_seq, self.dropped, self.dropped_bytes = 1, 0, 0

    def _open(self) -> UplinkQueue:
        return UplinkQueue(self.path, budget_bytes=self.BUDGET, alert_reserve=self.RESERVE)

    def teardown(self) -> None:
        if hasattr(self, "q"):
            self.q.close()
            self.reader.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _model_put(self, priority: Priority, size: int) -> None:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        need = sum(s for _, s in self.model.values()) + size - self.BUDGET
        victims: list[int] = []
        alert_bytes = sum(s for p, s in self.model.values() if p == A)
        for tier in (B, M, G, A):
            if need <= 0 or size > self.BUDGET or tier < priority:
                break
            for victim in sorted(s for s, (p, _) in self.model.items() if p == tier):
                if need - sum(self.model[v][1] for v in victims) <= 0:
                    break
                if tier == A and alert_bytes <= self.BUDGET * self.RESERVE:
                    break
                alert_bytes -= self.model[victim][1] if tier == A else 0
                victims.append(victim)
        freed = sum(self.model[v][1] for v in victims)
        if size > self.BUDGET or freed < need:
            self.dropped, self.dropped_bytes = self.dropped + 1, self.dropped_bytes + size
            return
        for v in victims:
            self.dropped, self.dropped_bytes = (
                self.dropped + 1,
                self.dropped_bytes + self.model[v][1],
            )
            self.model.pop(v)
            self.inflight.discard(v)
        self.model[seq] = (priority, size)

    @rule(priority=st.sampled_from(Priority), size=st.integers(1, 120))
    def put(self, priority: Priority, size: int) -> None:
        assert self.q.put(priority, "t", body(size)) == self.next_seq
        self._model_put(priority, size)

    @rule(limit=st.integers(1, 8))
    def send(self, limit: int) -> None:
        self.q.commit()
        pending = sorted((p, s) for s, (p, _) in self.model.items() if s not in self.inflight)
        items = self.q.next_batch(limit)
        assert [(i.priority, i.seq) for i in items] == pending[:limit]
        self.q.mark_sent(i.seq for i in items)
        self.inflight.update(i.seq for i in items)

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.sets(st.integers(1, self.next_seq + 2), max_size=6))
        assert self.q.ack(seqs) == len(seqs & self.model.keys())
        for s in seqs:
            self.model.pop(s, None)
            self.inflight.discard(s)

    @rule()
    def requeue(self) -> None:
        assert self.q.requeue_inflight() == len(self.inflight)
        self.inflight.clear()

    @rule()
    def reopen(self) -> None:
        self.q.close()
        self.q = self._open()
        self.inflight.clear()

    @invariant()
    def stats_equal_the_table_and_the_model(self) -> None:
        if not hasattr(self, "q"):
            return
        self.q.commit()
        stats = self.q.stats()
        rows = self.reader.execute(
            "SELECT priority, count(*), sum(length(payload)), sum(sent_ms IS NOT NULL) "
            "FROM outbox GROUP BY priority"
        ).fetchall()
        table = {Priority(p): (n, size, inflight) for p, n, size, inflight in rows}
        assert stats.items == sum(n for n, _, _ in table.values())
        assert stats.bytes == sum(size for _, size, _ in table.values()) <= self.BUDGET
        assert stats.inflight == sum(i for _, _, i in table.values()) == len(self.inflight)
        for p in Priority:
            assert stats.items_by_priority[p] == table.get(p, (0, 0, 0))[0]
            assert stats.bytes_by_priority[p] == table.get(p, (0, 0, 0))[1]
        assert sorted(self.model) == self.q.seqs()
        assert (stats.dropped[OVERFLOW], stats.dropped_bytes[OVERFLOW]) == (
            self.dropped,
            self.dropped_bytes,
        )


QueueMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
test_queue_state_machine = QueueMachine.TestCase
