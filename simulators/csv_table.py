"""A recorded CSV as rows of (timestamp, metrics, label), for ``edgepipe sim --replay``.

The layout is decided once, from the first lines, so that every row is read the same way:

* delimiter: comma or semicolon, whichever splits the header into two or more fields; with
  both, the one splitting the first lines alike, then the one giving the header more fields.
  After a semicolon a decimal comma is read as a point (``21,5``), as spreadsheets in many
  locales write it;
* timestamp: the column named timestamp, time, ts, date or datetime (any case), else the
  first; ISO 8601 (no offset: UTC) or a Unix number whose magnitude tells its unit (below
  1e11: seconds, 1e14: milliseconds, 1e17: microseconds, else nanoseconds);
* labels: a column named anomaly or label (any case) marks rows (1/true/yes/anomaly...), is
  never a metric;
* metrics: every other column, named by the header. With a kind they must be exactly its
  metrics; without one, a single column is the ``value`` of kind ``replay`` (NAB's
  ``timestamp,value`` files, header optional as before).

Anything else stops the run before the first publish with one line naming the file, row (the
file's line, the header being row 1) and column: ``ConfigError`` on ``sim.replay``.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.ingest.fields import Refusal, ts_from_iso, ts_from_value
from pipeline.protocol.catalog import KINDS, DeviceKind

TIMESTAMP_NAMES = ("timestamp", "time", "ts", "date", "datetime")
LABEL_NAMES = ("anomaly", "label")
DELIMITERS = (",", ";")
SNIFF_LINES = 20  # lines read to choose the delimiter
TRUE_LABELS = frozenset({"1", "true", "t", "yes", "y", "anomaly", "anomalous", "abnormal"})
FALSE_LABELS = frozenset({"", "0", "false", "f", "no", "n", "normal"})
# A Unix number's unit from its magnitude: 1e11 s is the year 5138, 1e11 ms is 1973.
SECONDS_BELOW = 1e11
MILLISECONDS_BELOW = 1e14
MICROSECONDS_BELOW = 1e17
LEGACY_KIND = KINDS["replay"]  # one column without --kind: NAB's timestamp,value
_INTEGER = re.compile(r"[+-]?\d+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: ``line`` is its row of the file (the header is row 1)."""

    line: int
    ts: int  # Unix ms
    metrics: dict[str, float]
    labelled: bool


@dataclass(frozen=True, slots=True)
class Span:
    """What a full pass found: rows, first and last timestamps (ms), labelled rows."""

    rows: int
    first_ts: int | None
    last_ts: int | None
    labelled: int

    @property
    def seconds(self) -> float:
        return (
            0.0
            if self.first_ts is None or self.last_ts is None
            else (self.last_ts - self.first_ts) / 1000
        )


def csv_error(path: str | Path, detail: str) -> ConfigError:
    """The one error a CSV problem raises: the CLI shows it as a bad ``--replay`` (exit 2)."""
    return ConfigError("sim.replay", str(path), detail)


@dataclass(frozen=True)
class CsvTable:
    """How to read one CSV file: build with :meth:`open`, then iterate :meth:`rows`."""

    path: Path
    kind: DeviceKind
    delimiter: str
    has_header: bool
    ts_column: int
    metric_columns: tuple[tuple[str, int], ...]  # (metric published, column index)
    label_column: int | None
    columns: tuple[str, ...]  # the header's names ('' for a headerless file)

    @classmethod
    def open(cls, path: str | Path, kind: DeviceKind | None = None) -> CsvTable:
        """Read the header and decide the layout; ``ConfigError`` naming what does not fit."""
        path = Path(path)
        head = _first_lines(path)
        if not head:
            raise csv_error(
                path, "empty file: expected a header (timestamp, then one column per metric)"
            )
        delimiter = _delimiter(path, head)
        header = [cell.strip() for cell in next(csv.reader([head[0]], delimiter=delimiter))]
        if _is_data(header, delimiter):
            if kind is None and len(header) == 2:  # NAB without a header: as before
                return cls(path, LEGACY_KIND, delimiter, False, 0, (("value", 1),), None, ("", ""))
            raise csv_error(
                path,
                "row 1 is data, not a header: name the columns (a timestamp column, then one per metric)",
            )
        lowered = [name.lower() for name in header]
        for i, name in enumerate(header):
            if not name:
                raise csv_error(path, f"row 1, column {i + 1}: empty column name")
            if lowered.index(name.lower()) != i:
                raise csv_error(path, f"row 1: column {name!r} appears twice")
        ts_column = next((i for i, name in enumerate(lowered) if name in TIMESTAMP_NAMES), 0)
        labels = [i for i, name in enumerate(lowered) if name in LABEL_NAMES and i != ts_column]
        if len(labels) > 1:
            raise csv_error(
                path, f"two label columns ({', '.join(header[i] for i in labels)}): keep one"
            )
        label_column = labels[0] if labels else None
        values = [(header[i], i) for i in range(len(header)) if i not in (ts_column, label_column)]
        metric_columns = _match_kind(path, kind, values, header[ts_column])
        return cls(
            path,
            kind or LEGACY_KIND,
            delimiter,
            True,
            ts_column,
            metric_columns,
            label_column,
            tuple(header),
        )

    def rows(self) -> Iterator[Row]:
        """Every data row, in file order, one at a time (memory stays flat)."""
        width = len(self.columns)
        names = self.columns if self.has_header else ("timestamp", "value")
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            header_due = self.has_header  # the first non-blank row, as _first_lines read it
            while True:
                try:
                    cells = next(reader, None)
                except csv.Error as exc:
                    raise csv_error(self.path, f"row {reader.line_num}: {exc}") from None
                if cells is None:
                    return
                line = reader.line_num
                if not cells or all(not c.strip() for c in cells):
                    continue  # a blank line
                if header_due:
                    header_due = False
                    continue
                if len(cells) != width:
                    raise csv_error(
                        self.path, f"row {line}: {len(cells)} fields, the header has {width}"
                    )
                ts_cell = cells[self.ts_column]
                try:
                    ts = parse_timestamp(ts_cell, self.delimiter)
                except ValueError as exc:
                    where = f"row {line}, column {names[self.ts_column]!r}"
                    raise csv_error(
                        self.path, f"{where}: {ts_cell.strip()[:40]!r} is not a timestamp ({exc})"
                    ) from None
                metrics: dict[str, float] = {}
                for metric, column in self.metric_columns:
                    number = parse_number(cells[column], self.delimiter)
                    if number is None:
                        where = f"row {line}, column {names[column]!r}"
                        raise csv_error(
                            self.path,
                            f"{where}: {cells[column].strip()[:40]!r} is not a finite number",
                        )
                    metrics[metric] = number
                labelled = False
                if self.label_column is not None:
                    flag = parse_label(cells[self.label_column], self.delimiter)
                    if flag is None:
                        where = f"row {line}, column {names[self.label_column]!r}"
                        raise csv_error(
                            self.path,
                            f"{where}: {cells[self.label_column].strip()[:40]!r} is not a label"
                            " (1/0, true/false, yes/no, anomaly/normal)",
                        )
                    labelled = flag
                yield Row(line, ts, metrics, labelled)

    def span(self) -> Span:
        """Read every row once (a bad row stops the run before it starts)."""
        rows = labelled = 0
        first: int | None = None
        last: int | None = None
        for row in self.rows():
            rows += 1
            labelled += row.labelled
            first = row.ts if first is None else first
            last = row.ts
        return Span(rows, first, last, labelled)

    def describe(self) -> str:
        """The layout in a few words, for the run's start line."""
        if self.kind is LEGACY_KIND:
            text = f"kind {self.kind.name}"
        else:
            text = f"kind {self.kind.name}: {len(self.metric_columns)} metrics"
        if self.label_column is not None:
            text += f", labels from column {self.columns[self.label_column]!r}"
        return text


def parse_number(text: str, delimiter: str = ",") -> float | None:
    """A finite float, or None. After a ``;`` delimiter a decimal comma counts as a point.

    >>> parse_number(" 21.5 "), parse_number("21,5", ";"), parse_number("nan"), parse_number("hot")
    (21.5, 21.5, None, None)
    """
    text = text.strip()
    if delimiter == ";" and "," in text and "." not in text:
        text = text.replace(",", ".", 1)
    if not text or "_" in text:  # float() takes 1_000; a CSV does not mean it
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_timestamp(text: str, delimiter: str = ",") -> int:
    """Unix ms from ISO 8601 (no offset: UTC) or a Unix number (unit by magnitude).

    ``ValueError`` says why not.

    >>> parse_timestamp("2024-03-05T10:15:42.123Z"), parse_timestamp("2013-07-04 00:00:00")
    (1709633742123, 1372896000000)
    >>> parse_timestamp("1709633742"), parse_timestamp("1709633742123"), parse_timestamp("1709633742123456789")
    (1709633742000, 1709633742123, 1709633742123)
    """
    text = text.strip()
    if not text:
        raise ValueError("empty")
    number = parse_number(text, delimiter)
    if number is not None:
        size = abs(number)
        unit = (
            "s"
            if size < SECONDS_BELOW
            else "ms"
            if size < MILLISECONDS_BELOW
            else "us"
            if size < MICROSECONDS_BELOW
            else "ns"
        )
        exact: int | float = int(text) if _INTEGER.fullmatch(text) else number
        try:
            return ts_from_value(exact, unit)
        except Refusal as exc:
            raise ValueError(exc.detail) from None
    try:
        return ts_from_iso(text)
    except Refusal:
        pass
    try:  # what the ISO pattern leaves out: a date alone, minutes without seconds
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("ISO 8601 or Unix s/ms/us/ns expected") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def parse_label(text: str, delimiter: str = ",") -> bool | None:
    """True for a labelled row, False for a normal one, None for a value that is neither.

    >>> [parse_label(t) for t in ("1", "TRUE", "anomaly", "0", "", "no", "2", "maybe")]
    [True, True, True, False, False, False, True, None]
    """
    word = text.strip().lower()
    if word in TRUE_LABELS:
        return True
    if word in FALSE_LABELS:
        return False
    number = parse_number(word, delimiter)
    return None if number is None else number != 0


def _first_lines(path: Path) -> list[str]:
    """Up to ``SNIFF_LINES`` non-blank lines (the header first)."""
    lines: list[str] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for _, line in zip(range(SNIFF_LINES * 10), f, strict=False):
            if line.strip():
                lines.append(line.rstrip("\r\n"))
            if len(lines) >= SNIFF_LINES:
                break
    return lines


def _delimiter(path: Path, head: list[str]) -> str:
    """Comma or semicolon: one that splits the header into >= 2 fields; with both, the one
    that splits the sniffed lines alike, then the one giving the header more fields."""
    scores: dict[str, tuple[bool, int, bool]] = {}
    for candidate in DELIMITERS:
        widths = [len(cells) for cells in csv.reader(head, delimiter=candidate)]
        if widths[0] >= 2:
            scores[candidate] = (len(set(widths)) == 1, widths[0], candidate == ",")
    if not scores:
        raise csv_error(
            path,
            "row 1: neither comma nor semicolon splits the header into columns"
            " (a timestamp column and at least one metric)",
        )
    return max(scores, key=lambda d: scores[d])


def _is_data(cells: list[str], delimiter: str) -> bool:
    """True if a first row reads as timestamp then numbers: a file without a header."""
    try:
        parse_timestamp(cells[0], delimiter)
    except ValueError:
        return False
    return all(parse_number(cell, delimiter) is not None for cell in cells[1:])


def _match_kind(
    path: Path, kind: DeviceKind | None, values: list[tuple[str, int]], ts_name: str
) -> tuple[tuple[str, int], ...]:
    """The metric columns, checked against the kind's metrics (missing and extra named)."""
    if not values:
        raise csv_error(path, f"row 1: no metric column beside the timestamp column {ts_name!r}")
    if kind is None:
        if len(values) == 1:
            return (("value", values[0][1]),)
        names = ", ".join(name for name, _ in values)
        raise csv_error(
            path,
            f"{len(values)} metric columns ({names}): name their kind with --kind"
            " (a built-in kind or a [kinds.NAME] of --config)",
        )
    given = {name for name, _ in values}
    missing = [m for m in kind.metrics if m not in given]
    extra = sorted(given - kind.metrics.keys())
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"column(s) {', '.join(extra)} not metrics of the kind")
        raise csv_error(
            path,
            f"row 1: kind {kind.name} has metrics {', '.join(kind.metrics)}: {'; '.join(parts)}",
        )
    return tuple((name, i) for name, i in values)
