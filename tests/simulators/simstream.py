"""Run the fleet into memory and parse what it published, per device (shared by the tests)."""

from __future__ import annotations

import io
import json
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from simulators import SimOptions, SimReport, run

# Monday 1 July 2024, 00:00 UTC: a summer week, so days are long and nights short.
MONDAY = 1_719_792_000_000
DAY_MS = 86_400_000


@dataclass
class Stream:
    """One run: its report, the raw ``out`` text, and readings and labels parsed."""

    options: SimOptions
    report: SimReport
    out: str
    labels_text: str
    readings: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    labels: list[dict[str, Any]] = field(default_factory=list)
    publications: list[tuple[str, bytes]] = field(default_factory=list)
    _by_ts: dict[tuple[str, str], dict[int, dict[str, float]]] = field(default_factory=dict)
    _stamps: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def devices(self, kind: str) -> list[tuple[str, str]]:
        return [key for key, rows in self.readings.items() if rows[0]["kind"] == kind]

    def rows(self, kind: str) -> list[dict[str, Any]]:
        return [r for key in self.devices(kind) for r in self.readings[key]]

    def by_ts(self, key: tuple[str, str]) -> dict[int, dict[str, float]]:
        """Metrics by timestamp for one device (cached: tests ask for it per label)."""
        if key not in self._by_ts:
            self._by_ts[key] = {r["ts"]: r["metrics"] for r in self.readings.get(key, [])}
        return self._by_ts[key]

    def between(self, key: tuple[str, str], start: int, end: int) -> list[dict[str, Any]]:
        """The device's readings with ``start <= ts <= end``, in order."""
        if key not in self._stamps:
            self._stamps[key] = [r["ts"] for r in self.readings.get(key, [])]
        stamps = self._stamps[key]
        return self.readings.get(key, [])[bisect_left(stamps, start) : bisect_right(stamps, end)]


def simulate(**overrides: Any) -> Stream:
    """Run the fleet as fast as possible into memory and parse what it published."""
    settings: dict[str, Any] = {"start_ms": MONDAY, "realtime": False}
    settings.update(overrides)
    options = SimOptions(**settings)
    out, labels_out = io.StringIO(), io.StringIO()
    report = run(options, None, out, labels_out)
    stream = Stream(options, report, out.getvalue(), labels_out.getvalue())
    readings: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in stream.out.splitlines():
        topic, payload = line.split("\t")
        stream.publications.append((topic, payload.encode()))
        levels = topic.split("/")
        if levels[-2] == "dev":
            try:
                reading = json.loads(payload)
            except ValueError:
                continue
            readings[(levels[-3], levels[-1])].append(reading)
    stream.readings = dict(readings)
    stream.labels = [json.loads(line) for line in stream.labels_text.splitlines()]
    return stream
