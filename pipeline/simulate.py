"""``edgepipe sim``: the simulators wired to a real MQTT connection.

The simulators are pure (they publish through any object with ``publish``); this module owns
the connection and adds what only the connection knows: how many QoS 1 publishes the broker
acknowledged. Options are checked before connecting, so that a bad value is reported at once
and not after a broker time-out.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import simulators
from pipeline.config import Settings, catalog_of
from pipeline.errors import ConfigError
from pipeline.mqtt import BrokerUnavailable, MqttClient
from pipeline.protocol.topics import is_valid_id
from simulators.csv_table import CsvTable

BROKER_HINT = (
    "start one (e.g. /usr/sbin/mosquitto -p 1883), pass --broker, or only write the stream"
    " with --out FILE"
)
FLUSH_TIMEOUT_S = 30.0  # longest wait for the broker's last acknowledgements


def run_sim(
    settings: Settings,
    *,
    publish: bool,
    duration: float,
    start_ms: int | None = None,
    out: TextIO | None = None,
    labels_out: TextIO | None = None,
    replay: str | None = None,
    replay_site: str = "replay",
    replay_device: str = "replay-1",
    replay_kind: str | None = None,
    stop: threading.Event | None = None,
    realtime: bool = True,
    announce: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """Run the simulated fleet (or a CSV replay) and return its report as a dict.

    A replay's ``replay_kind`` is a kind of the settings' catalogue (built-in or
    ``[kinds.NAME]``); without it the CSV is one ``value`` column. Without ``start_ms`` the
    replay is shifted to end on the wall clock as its last row is published (at speed 1:
    its first row is now), since edges refuse readings from the future.

    ``announce``, when given, gets one line on what the run will cover (simulated start and
    end, speed) and one on the broker it connects to, before anything is published.
    """
    sim = settings.sim
    now_ms = time.time_ns() // 1_000_000
    options: simulators.SimOptions | None = None
    kind = None
    replay_start_ms = start_ms
    replay_line = ""
    if replay is None:
        options = simulators.SimOptions(
            sites=tuple(sim.sites),
            devices_per_site=sim.devices_per_site,
            rate=sim.rate,
            duration=duration,
            speed=sim.speed,
            seed=sim.seed,
            qos=sim.qos,
            bad_rate=sim.bad_rate,
            anomaly_rate=sim.anomaly_rate,
            start_ms=start_ms,
            topic_root=settings.mqtt.topic_root,
            realtime=realtime,
            format=sim.format,
            inject=tuple(simulators.parse_inject(text) for text in sim.inject),
        )
        if start_ms is None:
            # Start early enough that no reading is ever ahead of the wall clock,
            # even at --speed > 1 (edges refuse readings from the future).
            options = dataclasses.replace(
                options, start_ms=simulators.default_start_ms(options, now_ms)
            )
    else:
        for key, given in (("site", replay_site), ("device", replay_device)):
            if not is_valid_id(given):
                raise ConfigError(f"sim.{key}", given, "an id of letters, digits, _ and -")
        if replay_kind is not None:
            catalog = catalog_of(settings)
            kind = catalog.kinds.get(replay_kind)
            if kind is None:
                known = ", ".join(sorted(catalog.kinds))
                raise ConfigError(
                    "sim.kind",
                    replay_kind,
                    f"not a kind of the catalogue (built-in or [kinds.NAME] of --config); known: {known}",
                )
        try:
            table = CsvTable.open(replay, kind)
            span = table.span()  # a bad row stops the run now, not halfway through
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("sim.replay", replay, f"not a readable text CSV ({exc})") from None
        if span.rows == 0:  # exit 0 having published nothing would read as a replay done
            raise ConfigError("sim.replay", replay, "no rows after the header: nothing to replay")
        if start_ms is None:
            # the replay takes span / speed wall seconds: start that much less than the span
            # in the past, and the last row is published when its time is the wall clock's
            behind_s = span.seconds * (1 - 1 / sim.speed if realtime else 1)
            replay_start_ms = now_ms - round(behind_s * 1000)
        replay_line = (
            f"replaying {replay} ({table.describe()}, {span.rows} rows, {span.labelled} labelled)"
            f" at {sim.speed:g}x its own clock, first row at {_iso(replay_start_ms or now_ms)}"
        )
    if announce is not None:
        announce(
            replay_line if options is None else _span_line(options, start_ms, now_ms, duration)
        )
        if options is not None and options.bad_rate > 0 and options.format != "edgepipe":
            # else the summary's bad_by_kind and the edge's dead-letter reasons look unrelated
            announce(
                f"malformed payloads go out in edgepipe's format on the {options.format} topics"
                f" (as a misconfigured device would send them): the {options.format} adapter"
                " refuses them by its own reasons (mostly missing_field), not by their bad_by_kind"
            )
    client: MqttClient | None = None
    if publish:
        if announce is not None:
            announce(f"publishing to {settings.mqtt.url} at QoS {sim.qos} (labels at QoS 1)")
        client = MqttClient(
            settings.mqtt.url,
            protocol=settings.mqtt.protocol_for("device"),
            keepalive=settings.mqtt.keepalive,
            tls_ca=settings.mqtt.tls_ca,
            max_payload=settings.mqtt.max_payload,
            max_inflight=1000,
        )
        try:
            client.connect()
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"{exc}; {BROKER_HINT}") from None
    try:
        if options is None:
            assert replay is not None
            report = simulators.replay(
                replay,
                site=replay_site,
                device=replay_device,
                kind=kind,
                speed=sim.speed if realtime else 0.0,
                publisher=client,
                out=out,
                labels_out=labels_out,
                qos=sim.qos,
                topic_root=settings.mqtt.topic_root,
                realtime=realtime,
                stop=stop,
                start_ms=replay_start_ms,
            )
        else:
            report = simulators.run(options, client, out, labels_out, stop=stop)
        if client is not None:
            client.flush(timeout=FLUSH_TIMEOUT_S)
            _count_acknowledged(report, client, sim.qos)
    finally:
        if client is not None:
            client.close()
    return report.to_dict()


def _count_acknowledged(report: simulators.SimReport, client: MqttClient, qos: int) -> None:
    """Split the client's acknowledged publishes into device payloads and labels.

    The client counts every PUBACK; labels (always QoS 1) are tracked one by one, so what
    is left is the payloads'. At QoS 0 payloads get no acknowledgement: None, not 0.
    """
    labels = sum(1 for receipt in report.label_receipts if receipt.acknowledged)
    report.labels_acknowledged = labels
    report.payloads_acknowledged = max(0, client.stats.acknowledged - labels) if qos > 0 else None


def _span_line(
    options: simulators.SimOptions, start_ms: int | None, now_ms: int, duration: float
) -> str:
    """What simulated time the run covers, so that time stamps hours old are no surprise."""
    assert options.start_ms is not None
    end_ms = options.start_ms + int(options.sim_seconds * 1000)
    line = (
        f"simulated time {_iso(options.start_ms)} to {_iso(end_ms)}: {options.sim_seconds:g} s"
        f" in {duration:g} wall s at --speed {options.speed:g}"
    )
    behind_s = (now_ms - options.start_ms) / 1000
    if start_ms is None and behind_s >= 60:
        line += (
            f"; it starts {_ago(behind_s)} before now and reaches the wall clock at the end"
            " (edges refuse readings from the future; --start sets it)"
        )
    return line


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def _ago(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"
