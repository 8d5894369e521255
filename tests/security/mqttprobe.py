"""A bare paho client for the security tests: it records what the broker answered.

The product's ``MqttClient`` hides what these tests must see (CONNACK and PUBACK reason
codes, the exact moment of a disconnect) and reconnects by itself, so an attacker's client
here is plain paho. Every wait is bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

TIMEOUT = 5.0
LOOPBACK = "127.0.0.1"


@dataclass
class Outcome:
    """What a connection attempt got: a CONNACK (``rc`` 0 is success) or nothing."""

    connack: bool
    rc: int | None = None
    error: str = ""

    @property
    def accepted(self) -> bool:
        return self.connack and self.rc == 0


@dataclass
class _Record:
    connected: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    rc: int | None = None
    disconnects: int = 0
    suback: Counter[int] = field(default_factory=Counter)
    puback: dict[int, int] = field(default_factory=dict)  # mid -> reason code
    received: Counter[tuple[str, bytes]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Probe:
    """One paho connection that records CONNACK, PUBACK reasons, messages and disconnects."""

    def __init__(
        self,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        protocol: str = "5",
        tls_ca: str | None = None,
        clean: bool = True,
    ) -> None:
        self.v5 = protocol == "5"
        self.port = port
        self.rec = _Record()
        self._session_present = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # paho is not thread-safe without loop_start: a subscribe from this thread writes to
        # the socket itself while _network reads it (with TLS, two threads on one SSL object
        # lose the connection). Every call into the client after the CONNACK holds this lock.
        self._io = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self.v5 else clean,
        )
        self._clean = clean
        self.client.suppress_exceptions = True
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    # -- callbacks --------------------------------------------------------------------------

    def _on_connect(
        self, c: mqtt.Client, u: object, flags: object, reason: object, p: object
    ) -> None:
        self.rec.rc = int(reason.value)  # type: ignore[attr-defined]
        self._session_present = bool(getattr(flags, "session_present", False))
        self.rec.connected.set()

    def _on_disconnect(
        self, c: mqtt.Client, u: object, f: object, reason: object, p: object
    ) -> None:
        self.rec.disconnects += 1
        self.rec.closed.set()

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self.rec.lock:
            self.rec.received[(msg.topic, bytes(msg.payload))] += 1

    def _on_publish(self, c: mqtt.Client, u: object, mid: int, reason: object, p: object) -> None:
        self.rec.puback[mid] = int(reason.value)  # type: ignore[attr-defined]

    def _on_subscribe(
        self, c: mqtt.Client, u: object, mid: int, reasons: object, p: object
    ) -> None:
        self.rec.suback[mid] += 1

    # -- actions ----------------------------------------------------------------------------

    def connect(self) -> Outcome:
        """Connect once (no automatic reconnect) and wait for the CONNACK or the close."""
        try:
            if self.v5:
                self.client.connect(LOOPBACK, self.port, keepalive=10, clean_start=self._clean)
            else:
                self.client.connect(LOOPBACK, self.port, keepalive=10)
        except (OSError, ssl.SSLError) as exc:  # a TLS handshake failure surfaces here
            return Outcome(connack=False, error=f"{type(exc).__name__}: {exc}")
        # Wait for the CONNACK on this thread: a network thread would sit in paho's
        # reconnect backoff after a refusal, and stopping it would cost a second.
        deadline = time.monotonic() + TIMEOUT
        error = "no CONNACK"
        while time.monotonic() < deadline and not self.rec.connected.is_set():
            rc = self.client.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS or self.rec.closed.is_set():
                error = f"closed: {mqtt.error_string(rc)}"
                break
        outcome = Outcome(
            self.rec.connected.is_set(), self.rec.rc, "" if self.rec.connected.is_set() else error
        )
        if outcome.accepted:
            self._thread = threading.Thread(target=self._network, daemon=True)
            self._thread.start()
        else:
            self.client.disconnect()
            self.client.loop(timeout=0.01)
        return outcome

    def _network(self) -> None:
        """paho's loop without its automatic reconnect: a kicked probe stays out."""
        while not self._stop.is_set():
            with self._io:
                rc = self.client.loop(timeout=0.02)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self.rec.closed.set()
                return

    @property
    def session_present(self) -> bool:
        return self._session_present

    def subscribe(self, topics: list[str]) -> None:
        """Subscribe to each filter, QoS 1, and wait for every SUBACK (whatever it says)."""
        mids = []
        for topic in topics:
            with self._io:
                rc, mid = self.client.subscribe(topic, qos=1)
            assert rc == mqtt.MQTT_ERR_SUCCESS and mid is not None, mqtt.error_string(rc)
            mids.append(mid)
        deadline = time.monotonic() + TIMEOUT
        while not all(self.rec.suback[m] for m in mids):
            assert time.monotonic() < deadline, "no SUBACK"
            time.sleep(0.005)

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1 publish; returns the message id (see :meth:`wait_pubacks`)."""
        with self._io:
            info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
        return info.mid

    def wait_pubacks(self, mids: list[int]) -> dict[int, int]:
        """Wait until every ``mid`` is acknowledged; return mid -> PUBACK reason code."""
        deadline = time.monotonic() + TIMEOUT
        while not all(m in self.rec.puback for m in mids):
            assert time.monotonic() < deadline, "missing PUBACKs"
            time.sleep(0.005)
        return {m: self.rec.puback[m] for m in mids}

    def count(self, topic: str, payload: bytes) -> int:
        with self.rec.lock:
            return self.rec.received[(topic, payload)]

    def total(self) -> int:
        with self.rec.lock:
            return sum(self.rec.received.values())

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread; idempotent."""
        with self._io:
            self.client.disconnect()
        if self._thread is not None:
            self._thread.join(TIMEOUT)
            self._thread = None
        self._stop.set()
        self.client.loop(timeout=0.01)  # closes the socket if the thread did not get to it


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
