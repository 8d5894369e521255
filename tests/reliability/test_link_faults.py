"""R10 and R2 (link part): dead links are noticed by keepalive and left once, and a cut
edge-to-broker link loses nothing.

The link faults come from ``pipeline.faults.TcpProxy`` on loopback: ``reset`` aborts every
connection and refuses new ones, ``blackhole`` keeps the sockets open and forwards nothing, so
only MQTT keepalive can tell. The broker hang is SIGSTOP on the broker's own PID.

What is asserted holds on a busy machine too: the dead link is noticed (so keepalive works:
nothing else can tell), the client comes back once the link does, and it counts one
disconnect per outage. How fast (RELIABILITY.md R10: within 2.5 keepalives, back within
5 s) depends on the machine's load as much as on the code, so the times are printed, not
asserted; a wait's bound only turns "never" into a failure. paho's keepalive is 2k by
construction (a PINGREQ after k of silence, then k for the PINGRESP).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from edgekit import LedgerDevices, Stack, running, settle, stacks, stored_window_counts, wait_for

from pipeline.faults import TcpProxy
from pipeline.mqtt import MqttClient
from pipeline.services import LOOPBACK, Mosquitto


@pytest.fixture
def stack(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with stacks(mosquitto_factory, tmp_path) as make:
        yield make

KEEPALIVE = 4  # seconds; RELIABILITY.md R10 uses 10
NOTICE_BOUND_S = 10 * KEEPALIVE  # "never noticed", not a figure: paho needs 2 keepalives
BACK_BOUND_S = 60.0  # "never back", not a figure: reconnect_delay is 1-2 s


@contextmanager
def proxy_to(broker: Mosquitto) -> Iterator[TcpProxy]:
    with TcpProxy(LOOPBACK, broker.port) as proxy:
        yield proxy


def seconds_until(condition: Callable[[], bool], what: str, timeout: float) -> float:
    """Wait for ``condition`` (failing after ``timeout``); how long it took, for the record."""
    t0 = time.monotonic()
    wait_for(condition, what, timeout, step=0.02)
    return time.monotonic() - t0


def test_a_hung_broker_is_noticed_by_keepalive_and_left_once(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    broker = mosquitto_factory()
    client = MqttClient(broker.url, keepalive=KEEPALIVE, reconnect_delay=(1, 2))
    client.connect(timeout=5)
    try:
        broker.kill(signal.SIGSTOP)
        try:
            detected = seconds_until(lambda: not client.connected, "the hang noticed", NOTICE_BOUND_S)
        finally:
            broker.kill(signal.SIGCONT)
        reconnected = seconds_until(lambda: client.connected, "back after SIGCONT", BACK_BOUND_S)
        print(
            f"R10 SIGSTOP k={KEEPALIVE}s: detected={detected:.2f}s ({detected / KEEPALIVE:.2f}k) "
            f"reconnected={reconnected:.2f}s disconnects={client.stats.disconnects}"
        )
        assert client.stats.disconnects == 1
    finally:
        client.close(1)


def test_a_blackholed_link_is_noticed_by_keepalive_and_left_once(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    broker = mosquitto_factory()
    with proxy_to(broker) as proxy:
        client = MqttClient(proxy.url, keepalive=KEEPALIVE, reconnect_delay=(1, 2))
        client.connect(timeout=5)
        try:
            proxy.set_mode("blackhole")
            detected = seconds_until(lambda: not client.connected, "the blackhole noticed", NOTICE_BOUND_S)
            proxy.set_mode("pass")
            reconnected = seconds_until(lambda: client.connected, "back after the blackhole", BACK_BOUND_S)
            print(
                f"R10 blackhole k={KEEPALIVE}s: detected={detected:.2f}s ({detected / KEEPALIVE:.2f}k) "
                f"reconnected={reconnected:.2f}s disconnects={client.stats.disconnects}"
            )
            assert client.stats.disconnects == 1
        finally:
            client.close(1)


def link_cut(
    stack: Callable[..., Stack], mosquitto_factory: Callable[..., Mosquitto], mode: str, seconds: float, **extra: object
) -> None:
    """Cut the node's link to its broker for ``seconds`` (from the cut) while devices publish
    to the broker directly; then every reading they published is in the store, once."""
    broker = mosquitto_factory()
    with proxy_to(broker) as proxy:
        s = stack(broker=broker, edge_url=proxy.url, **extra)
        with running(s.worker), running(s.node), LedgerDevices(broker.url, s.site) as devices:
            wait_for(lambda: sum(stored_window_counts(s.store, s.site).values()) > 0, "readings stored before the cut")
            proxy.set_mode(mode)  # type: ignore[arg-type]
            cut_at = time.monotonic()
            wait_for(lambda: not s.node.client.connected, "the node noticed the cut", max(seconds, NOTICE_BOUND_S))
            noticed_after = time.monotonic() - cut_at
            time.sleep(max(0.0, seconds - noticed_after))  # the fault's length, part of the scenario
            proxy.set_mode("pass")
            wait_for(lambda: s.node.client.connected, "the node back after the cut", BACK_BOUND_S)
            # Readings flow again: the node takes what was sent during the cut and after it.
            after_cut = devices.published + 50
            wait_for(lambda: s.node.counters.accepted >= after_cut, "the node caught up after the cut")
            devices.stop()
            v = settle(s.node, devices, s.store, s.site, timeout=90)
            c = s.node.counters
            print(
                v.line(f"R2-link {mode} {seconds:g}s")
                + f" | noticed after {noticed_after:.1f}s node received={c.received}"
                f" accepted={c.accepted} duplicates={c.duplicates} unaccounted={c.unaccounted}"
                f" requeued={c.uplink_requeued} proxy_connections={proxy.connections_total}"
            )
            assert v.published == v.acked
            assert (v.lost, v.double, v.windows_wrong) == (0, 0, 0)
            assert c.unaccounted == 0


def test_an_edge_link_reset_for_4_s_loses_nothing(
    stack: Callable[..., Stack], mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    link_cut(stack, mosquitto_factory, "reset", 4)


@pytest.mark.slow
def test_an_edge_link_blackholed_for_30_s_is_noticed_and_loses_nothing(
    stack: Callable[..., Stack], mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    link_cut(stack, mosquitto_factory, "blackhole", 30, **{"mqtt.keepalive": 5})
