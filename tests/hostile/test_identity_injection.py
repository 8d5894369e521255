"""S4: identity and topic injection is refused at the edge and never reaches InfluxDB as
extra measurements, tag keys, tag values or series.

Ids must match ``^[A-Za-z0-9_-]{1,64}$``. In a topic, a bad device id is ``bad_topic``; in a
payload it is ``bad_id``; a payload device or site that differs from the topic's is
``topic_mismatch``. An id with ``/`` adds topic levels, so it never matches the node's
``dev/+`` subscription (the node never sees it); ``+`` and ``#`` cannot be published at all
(the client refuses wildcards in a topic name); Mosquitto disconnects a client that
publishes to a topic with a control character such as a newline, so newlines are tested in
payloads only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile_kit import HostileSite, cloud_worker, dump, hostile, influx_values, now_ms, reading
from waiting import wait_for, wait_until

from pipeline.cloud.store import open_store
from pipeline.protocol import Aggregate, Topics
from pipeline.services import Influxd, Mosquitto


@pytest.fixture
def hostile_site(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[HostileSite]:
    with hostile(mosquitto_factory, tmp_path) as site:
        yield site

TOPICS = Topics()
# ids with the characters S4 names; printable ones can sit in a topic level
IN_TOPIC = ["a b", "a,b=c", "a=b", 'a"b', "a'b", "x" * 65, "a,site=evil b=1", "dev1\\"]
PAYLOAD_ONLY = ["a/b", "a+b", "a#b", "dev1\nfake temp=666", "", "a,site=evil b=1"]


def test_bad_ids_in_topics_and_payloads_are_refused_with_their_reasons(hostile_site: HostileSite) -> None:
    s = hostile_site
    expected: Counter[str] = Counter()
    for evil in IN_TOPIC:
        s.attacker.publish(TOPICS.reading(s.site, evil), dump(reading(evil, now_ms(), 1)), qos=1)
        expected["bad_topic"] += 1
    for evil in IN_TOPIC + PAYLOAD_ONLY:
        s.attacker.publish(TOPICS.reading(s.site, "fridge-7"), dump(reading(evil, now_ms(), 1)), qos=1)
        expected["bad_id"] += 1
    s.attacker.publish(TOPICS.reading(s.site, "fridge-7"), dump(reading("fridge-8", now_ms(), 1)), qos=1)
    s.attacker.publish(TOPICS.reading(s.site, "fridge-7"), dump(reading("fridge-7", now_ms(), 1, site="other")), qos=1)
    expected["topic_mismatch"] += 2
    # extra levels: outside the node's subscription, never delivered to it
    s.attacker.publish(TOPICS.reading(s.site, "a/b"), dump(reading("a", now_ms(), 1)), qos=1)
    s.attacker.publish(TOPICS.reading(s.site, "fridge-7") + "/x", dump(reading("fridge-7", now_ms(), 1)), qos=1)
    for wildcard in ("a+b", "a#b"):
        with pytest.raises(ValueError):
            s.attacker.publish(TOPICS.reading(s.site, wildcard), b"{}", qos=1)
    total = sum(expected.values())
    # The sentinel: one valid reading, sent after everything above on the same connection.
    # The broker delivers in order and the node handles in order, so once it is accepted,
    # any extra-level message that had reached the node would have been counted before it.
    s.attacker.publish(TOPICS.reading(s.site, "fridge-7"), dump(reading("fridge-7", now_ms(), 1)), qos=1)
    assert s.attacker.flush(10)
    wait_for(lambda: s.node.counters.accepted >= 1, "the sentinel reading accepted")
    letters = s.letters(total)
    c = s.node.counters
    print(f"S4 edge: sent={total + 2} + 1 sentinel refused={dict(c.dead_letters)} accepted={c.accepted} "
          f"received={c.received} dead-letter topic={len(letters)}")
    assert c.received == total + 1, "a message outside the node's subscription reached it"
    assert dict(c.dead_letters) == dict(expected)
    assert c.accepted == 1  # the sentinel, nothing else


def test_line_protocol_injection_through_device_ids_never_reaches_influxdb(
    hostile_site: HostileSite, influxdb: Influxd, influx_db: str, tmp_path: Path
) -> None:
    s = hostile_site
    url = f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"
    with cloud_worker(s.site, s.broker, url, tmp_path):
        t0 = now_ms()
        for i in range(20):  # a clean baseline
            s.attacker.publish(TOPICS.reading(s.site, "fridge-1"), dump(reading("fridge-1", t0 + i, i)), qos=1)
        for evil in IN_TOPIC:
            s.attacker.publish(TOPICS.reading(s.site, evil), dump(reading(evil, now_ms(), 1)), qos=1)
        for evil in IN_TOPIC + PAYLOAD_ONLY:
            s.attacker.publish(TOPICS.reading(s.site, "fridge-1"), dump(reading(evil, now_ms() + 1000, 1)), qos=1)
        assert s.attacker.flush(10)
        n_bad = len(IN_TOPIC) * 2 + len(PAYLOAD_ONLY)
        assert s.wait_received(20 + n_bad)
        s.node.request_drain()

        def landed() -> bool:
            """The clean readings and the refused ones' dead letters are in InfluxDB (two dead
            letters of one device and millisecond are one point there: at least one, then up
            to ``n_bad`` within the bound)."""
            stored = influx_values(influxdb, influx_db, 'SELECT count(*) FROM /.*/ WHERE "device" = \'fridge-1\'')
            letters = influx_values(influxdb, influx_db, "SELECT count(*) FROM /dead/")
            return bool(stored and letters and max(letters[0][1:] or [0]) >= n_bad)

        if not wait_until(landed, 30.0, 0.25):  # CI once saw fewer than n_bad after 60 s: see the note
            assert influx_values(influxdb, influx_db, "SELECT count(*) FROM /dead/"), "no dead letter stored"
        letters = influx_values(influxdb, influx_db, "SELECT count(*) FROM /dead/")
        measurements = {r[0] for r in influx_values(influxdb, influx_db, "SHOW MEASUREMENTS")}
        tag_keys = {r[0] for r in influx_values(influxdb, influx_db, "SHOW TAG KEYS")}
        devices = {r[1] for r in influx_values(influxdb, influx_db, 'SHOW TAG VALUES WITH KEY = "device"')}
        all_tags = {str(r[1]) for r in influx_values(influxdb, influx_db, "SHOW TAG VALUES WITH KEY =~ /.*/")}
    print(f"S4 influx: evil ids sent={n_bad} measurements={sorted(measurements)} tag keys={sorted(tag_keys)} "
          f"device tag values={sorted(devices)} dead letters stored={letters}")
    assert devices == {"fridge-1"}
    assert not any(marker in v for v in all_tags for marker in ("evil", "fake", " ", ",", "=", '"', "\n"))
    assert "fake" not in measurements and "evil" not in tag_keys and "b" not in tag_keys


def test_the_influx_store_refuses_an_aggregate_whose_device_id_would_inject_line_protocol(
    influxdb: Influxd, influx_db: str
) -> None:
    store = open_store(f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}")
    try:
        for evil in ["a,site=evil b=1", "dev1\nfake temp=666", "a b", "a=b"]:
            agg = Aggregate(1, "farm", evil, "fridge", "temp", 0, 1000, 1, 1.0, 1.0, 1.0, 0.0, 1.0, 0)
            with pytest.raises(ValueError):
                store.write_aggregates([agg])
        measurements = influx_values(influxdb, influx_db, "SHOW MEASUREMENTS")
    finally:
        store.close()
    print(f"S4 store: 4 injected device ids refused, measurements afterwards={measurements}")
    assert measurements == []
