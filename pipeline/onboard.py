"""``edgepipe discover``: listen to a broker for a bounded time, then propose the settings.

The inference is pure (``pipeline/ingest/discover.py``); this module only listens and
reports. It says "listening" on stderr once its subscription is in place: the SUBSCRIBE and a
QoS 1 probe go out on one connection, and a broker handles a connection's packets in order,
so the probe's PUBACK means the subscription is active (a test waits for that line before
it publishes).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from pipeline.config import Settings, catalog_of
from pipeline.errors import ConfigError
from pipeline.ingest.discover import Check, Discovery, Sample, discover, render, summary, verify
from pipeline.mqtt import BrokerUnavailable, Message, MqttClient

PROBE_TIMEOUT_S = 10.0
POLL_S = 0.1
MAX_KEPT_PAYLOAD_BYTES = 1_048_576  # the largest max_bytes an [[ingest]] entry may set
MAX_HEARD_BYTES = 256 * 2**20  # listening stops here, whatever --max-messages says


@dataclass(slots=True)
class Outcome:
    """What one listening produced: the proposal (empty when there is nothing to propose)."""

    discovery: Discovery
    check: Check | None
    text: str
    lines: list[str]


class NothingHeard(Exception):
    """No message in the whole listening time, or none that could be classified."""


def listen(
    settings: Settings,
    topic_filter: str,
    seconds: float,
    max_messages: int,
    stop: threading.Event,
    announce: Callable[[str], object],
) -> list[Sample]:
    """Messages on ``topic_filter`` for ``seconds``, until ``max_messages`` (or
    ``MAX_HEARD_BYTES`` of payloads), or until ``stop`` (Ctrl-C: the proposal is then made
    from what was heard). A payload is kept up to ``MAX_KEPT_PAYLOAD_BYTES`` and one byte
    more, so that one too large for the adapters is still known to be."""
    client = MqttClient(
        settings.mqtt.url,
        protocol=settings.mqtt.protocol_for("client"),
        tls_ca=settings.mqtt.tls_ca,
    )
    client.connect()
    probe = f"{settings.mqtt.topic_root}/discover/{uuid.uuid4().hex[:12]}"
    samples: list[Sample] = []
    heard_bytes = 0

    def keep(message: Message) -> None:
        nonlocal heard_bytes
        if message.topic == probe:
            return
        payload = message.payload[: MAX_KEPT_PAYLOAD_BYTES + 1]
        heard_bytes += len(payload)
        samples.append(Sample(message.topic, payload, time.time_ns() // 1_000_000, message.retain))

    def room() -> bool:
        return len(samples) < max_messages and heard_bytes < MAX_HEARD_BYTES

    try:
        client.subscribe(topic_filter, qos=1)
        delivery = client.publish_tracked(probe, b"", qos=1)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while not delivery.acknowledged and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.01)
        if stop.is_set():
            return samples
        if not delivery.acknowledged:
            raise BrokerUnavailable(
                f"{client.broker} did not confirm the subscription within {PROBE_TIMEOUT_S:g} s"
            )
        announce(f"listening on {client.broker} to {topic_filter!r} for {seconds:g} s")
        end = time.monotonic() + seconds
        while not stop.is_set() and room() and time.monotonic() < end:
            try:
                keep(client.messages.get(timeout=POLL_S))
            except queue.Empty:
                continue
        while stop.is_set() and room():  # what had arrived when stopped
            try:
                keep(client.messages.get_nowait())
            except queue.Empty:
                break
        if len(samples) >= max_messages:
            announce(f"stopped at {max_messages} messages (--max-messages)")
        elif heard_bytes >= MAX_HEARD_BYTES:
            announce(f"stopped at {MAX_HEARD_BYTES // 2**20} MiB of payloads")
        elif stop.is_set():
            announce(f"stopped early (signal): {len(samples)} messages heard")
    finally:
        client.close(1.0)
    return samples


def propose(settings: Settings, samples: list[Sample], source: str, all_kinds: bool) -> Outcome:
    """The proposal from ``samples``, checked against them; NothingHeard when there is none."""
    root = settings.mqtt.topic_root
    catalog = catalog_of(settings)
    found = discover(samples, catalog, root)
    if not found.entries:
        raise NothingHeard("; ".join(summary(found, None)[1:]) or "nothing to classify")
    text = render(found, source, all_kinds)
    try:
        check: Check | None = verify(text, samples, root, catalog)
    except (ValidationError, ConfigError) as exc:  # a proposal config check refuses: our bug
        lines = summary(found, None, all_kinds)
        first = " ".join(str(exc).split())[:300]
        lines.append(
            f"check: the proposal does not pass config check as it stands (a bug: please report it): {first}"
        )
        return Outcome(found, None, text, lines)
    return Outcome(found, check, text, summary(found, check, all_kinds))
