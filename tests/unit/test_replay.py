"""Offline replay: one streaming pass per CSV, scores in [0, 1], the NAB folder layout kept."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.detect.zscore import ZScoreDetector
from pipeline.replay import detect_csv, detect_nab_dir


def write_series(path: Path, values: list[float]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("timestamp,value\n")
        for i, v in enumerate(values):
            f.write(f"2024-01-01 00:{i // 60:02d}:{i % 60:02d},{v}\n")
    return path


def scores(path: Path) -> list[float]:
    with open(path) as f:
        return [float(row["anomaly_score"]) for row in csv.DictReader(f)]


def test_no_score_during_warmup() -> None:
    detector = ZScoreDetector(warmup=10)
    for x in range(9):
        assert detector.score_value(100.0 * x) == 0.0
        detector.learn_value(float(x))


def test_a_spike_scores_higher_than_noise(tmp_path: Path) -> None:
    values = [10.0 + (i % 5) * 0.1 for i in range(200)]
    values[150] = 30.0
    out = tmp_path / "out.csv"
    detect_csv(write_series(tmp_path / "s.csv", values), out)
    result = scores(out)
    assert result[150] > 0.999
    assert max(result[100:150]) < result[150]
    assert all(0.0 <= s <= 1.0 for s in result)


def test_the_output_keeps_timestamp_and_value(tmp_path: Path) -> None:
    source = write_series(tmp_path / "s.csv", [1.0, 2.0, 3.0])
    out = tmp_path / "o.csv"
    assert detect_csv(source, out) == 3
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert rows[1][:2] == ["2024-01-01 00:00:00", "1.0"]


def test_a_nab_folder_is_mirrored_under_out(tmp_path: Path) -> None:
    write_series(tmp_path / "data" / "realA" / "one.csv", [1.0] * 5)
    write_series(tmp_path / "data" / "realB" / "two.csv", [2.0] * 7)
    files, rows = detect_nab_dir(tmp_path / "data", tmp_path / "out")
    assert (files, rows) == (2, 12)
    assert (tmp_path / "out" / "realB" / "two.csv").is_file()


def test_a_malformed_csv_exits_1_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:00:01,hot\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "detect", "--csv", str(bad), "--out", str(tmp_path / "o.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "bad.csv:3" in result.stderr


def test_detect_needs_exactly_one_source(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "detect", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2


@pytest.mark.parametrize("kwargs", [{"fading_factor": 0.0}, {"fading_factor": 1.0}, {"warmup": 1}])
def test_bad_detector_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ZScoreDetector(**kwargs)  # type: ignore[arg-type]
