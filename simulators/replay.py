"""Replay a recorded series (NAB's ``timestamp,value`` CSV) as one device of kind ``replay``.

Recorded data keeps the detectors honest where simulated data cannot: NAB's files carry
real anomalies with published windows. Rows are read one at a time (memory stays flat)
and paced by their own timestamps divided by ``speed``; timestamps are UTC. A repeated or
backwards timestamp (NAB has a few) is moved to 1 ms after the previous one so that every
row is published and ``ts`` stays strictly increasing; the report counts them.
"""

from __future__ import annotations

import csv
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from pipeline.errors import ConfigError
from pipeline.protocol.catalog import KINDS
from pipeline.protocol.json_codec import encode
from pipeline.protocol.messages import SCHEMA_VERSION, Label, Reading
from pipeline.protocol.topics import DEFAULT_ROOT, Topics, is_valid_id
from simulators.output import Publisher, SimReport, Sink, wait_until

KIND = "replay"
METRIC = "value"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(text: str) -> int:
    """``2013-07-04 00:00:00`` (ISO 8601; naive means UTC) to Unix milliseconds."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def read_series(path: str | Path) -> Iterator[tuple[int, float]]:
    """Yield (timestamp ms, value) per row of a ``timestamp,value`` CSV; the header is optional."""
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or (line == 1 and row[0].strip().lower() == "timestamp"):
                continue
            try:
                ts, value = parse_timestamp(row[0]), float(row[1])
            except (ValueError, IndexError):
                raise ConfigError(
                    "sim.replay", f"{path}:{line}", "rows of timestamp,value"
                ) from None
            if not math.isfinite(value):
                raise ConfigError("sim.replay", f"{path}:{line}", "finite values")
            yield ts, value


def nab_windows(labels_json: str | Path, csv_path: str | Path) -> list[tuple[int, int]]:
    """NAB's anomaly windows (Unix ms, inclusive) for one data file, from combined_windows.json."""
    csv_path = Path(csv_path)
    key = f"{csv_path.parent.name}/{csv_path.name}"
    with open(labels_json) as f:
        windows = json.load(f).get(key, [])
    return [(parse_timestamp(a), parse_timestamp(b)) for a, b in windows]


def replay(
    path: str | Path,
    site: str,
    device: str,
    speed: float = 1.0,
    publisher: Publisher | None = None,
    out: TextIO | None = None,
    *,
    labels_out: TextIO | None = None,
    qos: int = 0,
    topic_root: str = DEFAULT_ROOT,
    realtime: bool = True,
    stop: threading.Event | None = None,
    start_ms: int | None = None,
    windows: Sequence[tuple[int, int]] = (),
) -> SimReport:
    """Publish every row of ``path`` as a reading of ``device`` at ``site``.

    Paced at ``speed`` times the CSV's own clock when ``realtime`` (``speed`` 0 or
    ``realtime=False``: as fast as possible). ``ts`` is the CSV timestamp, or, with
    ``start_ms``, shifted so that the first row falls on ``start_ms`` (an edge refuses
    readings older than its retention, and NAB's are from 2013-2015). ``windows`` (CSV time,
    e.g. from ``nab_windows``) are published as labels of anomaly ``nab`` once passed.
    """
    for key, given in (("site", site), ("device", device)):
        if not is_valid_id(given):
            raise ConfigError(f"sim.{key}", given, "an id of letters, digits, _ and -")
    if not speed >= 0 or not math.isfinite(speed):
        raise ConfigError("sim.speed", speed, ">= 0")
    topics = Topics(topic_root)
    topic, labels_topic = topics.reading(site, device), topics.labels(site)
    metric = KINDS[KIND].metrics[METRIC]
    digits = round(-math.log10(metric.resolution))
    report = SimReport(devices=1)
    sink = Sink(publisher, out, labels_out, qos, report)
    pending = sorted(windows)
    paced = realtime and speed > 0
    began = time.monotonic()
    first: int | None = None
    shift = 0
    last_ts = -1
    seq = 0
    for csv_ts, value in read_series(path):
        if first is None:
            first = csv_ts
            shift = 0 if start_ms is None else start_ms - csv_ts
        if paced and not wait_until(began + (csv_ts - first) / 1000 / speed, stop):
            break
        if stop is not None and stop.is_set():
            break
        while pending and pending[0][1] < csv_ts:
            _label(sink, labels_topic, site, device, pending.pop(0), shift)
        ts = csv_ts + shift
        if ts <= last_ts:
            ts = last_ts + 1
            report.ts_adjusted += 1
        value = min(max(round(value, digits), metric.low), metric.high) + 0.0  # no -0.0
        reading = Reading(SCHEMA_VERSION, device, KIND, ts, seq, {METRIC: value})
        sink.send(topic, encode(reading))
        report.readings_published += 1
        last_ts, seq = ts, seq + 1
    for start, end in pending:  # windows still open when the series ended
        if first is not None and start + shift <= last_ts:
            _label(sink, labels_topic, site, device, (start, min(end, last_ts - shift)), shift)
    report.stopped = stop is not None and stop.is_set()
    report.seconds = time.monotonic() - began
    report.sim_seconds = 0.0 if first is None else (last_ts - shift - first) / 1000
    report.readings_per_s = report.readings_published / report.seconds if report.seconds else 0.0
    return report


def _label(
    sink: Sink, topic: str, site: str, device: str, window: tuple[int, int], shift: int
) -> None:
    start, end = window
    label = Label(SCHEMA_VERSION, site, device, [METRIC], "nab", start + shift, end + shift)
    sink.label(topic, label)
