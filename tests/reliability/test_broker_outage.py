"""R1: a broker outage under load loses nothing the devices saw acknowledged, counts nothing twice.

The broker is stopped three ways (RELIABILITY.md R1): SIGTERM (clean), SIGKILL (crash) and
SIGSTOP/SIGCONT (a hang). The fast tier holds it down 4 s; the slow tier 60 s. The oracle is
the devices' ledger of PUBACKed readings, compared window by window with the cloud store's
aggregates, and the node's own accounting (``unaccounted`` = 0).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgekit import LedgerDevices, Stack, running, settle, stacks

from pipeline.services import Mosquitto


@pytest.fixture
def stack(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with stacks(mosquitto_factory, tmp_path) as make:
        yield make

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL, "SIGSTOP": signal.SIGSTOP}


def outage(stack: Stack, how: str, seconds: float) -> None:
    """Take the broker away ``seconds`` in the way ``how`` names, then bring it back."""
    broker = stack.broker
    if how == "SIGSTOP":
        broker.kill(signal.SIGSTOP)
        time.sleep(seconds)
        broker.kill(signal.SIGCONT)
        return
    if how == "SIGTERM":
        broker.stop()  # SIGTERM, then waits for the exit
    else:
        broker.kill(signal.SIGKILL)
    time.sleep(seconds)
    broker.start()  # same port, config and persistence directory


def run_outage(stack: Stack, how: str, seconds: float, after: float) -> None:
    s = stack
    with running(s.worker), running(s.node), LedgerDevices(s.broker.url, s.site) as devices:
        time.sleep(2)  # warm up
        outage(s, how, seconds)
        time.sleep(after)
        devices.stop()
        v = settle(s.node, devices, s.store, s.site, timeout=90)
        c = s.node.counters
        print(
            v.line(f"R1 {how} {seconds:g}s")
            + f" | node received={c.received} accepted={c.accepted} duplicates={c.duplicates}"
            f" dead_lettered={c.dead_lettered} unaccounted={c.unaccounted}"
            f" uplink_published={c.uplink_published} uplink_acked={c.uplink_acked}"
            f" requeued={c.uplink_requeued}"
        )
        assert v.published == v.acked, "every reading the devices published was acknowledged in the end"
        assert (v.lost, v.double, v.windows_wrong) == (0, 0, 0)
        assert c.accepted == v.acked
        assert c.unaccounted == 0 and c.dead_lettered == 0


@pytest.mark.parametrize("how", list(SIGNALS))
def test_a_short_broker_outage_loses_nothing_and_counts_nothing_twice(
    stack: Callable[..., Stack], how: str
) -> None:
    run_outage(stack(), how, seconds=4, after=2)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", list(SIGNALS))
def test_a_60_s_broker_outage_loses_nothing_and_counts_nothing_twice(
    stack: Callable[..., Stack], how: str
) -> None:
    run_outage(stack(), how, seconds=60, after=10)
