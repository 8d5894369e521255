"""``edgepipe detect``: replay ``timestamp,value`` CSV files through the edge detector.

One streaming pass per file, one configuration for all files: each value is scored before
it is learned, and nothing looks ahead (no file minimum, maximum or length). Timestamps go
to the detector too (epoch milliseconds, naive times read as UTC), for its time-of-day and
day-of-week profiles.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

from pipeline.detect.base import ValueDetector
from pipeline.detect.features import TS_MS, VALUE
from pipeline.detect.registry import default_detector


def parse_timestamp_ms(text: str) -> int:
    """Epoch milliseconds of an ISO 8601 timestamp (naive: UTC) or of epoch seconds/ms.

    >>> parse_timestamp_ms("1970-01-01 00:00:01")
    1000
    >>> parse_timestamp_ms("1700000000"), parse_timestamp_ms("1700000000000")
    (1700000000000, 1700000000000)
    """
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    return int(number if number > 1e11 else number * 1000)  # 1e11 s is the year 5138


def detect_csv(source: str | Path, target: str | Path, detector: ValueDetector | None = None) -> int:
    """Score one CSV into ``target`` (``timestamp,value,anomaly_score``); return the row count."""
    detector = detector or default_detector()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with open(source, newline="") as fin, open(target, "w", newline="") as fout:
        reader = csv.reader(fin)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            raise ValueError(f"{source}: expected a 'timestamp,value' header, got {header}")
        writer = csv.writer(fout, lineterminator="\n")
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for line_no, row in enumerate(reader, start=2):
            try:
                value = float(row[1])
            except (IndexError, ValueError):
                raise ValueError(f"{source}:{line_no}: not a number: {row!r}") from None
            try:
                ts_ms = parse_timestamp_ms(row[0])
            except ValueError:
                raise ValueError(f"{source}:{line_no}: not a timestamp: {row[0]!r}") from None
            x = {VALUE: value, TS_MS: ts_ms}  # river's API, as a user's notebook calls it
            score = detector.score_one(x)
            detector.learn_one(x)
            writer.writerow([row[0], row[1], repr(score)])  # full precision: no false ties
            rows += 1
    return rows


def detect_nab_dir(
    data_dir: str | Path, out_dir: str | Path, detector: ValueDetector | None = None
) -> tuple[int, int]:
    """Score every CSV under ``data_dir`` into the same relative path under ``out_dir``.

    Each file gets a fresh ``clone()`` of ``detector`` (default: ``default_detector()``).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    files = rows = 0
    template = detector or default_detector()
    for source in sorted(data_dir.rglob("*.csv")):
        rows += detect_csv(source, out_dir / source.relative_to(data_dir), template.clone())
        files += 1
    return files, rows
