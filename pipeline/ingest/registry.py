"""Every ingest format by its configuration name (``[[ingest]] format = ...``).

A new format is one module with one adapter class, and one line here; a test checks that
the registry and the formats the configuration accepts are the same set.
"""

from __future__ import annotations

from pipeline.ingest.base import MappedAdapter
from pipeline.ingest.chirpstack import ChirpStackAdapter
from pipeline.ingest.custom_json import JsonAdapter
from pipeline.ingest.influx_line import InfluxLineAdapter
from pipeline.ingest.ttn import TtnAdapter
from pipeline.ingest.zigbee2mqtt import Zigbee2MqttAdapter

# "edgepipe" is not a MappedAdapter: the node takes native readings on its direct path
# (pipeline/ingest/edgepipe.py says why); the router knows it by name.
ADAPTERS: dict[str, type[MappedAdapter]] = {
    "json": JsonAdapter,
    "ttn": TtnAdapter,
    "chirpstack": ChirpStackAdapter,
    "zigbee2mqtt": Zigbee2MqttAdapter,
    "influx-line": InfluxLineAdapter,
}
NATIVE = "edgepipe"
