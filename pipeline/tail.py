"""``edgepipe alerts`` and ``edgepipe deadletters``: follow their topics, one readable line each."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection, Generator
from contextlib import closing
from datetime import UTC, datetime

from pipeline.config import Settings
from pipeline.errors import ProtocolError
from pipeline.mqtt import Message, MqttClient
from pipeline.protocol import Alert, DeadLetter, Topics, decode

SEVERITIES = ("info", "warning", "critical")
DEAD_LETTER_PREVIEW_CHARS = 60


def format_alert(alert: Alert) -> str:
    """One line: time, site/device (and who raised it, unless the edge), metric=value,
    severity, state, score (once), reason.

    The model version stays in ``--json``: the same on every line, it only pushed the reason
    off the screen.
    """
    d = alert.data
    raised_by = "" if d.source == "edge" else f" ({d.source})"  # the analyst's, told apart
    return (
        f"{alert.time} {d.site}/{d.device}{raised_by} {d.metric}={d.value:g} "
        f"{d.severity.upper():<8} {d.state:<7} score {d.score:.2f}  {d.reason}"
    )


def alert_wanted(alert: Alert, severity: str | None, source: str | None) -> bool:
    """At or above ``severity`` (an unknown level passes) and raised by ``source``, if given.

    >>> from pipeline.protocol.messages import AlertData
    >>> data = AlertData(1, "a", "farm", "d", "k", "m", "raised", "warning", 0.9, 1.0, 0, "r", "v", "cloud")
    >>> a = Alert("a", "s", "t", "2026-01-01T00:00:00Z", "d", data)
    >>> alert_wanted(a, "info", "cloud"), alert_wanted(a, "critical", None), alert_wanted(a, None, "edge")
    (True, False, False)
    """
    level = alert.data.severity
    if severity and level in SEVERITIES and SEVERITIES.index(level) < SEVERITIES.index(severity):
        return False
    return source is None or alert.data.source == source


def follow(
    settings: Settings, topic_filter: str, *, timeout: float | None, stop: threading.Event
) -> Generator[Message, None, None]:
    """Messages on ``topic_filter`` until ``timeout`` passes or ``stop`` is set (then closes)."""
    client = MqttClient(settings.mqtt.url, protocol=settings.mqtt.protocol_for("client"), tls_ca=settings.mqtt.tls_ca)
    client.connect()
    client.subscribe(topic_filter, qos=1)
    deadline = time.monotonic() + timeout if timeout is not None else None
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                yield client.messages.get(timeout=0.1)
            except queue.Empty:
                continue
    finally:
        client.close()


def tail_alerts(
    settings: Settings,
    *,
    site: str = "+",
    severity: str | None = None,
    source: str | None = None,
    count: int | None = None,
    timeout: float | None = None,
    as_json: bool = False,
    stop: threading.Event | None = None,
    echo: Callable[[str], object] = print,
) -> int:
    """Print alerts until ``count`` arrived, ``timeout`` passed or ``stop`` is set; ``source``
    keeps only the edge's or only the fleet analyst's (both share the alert topics)."""
    stop = stop or threading.Event()
    shown = 0
    if count is not None and count <= 0:
        return shown
    alerts = Topics(settings.mqtt.topic_root).alerts(site)
    with closing(follow(settings, alerts, timeout=timeout, stop=stop)) as messages:
        for message in messages:
            try:
                alert = decode(message.payload, Alert)
            except ProtocolError as exc:
                echo(f"(unreadable alert on {message.topic}: {exc})")
                continue
            if not alert_wanted(alert, severity, source):
                continue
            echo(message.payload.decode() if as_json else format_alert(alert))
            shown += 1
            if count is not None and shown >= count:
                break
    return shown


# -- ``edgepipe deadletters`` ------------------------------------------------------------------


def format_dead_letter(letter: DeadLetter, topics: Topics = Topics()) -> str:
    """One readable line: when, why, which device, how big, what was wrong, how it began."""
    when = datetime.fromtimestamp(letter.ts / 1000, UTC).isoformat(timespec="milliseconds")
    try:
        where = f"{letter.site}/{topics.parse(letter.topic).subject}"
    except ProtocolError:
        where = f"{letter.site} on {letter.topic!r}"  # the topic itself was the problem
    preview = letter.payload[:DEAD_LETTER_PREVIEW_CHARS].replace("\n", "\\n")
    return f"{when} ✗ {letter.reason:<14} {where} {letter.size} B: {letter.detail} | {preview}"


def tail_dead_letters(
    settings: Settings,
    *,
    site: str = "+",
    reasons: Collection[str] = (),
    count: int | None = None,
    timeout: float | None = None,
    as_json: bool = False,
    stop: threading.Event | None = None,
    echo: Callable[[str], object] = print,
) -> int:
    """Print dead letters (only ``reasons``, when given) until ``count``, ``timeout`` or ``stop``."""
    stop = stop or threading.Event()
    topics = Topics(settings.mqtt.topic_root)
    shown = 0
    if count is not None and count <= 0:
        return shown
    with closing(follow(settings, topics.deadletter(site), timeout=timeout, stop=stop)) as messages:
        for message in messages:
            try:
                letter = decode(message.payload, DeadLetter)
            except ProtocolError as exc:
                echo(f"(unreadable dead letter on {message.topic}: {exc})")
                continue
            if reasons and letter.reason not in reasons:
                continue
            echo(message.payload.decode() if as_json else format_dead_letter(letter, topics))
            shown += 1
            if count is not None and shown >= count:
                break
    return shown
