"""``ttn``: The Things Stack v3 uplink messages from its MQTT server.

Shape (https://www.thethingsindustries.com/docs/integrations/data-formats/): topic
``v3/{application id}[@{tenant id}]/devices/{device id}/up``; ``end_device_ids.device_id``,
``received_at`` (RFC 3339, nanoseconds), ``uplink_message.decoded_payload`` (the payload
formatter's output: only there when one is configured), ``uplink_message.rx_metadata``.
"""

from __future__ import annotations

from pipeline.ingest.base import Decoded, MappedAdapter, as_object, load_json
from pipeline.ingest.fields import Refusal
from pipeline.protocol.reasons import Reason


class TtnAdapter(MappedAdapter):
    format = "ttn"
    default_topic = "v3/+/devices/+/up"
    default_device_field = "/end_device_ids/device_id"
    default_timestamp_field = "/received_at"

    def decode(self, topic: str, payload: bytes, arrival_ms: int, retained: bool) -> Decoded:
        captured = self.captured(topic) or {}
        message = load_json(payload, self.entry.max_bytes)
        message = as_object(message)
        uplink = message.get("uplink_message")
        if not isinstance(uplink, dict):
            raise Refusal(Reason.MISSING_FIELD, "no uplink_message")
        values = uplink.get("decoded_payload")
        if values is None:
            raise Refusal(Reason.MISSING_FIELD, "no uplink_message.decoded_payload (no payload formatter?)")
        kind = self.kind_of(message, captured)
        device = self.device_of(message, captured)
        ts = self.ts_of(message, arrival_ms)
        metrics, extra = self.metrics_of(values, kind)
        return Decoded(readings=[self.reading(device, kind, ts, metrics)], extra_fields=extra)

    def structural_fields(self) -> set[str]:
        return set()  # the paths other than metrics are read in the message, not the payload
