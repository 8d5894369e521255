"""``json``: any JSON object (or array of objects) on a topic pattern, mapped by configuration.

Telegraf's json_v2 parser and eKuiper's stream schemas were the ideas: a topic pattern that
captures the device, paths for time and metrics, unit scaling, fields to ignore.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeline.ingest.base import MAX_ITEMS, Decoded, MappedAdapter, Refused, as_object, load_json
from pipeline.ingest.fields import Refusal
from pipeline.protocol.reasons import Reason


class JsonAdapter(MappedAdapter):
    """One reading per JSON object; a top-level array is several readings, each on its own."""

    format = "json"

    def decode(self, topic: str, payload: bytes, arrival_ms: int, retained: bool) -> Decoded:
        captured = self.captured(topic) or {}
        message = load_json(payload, self.entry.max_bytes)
        if not isinstance(message, list):
            return self._one(message, captured, arrival_ms, Decoded())
        if len(message) > MAX_ITEMS:
            raise Refusal(Reason.TOO_LARGE, f"{len(message)} readings > {MAX_ITEMS}")
        out = Decoded()
        for item in message:
            try:
                self._one(item, captured, arrival_ms, out)
            except Refusal as r:
                out.refused.append(Refused(r.reason, r.detail, msgspec.json.encode(item)))
            else:
                out.parts[len(out.readings) - 1] = msgspec.json.encode(item)
        return out

    def _one(self, message: Any, captured: dict[str, str], arrival_ms: int, out: Decoded) -> Decoded:
        message = as_object(message)
        kind = self.kind_of(message, captured)
        device = self.device_of(message, captured)
        ts = self.ts_of(message, arrival_ms)
        metrics, extra = self.metrics_of(message, kind)
        out.readings.append(self.reading(device, kind, ts, metrics))
        out.extra_fields += extra
        return out
