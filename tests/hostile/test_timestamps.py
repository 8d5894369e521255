"""S11: readings stamped far in the future or the past are dead-lettered (``future_ts``,
``stale_ts``) and never written: InfluxDB would accept the year 2100 (RELIABILITY.md I9) and
answer old points with a 400 partial write (I10)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile_kit import HostileSite, cloud_worker, dump, hostile, influx_values, now_ms, reading

from pipeline.protocol import Topics
from pipeline.services import Influxd, Mosquitto


@pytest.fixture
def hostile_site(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[HostileSite]:
    with hostile(mosquitto_factory, tmp_path) as site:
        yield site

TOPICS = Topics()
DAY = 86_400_000
FUTURE = [3_600_000, DAY, 75 * 365 * DAY]  # an hour, a day, about the year 2100
PAST = [8 * DAY, 365 * DAY]  # beyond the 7-day retention
EPOCH = [1, 0]  # 1970, as a device with a dead RTC sends


def run_s11(s: HostileSite, influxdb: Influxd, db: str, workdir: Path, per_kind: int) -> None:
    with cloud_worker(s.site, s.broker, f"influxdb://127.0.0.1:{influxdb.port}/{db}", workdir):
        topic = TOPICS.reading(s.site, "fridge-1")
        t0 = now_ms()
        good = 0
        for i in range(per_kind):
            s.attacker.publish(topic, dump(reading("fridge-1", t0 + i, i)), qos=1)
            good += 1
            s.attacker.publish(topic, dump(reading("fridge-1", now_ms() + FUTURE[i % len(FUTURE)], i)), qos=1)
            s.attacker.publish(topic, dump(reading("fridge-1", now_ms() - PAST[i % len(PAST)], i)), qos=1)
            s.attacker.publish(topic, dump(reading("fridge-1", EPOCH[i % 2], i)), qos=1)
        assert s.attacker.flush(10)
        assert s.wait_received(4 * per_kind, 30)
        s.node.request_drain()
        deadline = time.monotonic() + 30
        stored: list[list[object]] = []
        while time.monotonic() < deadline:
            stored = influx_values(influxdb, db, "SELECT count(*) FROM readings, aggregates")
            if stored and sum(int(r[1]) for r in stored if r[1] is not None) and s.node.queue.stats().items == 0:
                break
            time.sleep(0.25)
        late = influx_values(influxdb, db, "SELECT count(*) FROM readings, aggregates WHERE time > now() + 300s")
        early = influx_values(influxdb, db, "SELECT count(*) FROM readings, aggregates WHERE time < now() - 7d")
    c = s.node.counters
    print(
        f"S11 x{per_kind}: good={good} future_ts={c.dead_letters['future_ts']} stale_ts={c.dead_letters['stale_ts']} "
        f"accepted={c.accepted} points after now+300s={late} before now-7d={early}"
    )
    assert c.dead_letters == {"future_ts": per_kind, "stale_ts": 2 * per_kind}
    assert c.accepted == good
    assert stored, "the good readings were stored"
    assert late == [] and early == []


def test_readings_far_in_the_future_or_past_are_refused_and_never_stored(
    hostile_site: HostileSite, influxdb: Influxd, influx_db: str, tmp_path: Path
) -> None:
    run_s11(hostile_site, influxdb, influx_db, tmp_path, per_kind=20)


@pytest.mark.slow
def test_100_readings_of_each_bad_time_kind_are_refused_and_never_stored(
    hostile_site: HostileSite, influxdb: Influxd, influx_db: str, tmp_path: Path
) -> None:
    run_s11(hostile_site, influxdb, influx_db, tmp_path, per_kind=100)
