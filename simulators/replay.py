"""Replay a recorded CSV as one device: NAB's ``timestamp,value`` or any kind's metrics.

Recorded data keeps the detectors honest where simulated data cannot: NAB's files carry
real anomalies with published windows, and a user's own export carries their devices' real
behaviour. ``simulators.csv_table`` reads the file (delimiter, timestamp column and format,
label column, the kind's metric columns); rows are read one at a time (memory stays flat)
and paced by their own timestamps divided by ``speed``. A repeated or backwards timestamp
(NAB has a few) is moved to 1 ms after the previous one so that every row is published and
``ts`` stays strictly increasing; the report counts them. Consecutive rows the label column
marks are one ground-truth window, published as a label of anomaly ``csv`` (all the kind's
metrics) once the window has passed, as the simulator publishes its injected anomalies.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np

from pipeline.errors import ConfigError
from pipeline.protocol.catalog import DeviceKind
from pipeline.protocol.json_codec import encode
from pipeline.protocol.messages import SCHEMA_VERSION, Label, Reading
from pipeline.protocol.topics import DEFAULT_ROOT, Topics, is_valid_id
from simulators.csv_table import LEGACY_KIND, CsvTable
from simulators.output import Publisher, SimReport, Sink, wait_until
from simulators.signals import quantise

KIND = LEGACY_KIND.name
METRIC = "value"
CSV_ANOMALY = "csv"  # the anomaly name of a label column's windows
NAB_ANOMALY = "nab"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(text: str) -> int:
    """``2013-07-04 00:00:00`` (ISO 8601; naive means UTC) to Unix milliseconds."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


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
    kind: DeviceKind | None = None,
    labels_out: TextIO | None = None,
    qos: int = 0,
    topic_root: str = DEFAULT_ROOT,
    realtime: bool = True,
    stop: threading.Event | None = None,
    start_ms: int | None = None,
    windows: Sequence[tuple[int, int]] = (),
) -> SimReport:
    """Publish every row of ``path`` as a reading of ``device`` at ``site``.

    ``kind`` names the CSV's metric columns (without it: one ``value`` column, kind
    ``replay``). Paced at ``speed`` times the CSV's own clock when ``realtime`` (``speed`` 0
    or ``realtime=False``: as fast as possible). ``ts`` is the CSV timestamp, or, with
    ``start_ms``, shifted so that the first row falls on ``start_ms`` (an edge refuses
    readings older than its retention, and NAB's are from 2013-2015). ``windows`` (CSV time,
    e.g. from ``nab_windows``) are published as labels of anomaly ``nab`` once passed; a
    label column's windows as labels of anomaly ``csv``.
    """
    for key, given in (("site", site), ("device", device)):
        if not is_valid_id(given):
            raise ConfigError(f"sim.{key}", given, "an id of letters, digits, _ and -")
    if not speed >= 0 or not math.isfinite(speed):
        raise ConfigError("sim.speed", speed, ">= 0")
    table = CsvTable.open(path, kind)
    topics = Topics(topic_root)
    topic, labels_topic = topics.reading(site, device), topics.labels(site)
    metrics = [name for name, _ in table.metric_columns]
    to_value = _quantiser(table.kind)
    report = SimReport(devices=1)
    sink = Sink(publisher, out, labels_out, qos, report)
    pending = sorted(windows)
    paced = realtime and speed > 0
    began = time.monotonic()
    first: int | None = None
    shift = 0
    last_ts = -1
    seq = 0
    marked: list[int] = []  # [start, end] ts of the labelled rows running up to the last one
    for row in table.rows():
        csv_ts = row.ts
        if first is None:
            first = csv_ts
            shift = 0 if start_ms is None else start_ms - csv_ts
        if paced and not wait_until(began + (csv_ts - first) / 1000 / speed, stop):
            break
        if stop is not None and stop.is_set():
            break
        while pending and pending[0][1] < csv_ts:
            start, end = pending.pop(0)
            _label(
                sink, labels_topic, site, device, metrics, NAB_ANOMALY, start + shift, end + shift
            )
        ts = csv_ts + shift
        if ts <= last_ts:
            ts = last_ts + 1
            report.ts_adjusted += 1
        values = {name: to_value(name, v) for name, v in row.metrics.items()}
        reading = Reading(SCHEMA_VERSION, device, table.kind.name, ts, seq, values)
        sink.send(topic, encode(reading))
        report.readings_published += 1
        if row.labelled:
            marked = [marked[0] if marked else ts, ts]
        elif marked:
            _label(sink, labels_topic, site, device, metrics, CSV_ANOMALY, *marked)
            marked = []
        last_ts, seq = ts, seq + 1
    if marked:  # marked up to the last row published (the end, or a stop)
        _label(sink, labels_topic, site, device, metrics, CSV_ANOMALY, *marked)
    for start, end in pending:  # windows still open when the series ended
        if first is not None and start + shift <= last_ts:
            _label(
                sink,
                labels_topic,
                site,
                device,
                metrics,
                NAB_ANOMALY,
                start + shift,
                min(end + shift, last_ts),
            )
    report.stopped = stop is not None and stop.is_set()
    report.seconds = time.monotonic() - began
    report.sim_seconds = 0.0 if first is None else (last_ts - shift - first) / 1000
    report.readings_per_s = report.readings_published / report.seconds if report.seconds else 0.0
    return report


def _quantiser(kind: DeviceKind) -> Callable[[str, float], float]:
    """Each value on its metric's step, as the sensor would report it.

    Not clipped to the metric's range: a recorded value outside it is what the edge must see
    (and dead-letter as out_of_range), except for kind ``replay``, which takes any finite
    value and clipped as it always has.
    """
    clip = kind is LEGACY_KIND

    def to_value(name: str, value: float) -> float:
        m = kind.metrics[name]
        low, high = (m.low, m.high) if clip else (-math.inf, math.inf)
        return float(quantise(np.asarray(value), m.resolution, low, high))

    return to_value


def _label(
    sink: Sink,
    topic: str,
    site: str,
    device: str,
    metrics: list[str],
    anomaly: str,
    start: int,
    end: int,
) -> None:
    sink.label(topic, Label(SCHEMA_VERSION, site, device, list(metrics), anomaly, start, end))
