"""Replay of a recorded CSV as one device: NAB's ``timestamp,value`` series, or any kind's metrics."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.protocol.catalog import KINDS
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


# -- any CSV of a configured kind (issue 17) ----------------------------------------------------

FRIDGE_ROWS = """time;temp;door;power;Anomaly
1700000000;4,51;0;120;0
1700000001;4,5;0;121;1
1700000002;9,5;1;900;yes
1700000003;4,6;0;120;no
1700000004;4,6;0;120;1
"""
FRIDGE_T0_MS = 1_700_000_000_000


@pytest.fixture
def fridge_csv(tmp_path: Path) -> Path:
    path = tmp_path / "fridge.csv"
    path.write_text(FRIDGE_ROWS)
    return path


def test_a_kinds_csv_is_published_as_readings_of_that_kind(fridge_csv: Path) -> None:
    recorder = Recorder()
    report = replay(
        fridge_csv, "shop", "fridge-7", speed=0, publisher=recorder, kind=KINDS["fridge"]
    )
    readings = published(recorder)
    assert report.readings_published == len(readings) == 5
    assert {r["kind"] for r in readings} == {"fridge"}
    assert readings[0]["metrics"] == {"temp": 4.5, "door": 0.0, "power": 120.0}  # on the 0.1 step
    assert [r["ts"] for r in readings] == [FRIDGE_T0_MS + i * 1000 for i in range(5)]
    assert all("Anomaly" not in r["metrics"] for r in readings)


def test_labelled_rows_are_published_as_label_windows_once_passed(fridge_csv: Path) -> None:
    recorder, labels_out = Recorder(), io.StringIO()
    report = replay(
        fridge_csv,
        "shop",
        "fridge-7",
        speed=0,
        publisher=recorder,
        labels_out=labels_out,
        kind=KINDS["fridge"],
    )
    labels = [json.loads(line) for line in labels_out.getvalue().splitlines()]
    assert [(x["start"], x["end"]) for x in labels] == [
        (FRIDGE_T0_MS + 1000, FRIDGE_T0_MS + 2000),  # rows 2-3, published after row 4
        (FRIDGE_T0_MS + 4000, FRIDGE_T0_MS + 4000),  # the last row, published at the end
    ]
    assert {(x["anomaly"], tuple(x["metrics"]), x["device"]) for x in labels} == {
        ("csv", ("temp", "door", "power"), "fridge-7")
    }
    assert report.labels == 2 and report.labels_by_anomaly == {"csv": 2}
    order = [t.rsplit("/", 1)[-1] for t, _, _ in recorder.sent]
    assert order == ["fridge-7"] * 4 + ["labels", "fridge-7", "labels"]
    assert [q for t, _, q in recorder.sent if t.endswith("/labels")] == [1, 1]


def test_a_recorded_value_outside_the_kinds_range_is_published_as_is(tmp_path: Path) -> None:
    path = tmp_path / "hot.csv"
    path.write_text("ts,temp,door,power\n1700000000,75.04,0,120\n")
    recorder = Recorder()
    replay(path, "shop", "fridge-7", speed=0, publisher=recorder, kind=KINDS["fridge"])
    assert published(recorder)[0]["metrics"]["temp"] == 75.0  # above 50: the edge dead-letters it


def test_without_start_a_replay_ends_on_the_wall_clock(fridge_csv: Path) -> None:
    from pipeline.config import load_settings
    from pipeline.simulate import run_sim

    out = io.StringIO()
    before = time.time_ns() // 1_000_000
    report = run_sim(
        load_settings(overrides={"sim.speed": 100.0}),
        publish=False,
        duration=1,
        out=out,
        replay=str(fridge_csv),
        replay_kind="fridge",
    )
    after = time.time_ns() // 1_000_000
    stamps = [
        json.loads(line.split("\t")[1])["ts"]
        for line in out.getvalue().splitlines()
        if "/dev/" in line
    ]
    assert report["readings_published"] == 5
    # 4 s of rows at 100x take 0.04 s: the first row is 3.96 s before the start of the run
    assert before - 3960 <= stamps[0] <= after - 3960
    assert stamps[-1] - stamps[0] == 4000
