"""Device simulators: farm, retail and city fleets with anomalies and ground-truth labels.

``run(SimOptions(...), publisher)`` simulates and publishes a fleet; ``replay(...)`` publishes
a recorded CSV as one device. Publishing goes through any ``Publisher`` (``MqttClient`` or a
test fake): nothing here imports MQTT.
"""

from __future__ import annotations

from simulators.anomalies import ANOMALIES, DOMAIN_EVENTS
from simulators.bad import BAD_KINDS, EXPECTED_REASONS
from simulators.devices import GENERIC
from simulators.fleet import (
    Inject,
    SimOptions,
    default_start_ms,
    parse_anomaly_rates,
    parse_inject,
    run,
)
from simulators.output import Publisher, SimReport
from simulators.replay import nab_windows, replay

__all__ = [
    "ANOMALIES",
    "BAD_KINDS",
    "DOMAIN_EVENTS",
    "EXPECTED_REASONS",
    "GENERIC",
    "Inject",
    "Publisher",
    "SimOptions",
    "SimReport",
    "default_start_ms",
    "nab_windows",
    "parse_anomaly_rates",
    "parse_inject",
    "replay",
    "run",
]
