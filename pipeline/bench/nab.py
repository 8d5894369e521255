"""Our own implementation of the Numenta Anomaly Benchmark (NAB v1.1) scoring rules.

Why our own: the bench must score detectors the way NAB does, without depending on NAB's
(Python 2 era) code. The rules, as published (Lavin & Ahmad 2015, "Evaluating real-time
anomaly detection algorithms - the Numenta Anomaly Benchmark"; NAB README and
``config/profiles.json``), are:

* Each data file has labelled anomaly windows (``labels/combined_windows.json``), inclusive
  timestamp pairs that are rows of the file.
* The first ``min(floor(0.15 * rows), 0.15 * 5000)`` rows of a file are the probationary
  period: detections there are ignored, and a window with no row after it is not scored.
* A detection is a row whose anomaly score is ``>= threshold``. Inside a window only the
  earliest detection counts, worth ``A_TP * S(p) / S(-1)`` where ``S(p) = 2 * sigmoid(-5p) - 1``
  and ``p = -(right - i + 1) / width`` runs from -1 at the window's left edge towards 0 at
  its right edge. A window with no detection costs ``A_FN``.
* Every detection outside a window costs ``A_FP * S(p)`` with ``p`` the distance past the
  previous window's right edge over ``(width - 1)`` (``S = -1`` before the first window and
  from ``p >= 3`` on): an alert just after a window costs little, a lone one costs ``A_FP``.
* One threshold per profile for the whole corpus, the one that maximises the corpus total.
* Normalised score ``100 * (raw - null) / (perfect - null)``: ``null`` is the detector that
  never detects (every scored window missed), ``perfect`` earns ``A_TP`` for every window.

Profiles (weights as in NAB's ``profiles.json``):

========  =====================  ====  =====  ====
key       NAB name               A_TP  A_FP   A_FN
========  =====================  ====  =====  ====
standard  standard               1.0   0.11   1.0
low_fp    reward_low_FP_rate     1.0   0.22   1.0
low_fn    reward_low_FN_rate     1.0   0.11   2.0
========  =====================  ====  =====  ====

The threshold search is exact: every distinct score of the corpus is a candidate, and the
corpus total for all of them comes from one sort and one cumulative sum (numpy), so a
240 000-row corpus scores in well under a second.

Examples
--------
>>> import numpy as np
>>> scores = np.zeros(100)
>>> scores[50] = 1.0                      # a detection at the left edge of the window
>>> f = ScoredFile("a.csv", scores, [(50, 59)])
>>> round(score_corpus([f])["standard"], 6)
100.0
>>> round(score_corpus([ScoredFile("a.csv", np.zeros(100), [(50, 59)])])["standard"], 6)
0.0
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.detect.base import ValueDetector

PROBATION_PERCENT = 0.15
NO_DETECTION_THRESHOLD = 1.1  # above any score in [0, 1]: the "never detect" candidate


@dataclass(frozen=True)
class Profile:
    """NAB cost matrix (magnitudes: true positives earn ``tp``; FPs and FNs cost the others)."""

    tp: float
    fp: float
    fn: float


PROFILES: dict[str, Profile] = {
    "standard": Profile(tp=1.0, fp=0.11, fn=1.0),
    "low_fp": Profile(tp=1.0, fp=0.22, fn=1.0),
    "low_fn": Profile(tp=1.0, fp=0.11, fn=2.0),
}
NAB_PROFILE_NAMES = {
    "standard": "standard",
    "low_fp": "reward_low_FP_rate",
    "low_fn": "reward_low_FN_rate",
}


@dataclass(frozen=True)
class ScoredFile:
    """One detector result file: its anomaly scores and its windows as inclusive row indices."""

    name: str
    scores: np.ndarray
    windows: Sequence[tuple[int, int]]


def probationary_rows(rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file whose detections NAB ignores: 15 %, at most 750.

    >>> probationary_rows(4032), probationary_rows(15902), probationary_rows(10)
    (604, 750, 1)
    """
    return int(min(math.floor(percent * rows), percent * 5000))


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's ``S(p) = 2 * sigmoid(-5p) - 1`` (which is ``-tanh(2.5p)``), -1 from ``p >= 3``.

    >>> [round(float(v), 5) for v in scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.0]))]
    [0.98661, 0.84828, -0.0, -0.98661, -1.0]
    """
    position = np.asarray(position, dtype=np.float64)
    return np.where(position >= 3.0, -1.0, -np.tanh(2.5 * position))


def row_weights(
    rows: int, windows: Sequence[tuple[int, int]], profile: Profile
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: what a detection there is worth, and which window it is in (-1: none).

    Windows must be sorted, disjoint, inclusive ``(first_row, last_row)`` pairs.
    """
    weight = np.empty(rows, dtype=np.float64)
    window_of = np.full(rows, -1, dtype=np.int64)
    index = np.arange(rows, dtype=np.float64)
    max_tp = float(scaled_sigmoid(np.array(-1.0)))
    previous_end = -1
    previous_width = 0
    for k, (first, last) in enumerate(windows):
        if not 0 <= first <= last < rows or first <= previous_end:
            raise ValueError(
                f"window {k} ({first}, {last}) is not sorted, disjoint and inside {rows} rows"
            )
        _fill_false_positive(weight, index, previous_end, previous_width, first, profile)
        width = last - first + 1
        position = -(last - index[first : last + 1] + 1) / width
        weight[first : last + 1] = profile.tp * scaled_sigmoid(position) / max_tp
        window_of[first : last + 1] = k
        previous_end, previous_width = last, width
    _fill_false_positive(weight, index, previous_end, previous_width, rows, profile)
    return weight, window_of


def _fill_false_positive(
    weight: np.ndarray,
    index: np.ndarray,
    previous_end: int,
    previous_width: int,
    stop: int,
    profile: Profile,
) -> None:
    """Weights of the rows after ``previous_end`` up to ``stop``: FP costs, softened near a window."""
    start = previous_end + 1
    if start >= stop:
        return
    if previous_end < 0 or previous_width <= 1:
        weight[start:stop] = -profile.fp
        return
    position = (index[start:stop] - previous_end) / (previous_width - 1)
    weight[start:stop] = profile.fp * scaled_sigmoid(position)


def _events(
    files: Iterable[ScoredFile], profile: Profile
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Score changes as the threshold falls: (score, delta) pairs, the null total and #windows.

    Lowering the threshold past a row's score detects it: an FP row adds its (negative)
    weight; inside a window the window is worth its best (earliest) detected row, so a row
    adds only how much it raises that window's running maximum.
    """
    scores: list[np.ndarray] = []
    deltas: list[np.ndarray] = []
    null = 0.0
    scored_windows = 0
    for f in files:
        values = np.asarray(f.scores, dtype=np.float64)
        rows = len(values)
        weight, window_of = row_weights(rows, f.windows, profile)
        start = probationary_rows(rows)
        values, weight, window_of = values[start:], weight[start:], window_of[start:]
        outside = window_of < 0
        scores.append(values[outside])
        deltas.append(weight[outside])
        for k in np.unique(window_of[~outside]):
            inside = window_of == k
            order = np.argsort(-values[inside], kind="stable")
            best = np.maximum.accumulate(weight[inside][order])
            gain = np.diff(best, prepend=-profile.fn)
            scores.append(values[inside][order])
            deltas.append(gain)
            null -= profile.fn
            scored_windows += 1
    if not scores:
        return np.empty(0), np.empty(0), null, scored_windows
    return np.concatenate(scores), np.concatenate(deltas), null, scored_windows


def sweep(
    files: Sequence[ScoredFile], profile: Profile
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Corpus raw score at every candidate threshold, highest threshold first.

    Returns ``(thresholds, totals, null, windows)``: ``totals[i]`` is the raw corpus score
    when every row with ``score >= thresholds[i]`` is a detection; the first candidate is
    ``NO_DETECTION_THRESHOLD`` (nothing detected, total ``null``).
    """
    scores, deltas, null, windows = _events(files, profile)
    order = np.argsort(-scores, kind="stable")
    scores, deltas = scores[order], deltas[order]
    running = np.cumsum(deltas)
    # The total at threshold t counts every row with score >= t: take the last of each tie.
    last_of_tie = np.flatnonzero(np.diff(scores, append=-np.inf) != 0)
    thresholds = np.concatenate([[NO_DETECTION_THRESHOLD], scores[last_of_tie]])
    totals = null + np.concatenate([[0.0], running[last_of_tie]])
    return thresholds, totals, null, windows


def raw_score_at(files: Sequence[ScoredFile], profile: Profile, threshold: float) -> float:
    """Corpus raw score at one fixed threshold, computed directly (row by row, per window).

    Independent of ``sweep`` on purpose: the tests check one against the other.
    """
    total = 0.0
    for f in files:
        values = np.asarray(f.scores, dtype=np.float64)
        weight, window_of = row_weights(len(values), f.windows, profile)
        scorable = np.arange(len(values)) >= probationary_rows(len(values))
        detected = scorable & (values >= threshold)
        total += float(weight[detected & (window_of < 0)].sum())
        for k in range(len(f.windows)):
            inside = scorable & (window_of == k)
            if not inside.any():
                continue
            hits = np.flatnonzero(detected & (window_of == k))
            total += float(weight[hits[0]]) if len(hits) else -profile.fn
    return total


def normalised(raw: float, null: float, perfect: float) -> float:
    """NAB's normalisation: 0 for the detector that never detects, 100 for a perfect one."""
    if perfect == null:
        return 0.0
    return 100.0 * (raw - null) / (perfect - null)


def score_corpus(
    files: Sequence[ScoredFile], profiles: dict[str, Profile] | None = None
) -> dict[str, Any]:
    """Normalised NAB scores of a corpus, the threshold optimised per profile.

    Returns ``{"standard": x, "low_fp": y, "low_fn": z, "thresholds": {...}, "raw": {...},
    "files": n, "windows": w}``. When several thresholds tie for the best total, the
    highest (fewest detections) is reported.
    """
    profiles = profiles or PROFILES
    result: dict[str, Any] = {"thresholds": {}, "raw": {}, "files": len(files)}
    windows_total = sum(len(f.windows) for f in files)
    for key, profile in profiles.items():
        thresholds, totals, null, _ = sweep(files, profile)
        best = int(np.argmax(totals))
        perfect = profile.tp * windows_total
        result[key] = normalised(float(totals[best]), null, perfect)
        result["thresholds"][key] = float(thresholds[best])
        result["raw"][key] = float(totals[best])
    result["windows"] = windows_total
    return result


def load_windows(data_dir_or_labels: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Windows from ``combined_windows.json``, given the file itself, the NAB root or its data dir."""
    path = Path(data_dir_or_labels)
    if path.is_dir():
        for candidate in (path / "labels", path.parent / "labels", path):
            if (candidate / "combined_windows.json").is_file():
                path = candidate / "combined_windows.json"
                break
        else:
            raise FileNotFoundError(
                f"no labels/combined_windows.json in or beside {data_dir_or_labels}"
            )
    with open(path) as f:
        raw = json.load(f)
    return {name: [(str(a), str(b)) for a, b in pairs] for name, pairs in raw.items()}


def _instant(text: str) -> datetime:
    """NAB timestamps: ``YYYY-MM-DD HH:MM:SS`` in data, with ``.ffffff`` in the labels."""
    return datetime.fromisoformat(text.strip())


def window_rows(
    timestamps: Sequence[str], windows: Sequence[tuple[str, str]], name: str = ""
) -> list[tuple[int, int]]:
    """Inclusive row indices of each window: the first row with its start and end timestamps.

    NAB matches timestamps exactly (first occurrence, as repeated timestamps exist).
    """
    wanted = {_instant(t) for pair in windows for t in pair}
    first_row: dict[datetime, int] = {}
    for i, text in enumerate(timestamps):
        if text[:4].isdigit():
            instant = _instant(text)
            if instant in wanted and instant not in first_row:
                first_row[instant] = i
    rows = []
    for start, end in windows:
        try:
            rows.append((first_row[_instant(start)], first_row[_instant(end)]))
        except KeyError as missing:
            raise ValueError(
                f"{name}: window timestamp {missing} is not a row of the results"
            ) from None
    return rows


def read_results(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Timestamps and anomaly scores of one result file (``timestamp,...,anomaly_score,...``)."""
    timestamps: list[str] = []
    scores: list[float] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if "timestamp" not in header or "anomaly_score" not in header:
            raise ValueError(f"{path}: expected timestamp and anomaly_score columns, got {header}")
        t_col, s_col = header.index("timestamp"), header.index("anomaly_score")
        for line_no, row in enumerate(reader, start=2):
            try:
                score = float(row[s_col])
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{line_no}: no anomaly score in {row!r}") from None
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"{path}:{line_no}: anomaly score {score} is not in [0, 1]")
            timestamps.append(row[t_col])
            scores.append(score)
    return timestamps, np.asarray(scores, dtype=np.float64)


def load_results(
    results_dir: str | Path, data_dir_or_labels: str | Path, require_all: bool = True
) -> list[ScoredFile]:
    """Every labelled file's results, from the same relative path under ``results_dir``.

    With ``require_all=False`` labelled files without results are skipped (a quick subset).
    """
    results_dir = Path(results_dir)
    files = []
    for name, windows in sorted(load_windows(data_dir_or_labels).items()):
        path = results_dir / name
        if not path.is_file():
            if not require_all:
                continue
            raise FileNotFoundError(f"no results for labelled file {name} (looked for {path})")
        timestamps, scores = read_results(path)
        files.append(ScoredFile(name, scores, window_rows(timestamps, windows, name)))
    return files


def score_results(
    results_dir: str | Path, data_dir_or_labels: str | Path, require_all: bool = True
) -> dict[str, Any]:
    """NAB scores of ``edgepipe detect --nab-dir`` output: the function ``edgepipe bench`` calls.

    ``data_dir_or_labels`` is the NAB root, its ``data`` dir or ``combined_windows.json``.
    Every labelled file must have a result file under the same relative path (unless
    ``require_all=False``: then only the files present are scored).
    Returns ``{"standard", "low_fp", "low_fn", "thresholds", "raw", "files", "windows"}``.
    """
    return score_corpus(load_results(results_dir, data_dir_or_labels, require_all))


def detect_and_score(
    nab_root: str | Path, out_dir: str | Path, detector: ValueDetector | None = None
) -> dict[str, Any]:
    """Run ``edgepipe detect --nab-dir`` on ``nab_root/data`` into ``out_dir``, then score it.

    For ``edgepipe bench --quality``: adds ``rows``, ``detect_s`` (wall time of the replay,
    CSV reading and writing included) and ``us_per_row`` to ``score_results``' dict.
    ``detector`` is any edge detector (default: the edge's default detector).
    """
    import time

    from pipeline.replay import detect_nab_dir

    nab_root = Path(nab_root)
    data_dir = nab_root / "data" if (nab_root / "data").is_dir() else nab_root
    start = time.perf_counter()
    _, rows = detect_nab_dir(data_dir, out_dir, detector)
    elapsed = time.perf_counter() - start
    result = score_results(out_dir, nab_root)
    result.update(rows=rows, detect_s=elapsed, us_per_row=1e6 * elapsed / max(rows, 1))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.bench.nab RESULTS_DIR NAB_DIR``: print the scores as JSON."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(
            "usage: python -m pipeline.bench.nab RESULTS_DIR NAB_DIR_OR_WINDOWS_JSON",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(score_results(args[0], args[1]), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
