"""``edgepipe detect``: replay ``timestamp,value`` CSV files through the edge detector.

One streaming pass per file, one configuration for all files: each value is scored before
it is learned, and nothing looks ahead (no file minimum, maximum or length).
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.edge.detect import ZScoreDetector


def detect_csv(source: str | Path, target: str | Path, detector: ZScoreDetector | None = None) -> int:
    """Score one CSV into ``target`` (``timestamp,value,anomaly_score``); return the row count."""
    detector = detector or ZScoreDetector()
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
            score = detector.score_one(value)
            detector.learn_one(value)
            writer.writerow([row[0], row[1], f"{score:.6f}"])
            rows += 1
    return rows


def detect_nab_dir(data_dir: str | Path, out_dir: str | Path) -> tuple[int, int]:
    """Score every CSV under ``data_dir`` into the same relative path under ``out_dir``."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    files = rows = 0
    template = ZScoreDetector()
    for source in sorted(data_dir.rglob("*.csv")):
        rows += detect_csv(source, out_dir / source.relative_to(data_dir), template.clone())
        files += 1
    return files, rows
