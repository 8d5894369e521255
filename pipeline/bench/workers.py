"""The benchmark's child processes: a publisher, and a consumer (plain counter or edge node).

Why processes: publisher, receiver and the bench's own bookkeeping must not share one GIL,
or the figure would measure Python's thread switching instead of the node. They are
started with the ``spawn`` method (no fork of a process that runs paho threads) and talk
to the bench over a ``multiprocessing`` pipe; one shared counter (``progress``) lets the
publisher pace itself on what the consumer has handled, when a run asks for that.

Every loop here is bounded by a count and by a deadline the bench passes in.
"""

from __future__ import annotations

import queue
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import msgspec

from pipeline.bench.common import Deadline, rss_mb
from pipeline.bench.stream import load_stream
from pipeline.ingest.registry import NATIVE
from pipeline.mqtt import MqttClient
from pipeline.protocol import Reading, Topics

SETTLE_S = 0.5  # after SUBSCRIBE: a local broker answers in milliseconds
IDLE_S = 2.0  # the publisher is done and nothing arrived for this long: the rest is lost
POLL_S = 0.01  # the edge consumer's sampling period (both ends of the interval alike)
MARKER_TOPIC = "edgepipe-bench/marker"
_reading = msgspec.json.Decoder(Reading)


class SharedInt(Protocol):
    value: int


def _send(conn: Connection, kind: str, data: dict[str, Any]) -> None:
    conn.send((kind, data))


def _recv(conn: Connection, deadline: Deadline) -> tuple[str, dict[str, Any]]:
    """The next command from the bench, or ("stop", {}) when the deadline passes first."""
    if conn.poll(deadline.left()):
        kind, data = conn.recv()
        return kind, data
    return "stop", {}


# -- publisher ------------------------------------------------------------------------------


def publisher_main(url: str, progress: SharedInt, conn: Connection, lifetime_s: float) -> None:
    """Publish pre-encoded streams at QoS 0, as fast as possible, on request.

    Commands: ``("load", {"path"})`` reads a stream file (answers ``("loaded", ...)``);
    ``("publish", {"site", "window", "rate", "timeout"})`` publishes it under ``site`` and
    answers ``("published", stats)``; ``("stop", {})`` ends. With ``window`` set, publishing
    waits while more than ``window`` readings are ahead of ``progress`` (what the consumer has
    handled): a paced run that keeps the node's backlog below its load-shedding threshold.
    With ``rate`` it publishes that many readings per second: a stated load.
    """
    life = Deadline(lifetime_s)
    try:
        client = MqttClient(url)
        client.connect(timeout=10)
    except Exception as exc:  # noqa: BLE001 - reported to the bench, which fails the part
        _send(conn, "error", {"error": f"publisher: {type(exc).__name__}: {exc}"})
        return
    _send(conn, "connected", {})
    topics = Topics()
    devices: list[str] = []
    payloads: list[bytes] = []
    try:
        while not life.expired:
            kind, data = _recv(conn, life)
            if kind == "load":
                devices, payloads = load_stream(Path(data["path"]))
                _send(conn, "loaded", {"n": len(payloads)})
            elif kind == "publish":
                names, bodies = _in_format(
                    data.get("format", NATIVE), data["site"], devices, payloads, topics
                )
                stats = _publish(
                    client,
                    names,
                    bodies,
                    progress,
                    Deadline(data["timeout"]),
                    window=data.get("window"),
                    rate=data.get("rate"),
                )
                _send(conn, "published", stats)
            else:
                break
    except Exception as exc:  # noqa: BLE001 - reported to the bench, which fails the part
        _send(conn, "error", {"error": f"publisher: {type(exc).__name__}: {exc}"})
    finally:
        client.close(timeout=5)


def _in_format(
    fmt: str, site: str, devices: list[str], payloads: list[bytes], topics: Topics
) -> tuple[list[str], list[bytes]]:
    """The stream's topics and payloads as a fleet in ``fmt`` publishes them (before timing)."""
    if fmt == NATIVE:
        return [topics.reading(site, d) for d in devices], payloads
    from simulators.formats import foreign_message

    pairs = [foreign_message(fmt, site, _reading.decode(p)) for p in payloads]
    return [t for t, _ in pairs], [p for _, p in pairs]


def _publish(
    client: MqttClient,
    topics: list[str],
    payloads: list[bytes],
    progress: SharedInt,
    deadline: Deadline,
    *,
    window: int | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """Publish everything at QoS 0: flat out, or ``window``-paced, or at ``rate`` per second."""
    publish = client.publish
    started = time.perf_counter()
    sent = 0
    if window is None and rate is None:
        for topic, payload in zip(topics, payloads, strict=True):
            publish(topic, payload, 0)
        sent = len(payloads)
    else:
        step = 100 if rate is None else 20
        for i in range(0, len(payloads), step):
            if window is not None:
                while sent - progress.value > window and not deadline.expired:
                    time.sleep(0.002)
            if rate is not None:
                delay = started + sent / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(min(delay, deadline.left()))
            if deadline.expired:
                break
            for j in range(i, min(i + step, len(payloads))):
                publish(topics[j], payloads[j], 0)
                sent += 1
    queued = time.perf_counter() - started
    # The broker handles one connection's packets in order: once this QoS 1 marker is
    # acknowledged, every reading before it has reached the broker.
    client.publish(MARKER_TOPIC, b"", qos=1)
    flushed = client.flush(timeout=max(1.0, deadline.left()))
    total = time.perf_counter() - started
    return {"sent": sent, "queued_s": queued, "seconds": total, "flushed": flushed}


# -- consumers --------------------------------------------------------------------------------


def consumer_main(
    mode: str,
    url: str,
    site: str,
    state_dir: str,
    expected: int,
    progress: SharedInt,
    conn: Connection,
    timeout_s: float,
    protocol: str = "5",
    fmt: str = NATIVE,
) -> None:
    """Receive ``expected`` readings of ``site``; report the rate, then wait for commands.

    ``mode`` is ``count`` (a plain subscriber: the ceiling), ``edge`` (an ``EdgeNode`` as it
    runs, detection on) or ``edge-nodetect`` (the same node with a detector that does
    nothing); ``protocol`` the MQTT version of its connection; ``fmt`` the format the
    node's one ``[[ingest]]`` entry reads (as ``simulators.formats.ingest_entry`` writes it). Reports ``("ready", ...)``,
    then ``("measured", ...)``; then obeys ``drain`` (edge) and ``stop``, answering
    ``("stopped", ...)``.
    """
    try:
        if mode == "count":
            _count(url, site, expected, progress, conn, Deadline(timeout_s), protocol)
        else:
            _edge(
                mode,
                url,
                site,
                state_dir,
                expected,
                progress,
                conn,
                Deadline(timeout_s),
                protocol,
                fmt,
            )
    except Exception as exc:  # noqa: BLE001 - reported to the bench, which fails the part
        _send(conn, "error", {"error": f"{mode} consumer: {type(exc).__name__}: {exc}"})


def _count(
    url: str,
    site: str,
    expected: int,
    progress: SharedInt,
    conn: Connection,
    deadline: Deadline,
    protocol: str,
) -> None:
    client = MqttClient(url, protocol=protocol)
    client.connect(timeout=10)
    client.subscribe(Topics().readings(site), qos=1)
    time.sleep(SETTLE_S)
    _send(conn, "ready", {"rss_mb": rss_mb()})
    inbox = client.messages
    count, first, last = 0, 0.0, 0.0
    publisher_done = False
    clock = time.perf_counter
    while count < expected and not deadline.expired:
        try:
            inbox.get(timeout=0.05)
        except queue.Empty:
            if not publisher_done and conn.poll():
                publisher_done = conn.recv()[0] == "publisher_done"
            if publisher_done and clock() - max(last, first) > IDLE_S:
                break
            continue
        last = clock()
        if count == 0:
            first = last
        count += 1
        if count & 255 == 0:
            progress.value = count
    progress.value = count
    seconds = last - first
    _send(
        conn,
        "measured",
        {
            "received": count,
            "seconds": seconds,
            "readings_per_s": count / seconds if seconds > 0 else None,
            "rss_mb": rss_mb(),
            "timed_out": deadline.expired,
        },
    )
    _wait_for_stop(conn, deadline)
    client.close(timeout=2)
    _send(conn, "stopped", {})


def _wait_for_stop(conn: Connection, deadline: Deadline) -> None:
    while not deadline.expired and _recv(conn, deadline)[0] != "stop":
        pass


def _edge(
    mode: str,
    url: str,
    site: str,
    state_dir: str,
    expected: int,
    progress: SharedInt,
    conn: Connection,
    deadline: Deadline,
    protocol: str,
    fmt: str = NATIVE,
) -> None:
    from pipeline.config import IngestSettings, load_settings
    from pipeline.edge.node import EdgeNode
    from simulators.formats import ingest_entry

    settings = load_settings(
        overrides={
            "mqtt.url": url,
            "mqtt.protocol": protocol,
            "edge.site": site,
            "edge.state_dir": state_dir,
            "edge.detect": mode != "edge-nodetect",
        }
    )
    if fmt != NATIVE:
        entry = IngestSettings.model_validate(ingest_entry(fmt, site))
        settings = settings.model_copy(update={"ingest": [entry]})
    node = EdgeNode(settings)
    node.start(timeout=10)
    stop = threading.Event()
    errors: list[str] = []

    def run() -> None:
        try:
            node.run(stop)
        except Exception as exc:  # noqa: BLE001 - reported with the result
            errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=run, name="edge-node", daemon=True)
    thread.start()
    time.sleep(SETTLE_S)
    rss_before = rss_mb()
    _send(conn, "ready", {"rss_mb": rss_before})

    counters = node.counters
    first_t: float | None = None
    first_accepted = 0
    last_t, last_accepted = 0.0, 0
    first_cpu = last_cpu = 0.0  # this process's CPU time (node, paho and this loop) at both ends
    publisher_done = False
    scale_max, backlog_max = 1.0, 0
    clock = time.perf_counter
    while thread.is_alive() and not deadline.expired:
        time.sleep(POLL_S)
        now = clock()
        handled, accepted = counters.received, counters.accepted
        progress.value = handled
        if accepted != last_accepted:
            cpu = time.process_time()
            if first_t is None:
                first_t, first_accepted, first_cpu = now, accepted, cpu
            last_t, last_accepted, last_cpu = now, accepted, cpu
        scale_max = max(scale_max, node.selector.scale)
        backlog_max = max(backlog_max, node.client.messages.qsize())
        if handled >= expected:
            break
        if not publisher_done and conn.poll():
            publisher_done = conn.recv()[0] == "publisher_done"
        if publisher_done and first_t is not None and now - last_t > IDLE_S:
            break
    seconds = last_t - first_t if first_t is not None else 0.0
    _send(
        conn,
        "measured",
        {
            "received": counters.received,
            "accepted": counters.accepted,
            "measured_readings": last_accepted - first_accepted,
            "seconds": seconds,
            "readings_per_s": (last_accepted - first_accepted) / seconds if seconds > 0 else None,
            "readings_per_cpu_s": (
                (last_accepted - first_accepted) / (last_cpu - first_cpu)
                if last_cpu > first_cpu
                else None
            ),
            "rss_mb_before": rss_before,
            "rss_mb": rss_mb(),
            "selection_scale_max": scale_max,
            "backlog_max": backlog_max,
            "duplicates": counters.duplicates,
            "dead_letters": sum(counters.dead_letters.values()),
            "late": counters.late,
            "timed_out": deadline.expired,
            "errors": errors,
        },
    )
    while not deadline.expired:
        kind, _ = _recv(conn, deadline)
        if kind == "drain":
            node.request_drain()
            _send(conn, "draining", {"drained": node.wait_drained(max(1.0, min(30.0, deadline.left())))})
        elif kind == "stop":
            break
    stop.set()
    thread.join(timeout=max(5.0, min(30.0, deadline.left())))
    _send(
        conn,
        "stopped",
        {
            "readings_shipped": counters.readings_shipped,
            "batches_shipped": counters.batches_shipped,
            "aggregates": counters.aggregates,
            "alerts": dict(counters.alerts),
            "points_in": sum(node.points_in.values()),
            "points_selected": sum(node.points_selected.values()),
            "stopped_cleanly": not thread.is_alive(),
            "errors": errors,
        },
    )
