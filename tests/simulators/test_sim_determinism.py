"""For a given seed and start the whole stream, labels included, is the same byte for byte."""

from __future__ import annotations

import time
from collections.abc import Callable

from simstream import Stream

BUSY = {"rate": 1 / 30, "duration": 6 * 3600, "anomaly_rate": 1.0, "bad_rate": 0.01}


def lines_of(stream: Stream, site: str) -> list[str]:
    return [line for line in stream.out.splitlines() if line.split("/", 3)[2] == site]


def test_the_same_seed_gives_byte_identical_output(sim: Callable[..., Stream]) -> None:
    first, second = sim(seed=7, **BUSY), sim(seed=7, **BUSY)
    assert first.out == second.out
    assert first.labels_text == second.labels_text
    assert first.report.labels > 0 and first.report.bad_published > 0


def test_another_seed_gives_another_stream(sim: Callable[..., Stream]) -> None:
    assert sim(seed=7, **BUSY).out != sim(seed=8, **BUSY).out


def test_adding_a_site_leaves_the_other_sites_unchanged(sim: Callable[..., Stream]) -> None:
    two = sim(sites=("farm", "retail"), **BUSY)
    three = sim(sites=("farm", "city-2", "retail"), **BUSY)
    for site in ("farm", "retail"):
        assert lines_of(two, site) == lines_of(three, site)


def test_adding_devices_leaves_existing_devices_unchanged(sim: Callable[..., Stream]) -> None:
    small = sim(devices_per_site=5, rate=1 / 30, duration=6 * 3600, anomaly_rate=0.0)
    large = sim(devices_per_site=12, rate=1 / 30, duration=6 * 3600, anomaly_rate=0.0)
    for key, rows in small.readings.items():
        assert large.readings[key] == rows


def test_a_paced_run_publishes_the_same_stream_in_wall_time(sim: Callable[..., Stream]) -> None:
    settings = {"devices_per_site": 2, "rate": 20.0, "duration": 0.5}
    began = time.monotonic()
    paced = sim(realtime=True, **settings)
    elapsed = time.monotonic() - began
    assert paced.out == sim(realtime=False, **settings).out
    assert 0.45 <= elapsed < 5.0
    assert paced.report.readings_published == 3 * 2 * 10


def test_speed_compresses_simulated_time_into_wall_time(sim: Callable[..., Stream]) -> None:
    began = time.monotonic()
    stream = sim(devices_per_site=1, rate=1.0, duration=0.3, speed=100.0, realtime=True)
    assert 0.28 <= time.monotonic() - began < 5.0  # 30 simulated seconds in 0.3 wall seconds
    assert stream.report.sim_seconds == 30.0
