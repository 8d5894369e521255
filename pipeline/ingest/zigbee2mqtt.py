"""``zigbee2mqtt``: device state messages on ``zigbee2mqtt/{friendly name}``.

Shape (https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html): a JSON
object of the device's exposed values (``{"temperature": 4.2, "contact": true,
"battery": 97, "linkquality": 120}``), no timestamp, so the arrival time is the reading's.
A friendly name may contain ``/``: the device is everything after the base topic.

Ignored, not dead-lettered (they are not readings): ``bridge/...`` (the bridge's own
state, devices, logs), ``.../availability``, ``.../set`` and ``.../get`` (commands), and
retained messages: the broker replays a stale state on every subscribe, and with no
timestamp in it the arrival time would date an old value as new.
"""

from __future__ import annotations

from pipeline.ingest.base import Decoded, MappedAdapter, as_object, load_json

COMMAND_LEVELS = frozenset({"availability", "set", "get"})


class Zigbee2MqttAdapter(MappedAdapter):
    format = "zigbee2mqtt"
    default_topic = "zigbee2mqtt/#"

    def decode(self, topic: str, payload: bytes, arrival_ms: int, retained: bool) -> Decoded:
        captured = self.captured(topic) or {}
        rest = captured.get("#", captured.get("device", ""))
        levels = rest.split("/")
        if levels[0] == "bridge":
            return Decoded(ignored="bridge")
        if levels[-1] in COMMAND_LEVELS or (len(levels) > 1 and levels[-2] in COMMAND_LEVELS):
            return Decoded(ignored=levels[-1] if levels[-1] == "availability" else "command")
        if retained:
            return Decoded(ignored="retained")
        message = load_json(payload, self.entry.max_bytes)
        message = as_object(message)
        kind = self.kind_of(message, captured)
        device = self.device_of(message, captured)
        ts = self.ts_of(message, arrival_ms)
        metrics, extra = self.metrics_of(message, kind)
        return Decoded(readings=[self.reading(device, kind, ts, metrics)], extra_fields=extra)
