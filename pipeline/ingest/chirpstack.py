"""``chirpstack``: ChirpStack v4 uplink events, MQTT integration, JSON marshaler.

Shape (https://www.chirpstack.io/docs/chirpstack/integrations/events.html, the ``up``
event; field names from integration.proto's JSON mapping): topic
``application/{application id}/device/{devEui}/event/up``; ``deviceInfo.devEui``,
``deviceInfo.deviceName``, ``time`` (RFC 3339), ``fCnt``, ``object`` (the device profile
codec's output: only there when a codec is configured), ``rxInfo``.
"""

from __future__ import annotations

from pipeline.ingest.base import Decoded, MappedAdapter, as_object, load_json
from pipeline.ingest.fields import Refusal
from pipeline.protocol.reasons import Reason


class ChirpStackAdapter(MappedAdapter):
    format = "chirpstack"
    default_topic = "application/+/device/+/event/up"
    default_device_field = "/deviceInfo/devEui"
    default_timestamp_field = "/time"

    def decode(self, topic: str, payload: bytes, arrival_ms: int, retained: bool) -> Decoded:
        captured = self.captured(topic) or {}
        message = load_json(payload, self.entry.max_bytes)
        message = as_object(message)
        values = message.get("object")
        if values is None:
            raise Refusal(Reason.MISSING_FIELD, "no object (no codec in the device profile?)")
        kind = self.kind_of(message, captured)
        device = self.device_of(message, captured)
        ts = self.ts_of(message, arrival_ms)
        metrics, extra = self.metrics_of(values, kind)
        return Decoded(readings=[self.reading(device, kind, ts, metrics)], extra_fields=extra)

    def structural_fields(self) -> set[str]:
        return set()  # the paths other than metrics are read in the message, not the object
