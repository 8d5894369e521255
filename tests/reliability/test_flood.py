"""S10: a device flooding at 20x the others' rate does not starve them: every reading of every
other device is processed and stored, exactly once.

The flood is defined by counts, not by what a machine managed in a few seconds: each device
sends a fixed total at its rate (``LedgerDevices`` keeps rates on average, catching up when
a busy machine delays it), so the flooder's 20x share of the traffic holds however loaded
the machine is, and the test asserts that every reading of the flood was acknowledged.

What the node does with the flooder: nothing special. It has no per-device rate limit; a
flooder's readings are valid, so they are accepted, journaled and aggregated like any other,
and the node's throughput (thousands of readings a second) absorbs a 20x device. Load
shedding is global (the load governor widens selection tolerances when the backlog grows), not
per device. A per-device token bucket counted as ``rate_limited`` (RELIABILITY.md S10) is not
built: it would need an event-time budget so that a legitimate backlog after an outage is not
mistaken for a flood.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgekit import LedgerDevices, Stack, running, settle, stacks, stored_window_counts, wait_for

from pipeline.services import Mosquitto


@pytest.fixture
def stack(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with stacks(mosquitto_factory, tmp_path) as make:
        yield make

NOMINAL_HZ = 10.0
FLOODER = "fridge-flood"
OTHERS = ("fridge-1", "fridge-2", "fridge-3", "fridge-4")
FLOOD_FACTOR = 20
NOMINAL_READINGS = 60  # each other device: 6 s at 10 Hz
FLOOD_READINGS = FLOOD_FACTOR * NOMINAL_READINGS


def test_a_device_flooding_at_20x_does_not_starve_the_others(stack: Callable[..., Stack]) -> None:
    s = stack()
    devices = (FLOODER, *OTHERS)
    with running(s.worker), running(s.node), LedgerDevices(
        s.broker.url,
        s.site,
        devices=devices,
        rate_hz=NOMINAL_HZ,
        rates={FLOODER: FLOOD_FACTOR * NOMINAL_HZ},
        max_per_device=NOMINAL_READINGS,
        counts={FLOODER: FLOOD_READINGS},
    ) as ledger:
        wait_for(lambda: ledger.finished, "every device sent its readings, the flooder its 20x")
        ledger.stop()
        v = settle(s.node, ledger, s.store, s.site)
        acked = Counter(e.device for e in ledger.acked())
        stored: Counter[str] = Counter()
        for (device, _start), n in stored_window_counts(s.store, s.site).items():
            stored[device] += n
        c = s.node.counters
        print(
            f"S10 flooder {FLOOD_FACTOR * NOMINAL_HZ:g}/s vs {NOMINAL_HZ:g}/s: acked={dict(acked)} stored={dict(stored)} | "
            f"{v.line('all')} | node accepted={c.accepted} dead_lettered={c.dead_lettered} "
            f"selection_scale={s.node.selector.scale} unaccounted={c.unaccounted}"
        )
        # the precondition: the flood happened, all of it (the broker took every reading)
        assert acked == {FLOODER: FLOOD_READINGS, **dict.fromkeys(OTHERS, NOMINAL_READINGS)}
        for device in OTHERS:
            assert stored[device] == acked[device]
        assert (v.lost, v.double) == (0, 0)
        assert c.unaccounted == 0
