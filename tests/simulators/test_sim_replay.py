"""Replay of a recorded ``timestamp,value`` series (NAB format) as one device."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.protocol.json_codec import decode_reading
from simulators import nab_windows, replay

# The first rows of NAB realTraffic/speed_7578.csv (MIT, Numenta), with a repeated row added.
NAB_ROWS = """timestamp,value
2015-09-08 11:39:00,73
2015-09-08 11:44:00,62
2015-09-08 11:59:00,66
2015-09-08 11:59:00,67
2015-09-08 12:19:00,69.25
2015-09-08 12:24:00,65
"""
FIRST_MS = 1_441_712_340_000  # 2015-09-08 11:39:00 UTC


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, payload, qos))


@pytest.fixture
def nab_csv(tmp_path: Path) -> Path:
    path = tmp_path / "realTraffic" / "speed_7578.csv"
    path.parent.mkdir()
    path.write_text(NAB_ROWS)
    return path


def published(recorder: Recorder) -> list[dict]:
    return [json.loads(p) for t, p, _ in recorder.sent if "/dev/" in t]


def test_every_row_is_published_as_a_replay_reading(nab_csv: Path) -> None:
    recorder = Recorder()
    report = replay(nab_csv, "replay", "speed_7578", speed=0, publisher=recorder)
    readings = published(recorder)
    assert report.readings_published == len(readings) == 6
    assert [r["metrics"]["value"] for r in readings] == [73, 62, 66, 67, 69.25, 65]
    assert [r["seq"] for r in readings] == list(range(6))
    assert {r["kind"] for r in readings} == {"replay"}
    assert {t for t, _, _ in recorder.sent} == {"edgepipe/v1/replay/dev/speed_7578"}


def test_timestamps_are_the_csv_times_in_utc(nab_csv: Path) -> None:
    recorder = Recorder()
    replay(nab_csv, "replay", "speed_7578", speed=0, publisher=recorder)
    stamps = [r["ts"] for r in published(recorder)]
    assert stamps[0] == FIRST_MS
    assert stamps[1] == FIRST_MS + 5 * 60_000


def test_a_repeated_timestamp_moves_one_millisecond_on(nab_csv: Path) -> None:
    recorder = Recorder()
    report = replay(nab_csv, "replay", "speed_7578", speed=0, publisher=recorder)
    stamps = [r["ts"] for r in published(recorder)]
    assert stamps[3] == stamps[2] + 1
    assert report.ts_adjusted == 1


def test_replayed_readings_pass_the_validator(nab_csv: Path) -> None:
    recorder = Recorder()
    replay(nab_csv, "replay", "speed_7578", speed=0, publisher=recorder)
    for _, payload, _ in recorder.sent:
        now = json.loads(payload)["ts"]
        decode_reading(payload, site="replay", device="speed_7578", now_ms=now)


def test_start_ms_shifts_the_series_keeping_its_spacing(nab_csv: Path) -> None:
    recorder = Recorder()
    replay(nab_csv, "replay", "speed_7578", speed=0, publisher=recorder, start_ms=1_000_000)
    stamps = [r["ts"] for r in published(recorder)]
    assert stamps[:2] == [1_000_000, 1_000_000 + 5 * 60_000]


def test_replay_is_paced_by_the_csv_clock_divided_by_speed(nab_csv: Path) -> None:
    began = time.monotonic()
    replay(nab_csv, "replay", "speed_7578", speed=45 * 60 / 0.3)  # 45 min of rows in 0.3 s
    assert 0.28 <= time.monotonic() - began < 5.0


def test_a_stop_event_ends_a_paced_replay(nab_csv: Path) -> None:
    stop = threading.Event()
    stop.set()
    report = replay(nab_csv, "replay", "speed_7578", speed=1.0, stop=stop)
    assert report.readings_published == 0 and report.stopped


def test_out_gets_one_line_per_row(nab_csv: Path) -> None:
    out = io.StringIO()
    replay(nab_csv, "replay", "speed_7578", speed=0, out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("edgepipe/v1/replay/dev/speed_7578\t{")


def test_nab_windows_become_labels(nab_csv: Path, tmp_path: Path) -> None:
    windows_json = tmp_path / "combined_windows.json"
    windows_json.write_text(
        json.dumps(
            {
                "realTraffic/speed_7578.csv": [
                    ["2015-09-08 11:44:00.000000", "2015-09-08 11:59:00.000000"]
                ]
            }
        )
    )
    windows = nab_windows(windows_json, nab_csv)
    assert windows == [(FIRST_MS + 5 * 60_000, FIRST_MS + 20 * 60_000)]
    recorder, labels_out = Recorder(), io.StringIO()
    report = replay(
        nab_csv,
        "replay",
        "speed_7578",
        speed=0,
        publisher=recorder,
        labels_out=labels_out,
        windows=windows,
    )
    (label,) = [json.loads(line) for line in labels_out.getvalue().splitlines()]
    assert (label["start"], label["end"], label["anomaly"]) == (*windows[0], "nab")
    assert report.labels == 1
    assert [q for t, _, q in recorder.sent if t.endswith("/labels")] == [1]


def test_a_row_that_is_not_timestamp_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("timestamp,value\n2015-09-08 11:39:00,seventy\n")
    with pytest.raises(ConfigError):
        replay(path, "replay", "broken", speed=0)
