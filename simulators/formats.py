"""The simulated fleet in a foreign format (``edgepipe sim --format F``, issue 17).

Each reading is written as the system named would publish it, on the topic it would use,
so that every ingest adapter can be fed end to end with labelled anomalies. ``ingest_entry``
is the ``[[ingest]]`` entry that reads it back. The kind travels in the message (a TTN
application and a Zigbee2MQTT group per kind, a ChirpStack device profile, the line
protocol's measurement, a JSON field), because one site has devices of several kinds.

Zigbee2MQTT messages carry no time: the edge dates them on arrival, so only a real-time run
(``--speed 1``, the default start) keeps the simulated times.

>>> from pipeline.protocol.messages import Reading
>>> r = Reading(v=1, device="fridge-0001", kind="fridge", ts=1_700_000_000_000, seq=3, metrics={"temp": 4.5})
>>> foreign_message("influx-line", "retail", r)
('telegraf/retail/fridge', b'fridge,device=fridge-0001,host=retail temp=4.5 1700000000000000000')
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec

from pipeline.protocol.messages import Reading

FORMATS = ("edgepipe", "json", "ttn", "chirpstack", "zigbee2mqtt", "influx-line")

_encode = msgspec.json.Encoder().encode


def _iso(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def foreign_message(fmt: str, site: str, r: Reading) -> tuple[str, bytes]:
    """(topic, payload) of reading ``r`` of ``site`` in ``fmt`` (not ``edgepipe``)."""
    if fmt == "json":
        body: dict[str, Any] = {"kind": r.kind, "time": r.ts, **r.metrics}
        return f"sensors/{site}/{r.device}/state", _encode(body)
    if fmt == "ttn":
        body = {
            "end_device_ids": {"device_id": r.device, "application_ids": {"application_id": r.kind}},
            "received_at": _iso(r.ts),
            "uplink_message": {"f_port": 1, "f_cnt": r.seq, "decoded_payload": r.metrics},
        }
        return f"v3/{r.kind}@{site}/devices/{r.device}/up", _encode(body)
    if fmt == "chirpstack":
        body = {
            "time": _iso(r.ts),
            "deviceInfo": {"applicationName": site, "deviceProfileName": r.kind, "deviceName": r.device, "devEui": r.device},
            "fCnt": r.seq,
            "object": r.metrics,
        }
        return f"application/{site}/device/{r.device}/event/up", _encode(body)
    if fmt == "zigbee2mqtt":
        return f"zigbee2mqtt-{site}/{r.kind}/{r.device}", _encode({**r.metrics, "linkquality": 120})
    if fmt == "influx-line":
        fields = ",".join(f"{name}={value!r}" for name, value in r.metrics.items())
        line = f"{r.kind},device={r.device},host={site} {fields} {r.ts * 1_000_000}"
        return f"telegraf/{site}/{r.kind}", line.encode()
    raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")


def ingest_entry(fmt: str, site: str) -> dict[str, Any]:
    """The ``[[ingest]]`` entry (as a TOML table's dict) that reads ``fmt`` as written here."""
    entries: dict[str, dict[str, Any]] = {
        "edgepipe": {},
        "json": {"topic": "sensors/{site}/{device}/state", "kind_field": "kind", "timestamp_field": "time"},
        "ttn": {"topic": "v3/+/devices/+/up", "kind_field": "/end_device_ids/application_ids/application_id"},
        "chirpstack": {"topic": f"application/{site}/device/+/event/up", "kind_field": "/deviceInfo/deviceProfileName"},
        "zigbee2mqtt": {"topic": f"zigbee2mqtt-{site}/{{kind}}/{{device}}", "ignore": ["linkquality"]},
        "influx-line": {"topic": f"telegraf/{site}/+"},
    }
    if fmt not in entries:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    return {"format": fmt, **entries[fmt]}
