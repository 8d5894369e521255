"""``edgepipe alerts``: follow the alert topics and print each alert on one readable line."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from pipeline.config import Settings
from pipeline.errors import ProtocolError
from pipeline.mqtt import MqttClient
from pipeline.protocol import Alert, Topics, decode

SEVERITIES = ("info", "warning", "critical")


def format_alert(alert: Alert) -> str:
    """One line: time, site/device, metric=value, severity, state, score (once), reason.

    The model version stays in ``--json``: the same on every line, it only pushed the reason
    off the screen.
    """
    d = alert.data
    return (
        f"{alert.time} {d.site}/{d.device} {d.metric}={d.value:g} {d.severity.upper():<8} "
        f"{d.state:<7} score {d.score:.2f}  {d.reason}"
    )


def tail_alerts(
    settings: Settings,
    *,
    site: str = "+",
    severity: str | None = None,
    count: int | None = None,
    timeout: float | None = None,
    as_json: bool = False,
    stop: threading.Event | None = None,
    echo: Callable[[str], object] = print,
) -> int:
    """Print alerts until ``count`` arrived, ``timeout`` passed or ``stop`` is set."""
    stop = stop or threading.Event()
    floor = SEVERITIES.index(severity) if severity else 0
    client = MqttClient(settings.mqtt.url, protocol=settings.mqtt.protocol_for("client"), tls_ca=settings.mqtt.tls_ca)
    client.connect()
    client.subscribe(Topics(settings.mqtt.topic_root).alerts(site), qos=1)
    deadline = time.monotonic() + timeout if timeout is not None else None
    shown = 0
    try:
        while not stop.is_set() and (count is None or shown < count):
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                message = client.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                alert = decode(message.payload, Alert)
            except ProtocolError as exc:
                echo(f"(unreadable alert on {message.topic}: {exc})")
                continue
            level = alert.data.severity
            if level in SEVERITIES and SEVERITIES.index(level) < floor:
                continue
            echo(message.payload.decode() if as_json else format_alert(alert))
            shown += 1
    finally:
        client.close()
    return shown
