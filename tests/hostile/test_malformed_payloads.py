"""S7 and S6 end to end: crafted bad payloads through a real Mosquitto into a running edge node.

S7: 15 kinds of malformed reading, interleaved 1:1 with valid ones. Every bad one is counted
under its reason and published on the dead-letter topic with its topic and the SHA-256 of
the whole payload, except kind 13 (a duplicate), which is counted as ``duplicates`` and not
dead-lettered (docs/protocol.md: redeliveries are normal under QoS 1). Kind 10, "unknown
device", is a device of an unknown *kind*: the edge has no device registry, so any well-formed
id of a known kind is a device it accepts (S4's id rules: test_identity_injection.py).

S6: payloads over the broker's ``message_size_limit`` (64 KiB) never reach the node; those
under it but over the reading limit (1 KiB), and JSON nested 10,000 deep, are ``too_large``.
"""

from __future__ import annotations

import gc
import hashlib
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile_kit import BAD, KINDS, HostileSite, dump, hostile, now_ms, reading

from pipeline.edge.node import _rss_mb
from pipeline.protocol import Topics
from pipeline.services import LOOPBACK, Mosquitto


@pytest.fixture
def hostile_site(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[HostileSite]:
    with hostile(mosquitto_factory, tmp_path) as site:
        yield site

TOPICS = Topics()


def run_s7(s: HostileSite, per_kind: int) -> None:
    good_topic = TOPICS.reading(s.site, "fridge-1")
    bad_topic = TOPICS.reading(s.site, BAD)
    sent_bad: Counter[str] = Counter()
    hashes: Counter[str] = Counter()
    good = dup = 0
    t0 = now_ms()
    accepted: list[bytes] = []
    for i in range(per_kind):
        for make, reason in KINDS.values():
            payload = dump(reading("fridge-1", t0 + good, good))
            s.attacker.publish(good_topic, payload, qos=1)
            accepted.append(payload)
            good += 1
            bad = make(i, now_ms())
            s.attacker.publish(bad_topic, bad, qos=1)
            sent_bad[reason] += 1
            hashes[hashlib.sha256(bad).hexdigest()] += 1
        s.attacker.publish(good_topic, accepted[-3], qos=1)  # kind 13: a redelivered reading
        dup += 1
    total = good + sum(sent_bad.values()) + dup
    assert s.attacker.flush(30)
    assert s.wait_received(total), f"received {s.node.counters.received} of {total}"
    letters = s.letters(sum(sent_bad.values()))
    c = s.node.counters
    print(
        f"S7 {len(KINDS) + 1} kinds x {per_kind}: sent bad={sum(sent_bad.values()) + dup} good={good} | "
        f"node received={c.received} accepted={c.accepted} dead_lettered={c.dead_lettered} "
        f"duplicates={c.duplicates} unaccounted={c.unaccounted} | dead-letter topic={len(letters)} "
        f"node thread alive={s.thread.is_alive()} paho thread alive={s.node.client.network_thread_alive}"
    )
    assert s.thread.is_alive() and s.node.client.network_thread_alive
    assert dict(c.dead_letters) == dict(sent_bad)
    assert c.duplicates == dup
    assert c.accepted == good
    assert c.unaccounted == 0
    assert Counter(d.reason for d in letters) == sent_bad
    assert Counter(d.sha256 for d in letters) == hashes
    assert {d.topic for d in letters} == {bad_topic}


def test_15_kinds_of_malformed_payload_are_each_counted_and_dead_lettered_while_good_ones_flow(
    hostile_site: HostileSite,
) -> None:
    run_s7(hostile_site, per_kind=20)


@pytest.mark.slow
def test_1500_malformed_payloads_are_each_counted_and_dead_lettered_while_good_ones_flow(
    hostile_site: HostileSite,
) -> None:
    run_s7(hostile_site, per_kind=100)


MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
SIZES = {"65KiB": 65 * 1024, "1MiB": 2**20, "16MiB": 16 * 2**20}


def test_oversize_payloads_never_reach_the_node_and_those_under_the_broker_limit_are_too_large(
    hostile_site: HostileSite, tmp_path: Path
) -> None:
    s = hostile_site
    topic = TOPICS.reading(s.site, BAD)
    rss_before = _rss_mb()
    for label, size in SIZES.items():  # over the broker's limit, from another process, QoS 0 (S6)
        payload = tmp_path / f"{label}.json"
        with payload.open("wb") as f:  # in small chunks: no 16 MiB object in this process
            f.write(b"{")
            for start in range(0, size - 2, 65536):
                f.write(b" " * min(65536, size - 2 - start))
            f.write(b"}")
        for _ in range(3):
            done = subprocess.run(
                [MOSQUITTO_PUB, "-h", LOOPBACK, "-p", str(s.broker.port), "-V", "mqttv311", "-q", "0",
                 "-t", topic, "-f", str(payload)],
                capture_output=True, timeout=30, check=False,
            )
            assert done.returncode == 0, done.stderr
    under_limit = [
        dump(reading(BAD, now_ms(), 1, note="x" * 2000)),  # over the 1 KiB reading limit
        dump(reading(BAD, now_ms(), 2, note="x" * 60_000)),  # just under the broker's 64 KiB
        b"[" * 10_000 + b"]" * 10_000,  # nesting 10^4
    ]
    for payload in under_limit:
        s.attacker.publish(topic, payload, qos=1)
    good = [dump(reading("fridge-1", now_ms() + i, i)) for i in range(5)]
    for payload in good:  # the node goes on
        s.attacker.publish(TOPICS.reading(s.site, "fridge-1"), payload, qos=1)
    assert s.attacker.flush(30)
    assert s.wait_received(len(under_limit) + len(good), 30)
    letters = s.letters(len(under_limit))
    gc.collect()
    growth = _rss_mb() - rss_before
    c = s.node.counters
    print(
        f"S6: sent over-limit={3 * len(SIZES)} ({', '.join(SIZES)}) under-limit={len(under_limit)} good={len(good)} | "
        f"node received={c.received} too_large={c.dead_letters['too_large']} accepted={c.accepted} "
        f"dead-letter topic={len(letters)} node process rss growth={growth:.1f} MB"
    )
    assert c.received == len(under_limit) + len(good)  # 0 delivered above the broker limit
    assert c.dead_letters == {"too_large": len(under_limit)}
    assert c.accepted == len(good)
    assert [d.reason for d in letters] == ["too_large"] * len(under_limit)
    assert s.thread.is_alive() and s.node.client.network_thread_alive
    assert growth < 20
