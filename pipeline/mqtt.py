"""The one MQTT client of edgepipe: a thin wrapper over paho-mqtt 2.x.

Why a wrapper: paho's defaults are wrong for us in ways that lose data silently (the
deprecated callback API, sessions that end at disconnect in MQTT 5, an exception in a
callback that stops all receiving, oversize publishes that wedge the connection; see
../shared/RELIABILITY.md). This module fixes each once:

- callback API VERSION2, MQTT 5 by default (3.1.1 selectable), session expiry when a
  session must survive a disconnect;
- callbacks only hand work to a queue, and are wrapped so that no exception can kill
  paho's network thread;
- automatic reconnect with backoff, and every subscription made again on reconnect;
- a publish larger than the broker's limit is refused here, before paho sees it;
- QoS 1 publishes are tracked so that ``flush`` can wait for their PUBACKs;
- publishes stay in order across a reconnect: paho sends a message published between its
  reconnect and the CONNACK *before* the backlog it resends at the CONNACK, which an edge
  that drops readings not newer than the device's last would count as duplicates (found by
  the 60 s broker outage test, tests/reliability/test_broker_outage.py). While disconnected,
  publishes wait here, in order, and go to paho once its own backlog is on the wire.

Nothing else in the project imports paho.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pipeline.errors import ConfigError, EdgepipeError

log = logging.getLogger(__name__)

BROKER_URL_HELP = "expected mqtt://[user:pass@]host:port or mqtts://[user:pass@]host:port"


class BrokerUnavailable(EdgepipeError):
    """The broker could not be reached or refused the connection."""


class PayloadTooLarge(EdgepipeError):
    """A publish over the broker's message size limit: sending it would wedge the link."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str, key: str = "mqtt.url") -> BrokerUrl:
    """Parse ``mqtt://[user:pass@]host:port`` (``mqtts://`` for TLS); ``key`` names the setting."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(key, url, BROKER_URL_HELP) from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(key, url, BROKER_URL_HELP)
    tls = parts.scheme == "mqtts"
    return BrokerUrl(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@dataclass(frozen=True, slots=True)
class Message:
    """An inbound message, as handed to the consumer's queue."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int


@dataclass(frozen=True, slots=True)
class Will:
    """Last will: published by the broker when this client vanishes without a clean disconnect."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass
class ClientStats:
    published: int = 0
    acknowledged: int = 0  # QoS >= 1 publishes whose PUBACK arrived
    received: int = 0
    callback_errors: int = 0
    disconnects: int = 0


@dataclass
class _Subscription:
    topic_filter: str
    qos: int


@dataclass
class _State:
    connected: threading.Event = field(default_factory=threading.Event)
    last_error: str = ""


class _BufferedClient(paho.Client):
    """paho's client with a read buffer: one ``recv`` for many packets, not three per packet.

    Why: paho reads a packet as a 1-byte ``recv`` for the command, one per remaining-length
    byte, then the body, and goes back to ``select`` between packets when it tracks no
    messages. At 20,000 small readings a second that is most of the edge's receiving cost.
    Here ``_sock_recv`` serves paho from a 64 KiB buffer filled by one ``recv``, and
    ``loop_read`` goes on until the buffer is empty (``select`` cannot see bytes already
    read). paho keeps its own partial-packet state, so a packet split across reads is fine.
    Only these two methods are replaced; if paho ever renames them this class is inert.
    """

    _READ_SIZE = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self.connect_error: OSError | None = None  # the last attempt's socket error, if it failed

    def reconnect(self) -> MQTTErrorCode:
        """paho's, keeping a failed attempt's socket error: its retry loop swallows it, and
        "no answer" after the connect timeout told a user nothing of a refused port."""
        self.connect_error = None
        try:
            return super().reconnect()
        except OSError as exc:
            self.connect_error = exc
            raise

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(max(bufsize, self._READ_SIZE))
            if len(data) <= bufsize:
                return data  # also b"" (closed), which paho must see as it is
            self._rbuf, self._rpos = data, 0
        end = self._rpos + bufsize
        chunk = self._rbuf[self._rpos : end]
        self._rpos = min(end, len(self._rbuf))
        return chunk

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf) and self._sock is not None:
            rc = super().loop_read(max_packets)
        return rc

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0  # bytes of a dead connection must not feed the next
        super()._sock_close()


class MqttClient:
    """One connection to a broker.

    Parameters
    ----------
    url
        ``mqtt://[user:pass@]host:port`` or ``mqtts://...`` (TLS).
    client_id
        Fixed id for a durable session; empty lets the broker choose (clean session only).
    protocol
        ``"5"`` (default) or ``"3.1.1"``.
    session_expiry
        Seconds the broker keeps the session after a disconnect. 0 means a clean session;
        a durable subscriber (edge node, cloud worker) sets it so that QoS 1 messages
        published while it is away are queued for it.
    manual_ack
        Received QoS 1 messages are acknowledged only by :meth:`ack`, after they are durable.
    max_payload
        Publishes larger than this raise :class:`PayloadTooLarge` (the broker's
        ``message_size_limit`` minus headroom for the topic and header).
    max_pending
        QoS >= 1 publishes allowed to wait for their PUBACK; ``publish`` blocks beyond it
        and raises :class:`BrokerUnavailable` after ``pending_timeout`` seconds without room.
    """

    def __init__(
        self,
        url: str | BrokerUrl,
        *,
        client_id: str = "",
        protocol: str = "5",
        keepalive: int = 30,
        session_expiry: int = 0,
        will: Will | None = None,
        tls_ca: str | None = None,
        manual_ack: bool = False,
        max_inflight: int = 100,
        max_payload: int = 65536 - 1024,
        reconnect_delay: tuple[int, int] = (1, 4),
        inbox: queue.Queue[Message] | None = None,
        max_pending: int = 20_000,
        pending_timeout: float = 60.0,
    ) -> None:
        self.broker = url if isinstance(url, BrokerUrl) else parse_broker_url(url)
        if protocol not in ("5", "3.1.1"):
            raise ConfigError("mqtt.protocol", protocol, "one of '5', '3.1.1'")
        self._v5 = protocol == "5"
        self._client_id = client_id
        self._keepalive = keepalive
        self._session_expiry = session_expiry
        self._max_payload = max_payload
        self._max_pending = max_pending
        self._pending_timeout = pending_timeout
        self.messages: queue.Queue[Message] = inbox if inbox is not None else queue.Queue()
        self.stats = ClientStats()
        self._subscriptions: list[_Subscription] = []
        self._state = _State()
        self._inflight: deque[paho.MQTTMessageInfo] = deque()
        self._inflight_lock = threading.Lock()
        self._held: deque[tuple[str, bytes, int, bool, Delivery]] = deque()  # while disconnected
        self._held_lock = threading.Lock()
        self._client = _BufferedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._v5 else session_expiry == 0,
            manual_ack=manual_ack,
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(*reconnect_delay)
        self._client.suppress_exceptions = True  # a bug in a callback must not stop receiving
        if self.broker.username:
            self._client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            try:
                self._client.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError) as exc:  # a CA file missing or not a certificate
                raise ConfigError("mqtt.tls_ca", tls_ca, f"cannot be used: {exc}") from None
        if will is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    # -- lifecycle ------------------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and start the network thread; raise :class:`BrokerUnavailable` on failure."""
        properties = None
        clean_start: Any = paho.MQTT_CLEAN_START_FIRST_ONLY
        if self._v5:
            clean_start = self._session_expiry == 0
            if self._session_expiry:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = self._session_expiry
        try:
            self._client.connect_async(
                self.broker.host,
                self.broker.port,
                keepalive=self._keepalive,
                clean_start=clean_start,
                properties=properties,
            )
        except (OSError, ValueError) as exc:
            raise BrokerUnavailable(f"{self.broker}: {exc}") from None
        self._client.loop_start()
        if not self._state.connected.wait(timeout):
            self._client.loop_stop()
            error = self._client.connect_error
            reason = self._state.last_error or (error and (error.strerror or str(error))) or "no answer"
            raise BrokerUnavailable(f"cannot connect to {self.broker} within {timeout:g} s: {reason}")

    def close(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for outstanding PUBACKs, then disconnect cleanly (no last will)."""
        self.flush(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MqttClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._state.connected.is_set()

    @property
    def network_thread_alive(self) -> bool:
        """Whether paho's network thread runs (``is_connected()`` does not tell: M17)."""
        thread = getattr(self._client, "_thread", None)
        return thread is not None and thread.is_alive()

    # -- publish --------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int:
        """Queue a publish; return its message id. Never blocks on the network.

        While disconnected, paho keeps QoS >= 1 messages in memory and sends them after the
        reconnect; they are not durable across a crash of this process.
        """
        return self.publish_tracked(topic, payload, qos, retain).mid

    def publish_tracked(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Delivery:
        """Like :meth:`publish`, returning a :class:`Delivery` that tells when the PUBACK came.

        For ledgers (tests, simulators) that must know which messages the broker accepted.
        """
        if len(payload) > self._max_payload:
            raise PayloadTooLarge(f"{len(payload)} bytes on {topic} > {self._max_payload}")
        if qos > 0 and self.outstanding() >= self._max_pending:
            self._wait_for_room()
        delivery = Delivery(None)
        with self._held_lock:
            if self._held or not self.connected:
                self._held.append((topic, payload, qos, retain, delivery))
                self.stats.published += 1
                self._drain_held()
                return delivery
        delivery._info = self._publish(topic, payload, qos, retain)
        return delivery

    def _drain_held(self) -> None:
        """Hand held publishes to paho, in order, once connected and paho's backlog is sent."""
        if not self._held or not self.connected:
            return
        mutex = getattr(self._client, "_out_message_mutex", None)
        with mutex if mutex is not None else threading.Lock():
            if not _backlog_sent(self._client):
                return
            # never wait for PUBACKs here: the network thread needs paho's mutex to take them
            while self._held and self.connected and len(self._inflight) < self._max_pending:
                topic, payload, qos, retain, delivery = self._held.popleft()
                delivery._info = self._publish(topic, payload, qos, retain, counted=True)

    def _publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, counted: bool = False
    ) -> paho.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise BrokerUnavailable(f"publish on {topic} failed: {paho.error_string(info.rc)}")
        if not counted:
            self.stats.published += 1
        if qos > 0:
            with self._inflight_lock:
                self._inflight.append(info)
        return info

    def _wait_for_room(self) -> None:
        """Back-pressure: block while ``max_pending`` QoS >= 1 publishes await their PUBACK.

        paho has only 65,535 message ids; a publisher faster than the broker must wait.
        """
        deadline = time.monotonic() + self._pending_timeout
        while self.outstanding() >= self._max_pending:
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"{self._max_pending} publishes unacknowledged for {self._pending_timeout:g} s"
                )
            time.sleep(0.002)

    def outstanding(self) -> int:
        """Number of publishes still waiting: held while disconnected, or for their PUBACK."""
        if self._held and self._held_lock.acquire(blocking=False):
            try:
                self._drain_held()
            finally:
                self._held_lock.release()
        held = len(self._held)
        with self._inflight_lock:
            while self._inflight and _is_published(self._inflight[0]):
                self._inflight.popleft()
                self.stats.acknowledged += 1
            return len(self._inflight) + held

    def flush(self, timeout: float) -> bool:
        """Wait until every QoS >= 1 publish is acknowledged; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        while self.outstanding():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    # -- subscribe and receive --------------------------------------------------------------

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now (when connected) and again after every reconnect."""
        self._subscriptions.append(_Subscription(topic_filter, qos))
        if self.connected:
            self._client.subscribe(topic_filter, qos)

    def ack(self, message: Message) -> None:
        """Acknowledge a received QoS >= 1 message (only with ``manual_ack=True``)."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    # -- paho callbacks: they only record state and enqueue ----------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._state.last_error = str(reason)
            log.warning("mqtt %s: %s refused the connection: %s", self._client_id, self.broker, reason)
            return
        for sub in self._subscriptions:
            client.subscribe(sub.topic_filter, sub.qos)
        self._state.connected.set()
        log.info("mqtt %s: connected to %s", self._client_id, self.broker)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._state.connected.is_set():
            self.stats.disconnects += 1
            level = logging.WARNING if reason.is_failure else logging.INFO
            log.log(level, "mqtt %s: disconnected from %s: %s", self._client_id, self.broker, reason)
        self._state.connected.clear()
        self._state.last_error = str(reason)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # A PUBACK after a reconnect comes after paho resent its backlog: held publishes may go.
        try:
            if self._held and self._held_lock.acquire(blocking=False):
                try:
                    self._drain_held()
                finally:
                    self._held_lock.release()
        except Exception:  # noqa: BLE001 - the network thread must survive anything
            self.stats.callback_errors += 1
            log.exception("could not send held publishes")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self.stats.received += 1
            self.messages.put(Message(msg.topic, bytes(msg.payload), msg.qos, msg.retain, msg.mid))
        except Exception:  # noqa: BLE001 - the network thread must survive anything
            self.stats.callback_errors += 1
            log.exception("dropped an inbound message on %s", msg.topic)


class Delivery:
    """The fate of one publish: ``acknowledged`` once the broker's PUBACK arrived (QoS 1).

    A publish held while disconnected has no message id (0) until it is handed to paho.
    """

    __slots__ = ("_info",)

    def __init__(self, info: paho.MQTTMessageInfo | None) -> None:
        self._info = info

    @property
    def mid(self) -> int:
        return 0 if self._info is None else int(self._info.mid)

    @property
    def acknowledged(self) -> bool:
        return self._info is not None and _is_published(self._info)


_UNSENT = (paho.mqtt_ms_publish, paho.mqtt_ms_queued)


def _backlog_sent(client: paho.Client) -> bool:
    """True when paho has no message left that it has yet to send (re)connected."""
    messages = getattr(client, "_out_messages", None)
    if messages is None:
        return True
    return not any(m.state in _UNSENT for m in list(messages.values()))


def _is_published(info: paho.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        # paho raises for a message queued while disconnected; it is still sent on reconnect
        return bool(getattr(info, "_published", False))
