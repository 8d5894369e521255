"""Our NAB scorer against hand-computed cases (issue 8).

One 100-row file, probationary period ``min(floor(0.15 * 100), 750) = 15`` rows, one window
on rows 50..59 (width 10). NAB's weights: a detection at row ``i`` of the window earns
``S(-(59 - i + 1) / 10) / S(-1)`` with ``S(p) = -tanh(2.5 p)``; a missed window costs 1 (2 in
low_fn); a lone false positive costs 0.11 (0.22 in low_fp). Normalised:
``100 * (raw - null) / (perfect - null)`` with null = -A_FN per window and perfect = 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.bench.nab import (
    PROFILES,
    ScoredFile,
    probationary_rows,
    raw_score_at,
    row_weights,
    score_corpus,
    score_results,
    sweep,
)

ROWS = 100
WINDOW = (50, 59)
S_MAX = math.tanh(2.5)  # S(-1) = 2 * sigmoid(5) - 1 = 0.98661


def one_file(
    detections: dict[int, float], windows: list[tuple[int, int]] | None = None
) -> list[ScoredFile]:
    scores = np.zeros(ROWS)
    for row, score in detections.items():
        scores[row] = score
    return [ScoredFile("cat/a.csv", scores, [WINDOW] if windows is None else windows)]


def test_a_perfect_detector_scores_100_in_every_profile() -> None:
    result = score_corpus(one_file({50: 1.0}))
    for profile in ("standard", "low_fp", "low_fn"):
        assert result[profile] == pytest.approx(100.0)
    assert result["files"] == 1 and result["windows"] == 1


def test_a_silent_detector_scores_0() -> None:
    result = score_corpus(one_file({}))
    assert (result["standard"], result["low_fp"], result["low_fn"]) == (0.0, 0.0, 0.0)
    assert result["raw"] == {"standard": -1.0, "low_fp": -1.0, "low_fn": -2.0}


def test_a_constant_detector_is_no_better_than_a_silent_one() -> None:
    """Alerting everywhere finds the window but pays 35 lone FPs and the ones after it."""
    result = score_corpus(one_file(dict.fromkeys(range(ROWS), 0.5)))
    assert result["standard"] == 0.0
    assert result["thresholds"]["standard"] == 1.1  # "never detect" wins


def test_one_false_positive_costs_what_the_profile_says() -> None:
    # Perfect detection plus one lone FP at row 20 (before any window: full cost).
    result = score_corpus(one_file({50: 1.0, 20: 1.0}))
    assert result["raw"]["standard"] == pytest.approx(1.0 - 0.11)
    assert result["standard"] == pytest.approx(100 * (0.89 + 1) / 2)  # 94.5
    assert result["raw"]["low_fp"] == pytest.approx(1.0 - 0.22)
    assert result["low_fp"] == pytest.approx(100 * (0.78 + 1) / 2)  # 89.0
    assert result["raw"]["low_fn"] == pytest.approx(1.0 - 0.11)
    assert result["low_fn"] == pytest.approx(100 * (0.89 + 2) / 3)  # 96.33


def test_a_false_positive_just_after_a_window_costs_less() -> None:
    # Row 60 is 1 row past the window's right edge: position 1 / (10 - 1).
    cost = 0.11 * math.tanh(2.5 / 9)  # 0.0298
    result = score_corpus(one_file({50: 1.0, 60: 1.0}))
    assert result["raw"]["standard"] == pytest.approx(1.0 - cost)
    assert cost < 0.11
    # From 3 widths past the window on, the cost is the full 0.11 again.
    far = score_corpus(one_file({50: 1.0, 59 + 27: 1.0}))
    assert far["raw"]["standard"] == pytest.approx(1.0 - 0.11)


def test_a_late_detection_earns_less_than_an_early_one() -> None:
    middle = math.tanh(2.5 * 0.5) / S_MAX  # row 55: position -(59 - 55 + 1) / 10 = -0.5
    last = math.tanh(2.5 * 0.1) / S_MAX  # row 59: position -0.1
    assert score_corpus(one_file({55: 1.0}))["raw"]["standard"] == pytest.approx(middle)  # 0.8598
    assert score_corpus(one_file({59: 1.0}))["raw"]["standard"] == pytest.approx(last)  # 0.2482
    assert score_corpus(one_file({59: 1.0}))["standard"] == pytest.approx(100 * (last + 1) / 2)
    assert 1.0 > middle > last > 0.0


def test_only_the_first_detection_in_a_window_counts() -> None:
    early_then_late = score_corpus(one_file({52: 1.0, 53: 1.0, 58: 1.0}))
    assert early_then_late["raw"]["standard"] == pytest.approx(math.tanh(2.5 * 0.8) / S_MAX)


def test_detections_in_the_probationary_period_are_ignored() -> None:
    assert probationary_rows(ROWS) == 15
    assert score_corpus(one_file({0: 1.0, 14: 1.0}))["standard"] == 0.0
    assert score_corpus(one_file({14: 1.0, 50: 1.0}))["standard"] == pytest.approx(100.0)
    # Row 15 is the first scored row: a lone FP there costs.
    assert score_corpus(one_file({15: 1.0, 50: 1.0}))["raw"]["standard"] == pytest.approx(0.89)


def test_a_window_inside_the_probationary_period_is_not_scored_as_missed() -> None:
    files = one_file({}, windows=[(2, 5), WINDOW])
    _, totals, null, windows = sweep(files, PROFILES["standard"])
    assert (null, windows) == (-1.0, 1)


def test_one_threshold_for_the_whole_corpus() -> None:
    """File A: window found at score 0.8. File B: window found at 0.6, an FP at 0.7.

    Thresholds: 1.1 -> -2; 0.8 -> 0; 0.7 -> -0.11; 0.6 -> 1 + 1 - 0.11 = 1.89 (best).
    """
    a = np.zeros(ROWS)
    a[50] = 0.8
    b = np.zeros(ROWS)
    b[50], b[20] = 0.6, 0.7
    files = [ScoredFile("a.csv", a, [WINDOW]), ScoredFile("b.csv", b, [WINDOW])]
    result = score_corpus(files)
    assert result["thresholds"]["standard"] == 0.6
    assert result["raw"]["standard"] == pytest.approx(1.89)
    assert result["standard"] == pytest.approx(100 * (1.89 + 2) / 4)


@pytest.mark.parametrize("seed", range(5))
def test_the_sweep_matches_scoring_each_threshold_directly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    files = []
    for i in range(4):
        rows = int(rng.integers(60, 400))
        cuts = np.sort(rng.choice(np.arange(1, rows - 1), size=4, replace=False))
        windows = [(int(cuts[0]), int(cuts[1])), (int(cuts[2]), int(cuts[3]))]
        scores = np.round(rng.random(rows) ** 8, 3)  # ties, and mostly low scores
        files.append(ScoredFile(f"f{i}.csv", scores, windows))
    for profile in PROFILES.values():
        thresholds, totals, _, _ = sweep(files, profile)
        for threshold, total in zip(thresholds[::7], totals[::7], strict=True):
            assert total == pytest.approx(raw_score_at(files, profile, threshold))


def test_row_weights_refuse_overlapping_windows() -> None:
    with pytest.raises(ValueError):
        row_weights(100, [(10, 20), (20, 30)], PROFILES["standard"])


def write_nab_layout(root: Path, scores: list[float], with_label: bool = True) -> tuple[Path, Path]:
    """A NAB-style folder (data, labels) and a results folder for one 100-row file."""
    stamps = [f"2024-01-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(ROWS)]
    (root / "nab" / "data" / "cat").mkdir(parents=True)
    (root / "nab" / "labels").mkdir()
    (root / "nab" / "data" / "cat" / "a.csv").write_text(
        "timestamp,value\n" + "".join(f"{t},1.0\n" for t in stamps)
    )
    windows = {"cat/a.csv": [[stamps[50] + ".000000", stamps[59] + ".000000"]]}
    (root / "nab" / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (root / "results" / "cat").mkdir(parents=True)
    header = "timestamp,value,anomaly_score" + (",label" if with_label else "")
    lines = [
        f"{t},1.0,{s}" + (",0" if with_label else "") for t, s in zip(stamps, scores, strict=True)
    ]
    (root / "results" / "cat" / "a.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    return root / "results", root / "nab"


@pytest.mark.parametrize("where", ["root", "data", "json"])
def test_score_results_reads_detect_output_and_finds_the_labels(tmp_path: Path, where: str) -> None:
    scores = [0.0] * ROWS
    scores[50] = 0.9
    results, nab = write_nab_layout(tmp_path, scores)
    labels = {"root": nab, "data": nab / "data", "json": nab / "labels" / "combined_windows.json"}[
        where
    ]
    result = score_results(results, labels)
    assert result["standard"] == pytest.approx(100.0)
    assert result["thresholds"]["standard"] == 0.9
    assert result["files"] == 1


def test_score_results_refuses_missing_results_and_bad_scores(tmp_path: Path) -> None:
    results, nab = write_nab_layout(tmp_path, [0.0] * ROWS)
    (results / "cat" / "a.csv").unlink()
    with pytest.raises(FileNotFoundError, match="cat/a.csv"):
        score_results(results, nab)
    (results / "cat" / "a.csv").write_text(
        "timestamp,value,anomaly_score\n2024-01-01 00:00:00,1,1.5\n"
    )
    with pytest.raises(ValueError, match="not in"):
        score_results(results, nab)
    (results / "cat" / "a.csv").write_text(
        "timestamp,value,anomaly_score\n2024-01-01 00:00:00,1,0.5\n"
    )
    with pytest.raises(ValueError, match="window timestamp"):
        score_results(results, nab)
