"""Redeliveries are duplicates; readings that merely arrive out of order are not."""

from __future__ import annotations

import random

import msgspec

from pipeline.edge.validate import RECENT, Validator
from pipeline.protocol import DeadLetter, Reading

NOW = 1_800_000_000_000
TOPIC = "edgepipe/v1/farm/dev/d1"


def _send(v: Validator, ts: int) -> str:
    payload = msgspec.json.encode(Reading(1, "d1", "fridge", ts, ts % 10_000, {"temp": 4.0}))
    verdict = v.validate_one(TOPIC, payload, NOW)
    return verdict.reason if isinstance(verdict, DeadLetter) else "accepted"


def test_a_redelivered_reading_is_a_duplicate() -> None:
    v = Validator("farm")
    assert [_send(v, ts) for ts in (NOW - 3000, NOW - 2000, NOW - 2000)] == ["accepted", "accepted", "duplicate"]


def test_an_older_unseen_reading_is_accepted_as_out_of_order() -> None:
    v = Validator("farm")
    assert [_send(v, ts) for ts in (NOW - 3000, NOW - 1000, NOW - 2000)] == ["accepted"] * 3


def test_a_backlog_sent_after_a_newer_reading_is_accepted_whole() -> None:
    """paho 2.x may send a publish made during the reconnect before the resent backlog."""
    v = Validator("farm")
    before = [_send(v, NOW - 100_000 + i) for i in range(50)]
    jumped = _send(v, NOW - 1_000)
    backlog = [_send(v, NOW - 50_000 + i) for i in range(500)]
    assert before == ["accepted"] * 50 and jumped == "accepted"
    assert backlog == ["accepted"] * 500
    assert _send(v, NOW - 1_000) == "duplicate"  # the newest, redelivered


def test_a_reading_older_than_the_memory_is_counted_as_a_duplicate() -> None:
    v = Validator("farm")
    for i in range(RECENT + 5):
        _send(v, NOW - 100_000 + i * 10)
    assert _send(v, NOW - 100_000 + 5) == "duplicate"  # cannot be told from an old redelivery


def test_a_journal_replay_makes_redeliveries_duplicates() -> None:
    v = Validator("farm")
    v.remember(Reading(1, "d1", "fridge", NOW - 5000, 1, {"temp": 4.0}))
    assert _send(v, NOW - 5000) == "duplicate"


def test_a_reading_that_jumped_its_backlog_stays_a_duplicate_once_newer_ones_arrive() -> None:
    """A broker resuming the node's session sent one live reading ahead of the queued ones;
    after the backlog and newer readings, its redelivery (its PUBACK lost with a kill) must
    not be accepted a second time. Kept in arrival order, it had left the memory while older
    readings of the backlog stayed, so it passed as "out of order": counted twice."""
    v = Validator("farm")
    assert [_send(v, NOW - 10_000 + i * 20) for i in range(5)] == ["accepted"] * 5
    assert _send(v, NOW - 7_000) == "accepted"  # the live reading, ahead of its backlog
    assert [_send(v, NOW - 9_900 + i * 20) for i in range(RECENT + 4)] == ["accepted"] * (RECENT + 4)
    assert _send(v, NOW - 6_980) == "accepted"  # live again: the newest moves past it
    assert _send(v, NOW - 7_000) == "duplicate"


def test_no_timestamp_is_ever_accepted_twice_whatever_the_arrival_order() -> None:
    """Redeliveries and out-of-order arrivals mixed at random (seeded): what the memory
    accepts was never accepted before. The arrival-order memory failed this in 224 of 300."""
    from pipeline.edge.validate import RecentTimestamps

    rng = random.Random(1)
    for _ in range(300):
        memory, accepted, base = RecentTimestamps(size=4), set(), 0
        for _ in range(200):
            base += rng.randint(0, 5)
            ts = base - rng.randint(0, 12)
            if memory.accept(ts):
                assert ts not in accepted
                accepted.add(ts)
