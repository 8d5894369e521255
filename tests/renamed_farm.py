"""The simulated farm with its valves and probes renamed, as a user's own kinds would be.

Why: the leak alerts must follow ``[[links]]``, not the built-in names. The farm simulator
publishes ``irrigation_valve`` (``flow``) and ``soil_probe`` (``moisture``, ``soil_temp``);
``Renaming`` republishes every reading of those as ``valve_v2`` (``water_flow``) and
``probe_v2`` (``vwc``, ``soil_temp``), device ids renamed alike, values and times unchanged.
``KINDS_V2`` defines the two kinds with the built-ins' units, steps and ranges, and
``LINK_V2`` links them. The farm is the one of tests/integration/test_fleet_alerts.py (a
fixed site and seed, leaks only), whose valves leak below half their flow after the
learning day.

Importable from every test folder as ``renamed_farm`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeline.protocol import Reading, Topics, decode, encode
from pipeline.protocol.catalog import BUILTIN
from pipeline.protocol.topics import TopicKind
from simulators import SimOptions
from simulators.output import Publisher

SITE = "farm-fleetalerts"
SEED = 7
START_MS = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a Monday
DAYS = 2.0
LEAK_RATE = 0.15  # irrigation leaks per valve per simulated hour

KINDS = {"irrigation_valve": "valve_v2", "soil_probe": "probe_v2"}
METRICS = {("irrigation_valve", "flow"): "water_flow", ("soil_probe", "moisture"): "vwc"}
LINK_V2 = {"relation": "waters", "source": "valve_v2.water_flow", "target": "probe_v2.vwc"}


def _kind_v2(builtin: str) -> dict[str, Any]:
    kind = BUILTIN.kinds[builtin]
    metrics = {
        METRICS.get((builtin, name), name): {
            "unit": m.unit,
            "resolution": m.resolution,
            "low": m.low,
            "high": m.high,
        }
        for name, m in kind.metrics.items()
    }
    return {"domain": kind.domain, "metrics": metrics}


# [kinds.valve_v2] and [kinds.probe_v2]: the built-ins' metrics under the new names
KINDS_V2 = {new: _kind_v2(old) for old, new in KINDS.items()}


def toml_v2(link: bool = True) -> str:
    """A configuration file of ``[kinds.valve_v2]``, ``[kinds.probe_v2]`` and (``link``) their ``[[links]]``."""
    lines = (
        [
            f'[[links]]\nrelation = "{LINK_V2["relation"]}"\nsource = "{LINK_V2["source"]}"\ntarget = "{LINK_V2["target"]}"\n'
        ]
        if link
        else []
    )
    for name, kind in KINDS_V2.items():
        lines.append(f'[kinds.{name}]\ndomain = "{kind["domain"]}"\n')
        for metric, spec in kind["metrics"].items():
            lines.append(f"[kinds.{name}.metrics.{metric}]")
            lines += [
                f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"'
                for key, value in spec.items()
            ]
            lines.append("")
    return "\n".join(lines)


def farm_options(seed: int = SEED) -> SimOptions:
    """A farm block of 10 devices (two zones of probes and a valve), one reading a minute, leaks only."""
    return SimOptions(
        sites=(SITE,),
        devices_per_site=10,
        rate=1 / 60,
        duration=DAYS * 86_400,
        seed=seed,
        qos=1,
        start_ms=START_MS,
        anomaly_rate=0.0,
        anomaly_rates={"irrigation_leak": LEAK_RATE},
    )


def renamed(device: str) -> str:
    """``irrigation_valve-0002`` -> ``valve_v2-0002``; other devices keep their id."""
    kind, dash, number = device.rpartition("-")
    return f"{KINDS[kind]}{dash}{number}" if kind in KINDS else device


def rename(reading: Reading) -> Reading:
    """The reading as a device of the renamed kind would send it (other kinds unchanged)."""
    if reading.kind not in KINDS:
        return reading
    metrics = {METRICS.get((reading.kind, m), m): v for m, v in reading.metrics.items()}
    return msgspec.structs.replace(
        reading, device=renamed(reading.device), kind=KINDS[reading.kind], metrics=metrics
    )


class Renaming:
    """A simulator ``Publisher`` that renames the farm's valves and probes on the way to ``inner``."""

    def __init__(self, inner: Publisher, topics: Topics | None = None) -> None:
        self.inner = inner
        self.topics = topics or Topics()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        parsed = self.topics.parse(topic)
        if parsed.kind is not TopicKind.READING:  # labels: as they are
            return self.inner.publish(topic, payload, qos, retain)
        reading = rename(decode(payload, Reading))
        return self.inner.publish(
            self.topics.reading(parsed.site, reading.device), encode(reading), qos, retain
        )
