"""UplinkQueue survives kill -9: what was committed is there, nothing uncommitted is half there.

A child process appends readings and puts one message per group, commits, and then reports
the group on its stdout pipe. The parent SIGKILLs it by PID at a random point (after a random
number of groups, plus a random sub-millisecond delay so the kill often lands inside a
commit), reopens the file and checks it. Several kills reuse one file, so seq and journal ids
must continue across crashes. The random seed is in every assertion message.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.edge.uplink import Priority, UplinkQueue

REPO = Path(__file__).resolve().parents[2]
GROUP = 50  # readings per commit
KILLS = 3
TIMEOUT = 10.0  # seconds any wait on the child may take

CHILD = r"""
import os, sys, time
from pipeline.edge.uplink import Priority, UplinkQueue

path, sync, cycle, group_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pad = b"x" * 100
q = UplinkQueue(path, synchronous=sync)
deadline = time.monotonic() + 30  # bounded even if the parent never kills
for group in range(1, 100_000):
    if time.monotonic() > deadline:
        break
    ids = [q.append_journal(f"dev-{k}", b"%d:%d:%d:" % (cycle, group, k) + pad)
           for k in range(group_size)]
    priority = Priority.ALERT if group % 4 == 0 else Priority.BATCH
    q.put(priority, "t", lambda seq: b"%d|%d|%d|%d|%d|" % (seq, cycle, group, ids[0], ids[-1])
          + b"y" * 4000)
    q.set_meta("last_group", b"%d:%d" % (cycle, group))
    q.commit()
    os.write(1, b"%d\n" % group)
"""

UNCOMMITTED_CHILD = r"""
import os, sys, time
from pipeline.edge.uplink import Priority, UplinkQueue

q = UplinkQueue(sys.argv[1], flush_rows=2)
for i in range(10):
    q.append_journal("dev", b"committed %d" % i)
q.commit()
for i in range(5):
    q.append_journal("dev", b"uncommitted %d" % i)
q.put(Priority.ALERT, "t", lambda seq: b"uncommitted")
q.set_meta("watermark", b"15")
os.write(1, b"ready\n")
time.sleep(30)
"""


@contextmanager
def spawn(code: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A child Python running ``code``; killed (by its PID) and reaped if the test fails."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, cwd=REPO, env=env
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


def read_lines(proc: subprocess.Popen[bytes], until: int | None) -> list[bytes]:
    """Lines from the child's stdout until ``until`` numbers were seen, or EOF; bounded."""
    assert proc.stdout is not None
    fd, buf, deadline = proc.stdout.fileno(), b"", time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if until is not None and buf.count(b"\n") >= until:
            break
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return buf.splitlines()
            buf += chunk
    else:
        pytest.fail(f"child gave no progress within {TIMEOUT} s (rc={proc.poll()})")
    return buf.splitlines()


def kill_at_random(proc: subprocess.Popen[bytes], rng: random.Random) -> int:
    """SIGKILL the child after a random number of groups; return the last group it reported."""
    lines = read_lines(proc, until=rng.randint(1, 250))
    time.sleep(rng.uniform(0, 0.002))
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    lines += read_lines(proc, until=None)  # what it wrote before dying
    return int(lines[-1])


def committed_groups(q: UplinkQueue, seed: int) -> dict[int, int]:
    """Check journal and outbox agree group by group; return cycle -> groups committed."""
    journal = list(q.journal_since(0))
    assert [jid for jid, _, _ in journal] == list(range(1, len(journal) + 1)), seed
    groups: dict[tuple[int, int], list[int]] = {}
    for jid, device, payload in journal:
        cycle, group, k = (int(x) for x in payload.split(b":")[:3])
        assert device == f"dev-{k}", seed
        groups.setdefault((cycle, group), []).append(jid)
    assert all(len(ids) == GROUP for ids in groups.values()), f"a half group, seed {seed}"

    items = q.next_batch(1_000_000)
    assert len(items) == len(groups), f"journal and outbox disagree, seed {seed}"
    for item in items:
        seq, cycle, group, first, last = (int(x) for x in item.payload.split(b"|")[:5])
        assert item.seq == seq and groups[(cycle, group)] == list(range(first, last + 1)), seed
        assert item.priority == (Priority.ALERT if group % 4 == 0 else Priority.BATCH), seed
    seqs = sorted(item.seq for item in items)
    assert seqs == list(range(1, len(seqs) + 1)) and q.last_seq == len(seqs), seed

    per_cycle: dict[int, int] = {}
    for cycle, group in sorted(groups):
        assert group == per_cycle.get(cycle, 0) + 1, f"groups not contiguous, seed {seed}"
        per_cycle[cycle] = group
    return per_cycle


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_every_committed_entry_survives_repeated_kill_9(tmp_path: Path, synchronous: str) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "uplink.db"
    expected: dict[int, int] = {}
    for cycle in range(1, KILLS + 1):
        with spawn(CHILD, str(path), synchronous, str(cycle), str(GROUP)) as child:
            reported = kill_at_random(child, rng)
        with UplinkQueue(path, synchronous=synchronous) as q:
            assert q.check(), f"integrity_check failed, seed {seed}"
            per_cycle = committed_groups(q, seed)
            # killed between commit and report: one group more than reported is fine
            assert per_cycle[cycle] in (reported, reported + 1), f"seed {seed}"
            expected[cycle] = per_cycle[cycle]
            assert per_cycle == expected, f"an earlier cycle changed, seed {seed}"
            assert q.get_meta("last_group") == b"%d:%d" % (cycle, per_cycle[cycle])
            stats = q.stats()
            assert stats.journal_items == GROUP * sum(per_cycle.values()), seed


def test_uncommitted_writes_are_gone_after_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "uplink.db"
    with spawn(UNCOMMITTED_CHILD, str(path)) as child:
        assert read_lines(child, until=1) == [b"ready"]
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=TIMEOUT) == -signal.SIGKILL
    with UplinkQueue(path) as q:
        assert q.check()
        assert [p for _, _, p in q.journal_since(0)] == [b"committed %d" % i for i in range(10)]
        assert (q.stats().items, q.get_meta("watermark")) == (0, None)
        assert q.append_journal("dev", b"next") == 11
