"""The harness of the failure tests: devices that keep a ledger, a pipeline, and the oracle.

Generalises the helpers of tests/integration/test_edge_reliability.py (``settings_for``,
``Devices``, ``running``, ``wait_until``, ``stored``): the devices here record every reading
they publish and whether its QoS 1 PUBACK arrived (``MqttClient.publish_tracked``), and the
oracle compares that ledger with the cloud store *per device and per window*, so a test can
say exactly how many readings were lost and how many were counted twice.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from waiting import GENEROUS_S, wait_for, wait_until

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import Store, open_store
from pipeline.config import Settings, load_settings
from pipeline.edge.node import EdgeNode
from pipeline.mqtt import Delivery, MqttClient
from pipeline.protocol import Health, Reading, Topics, encode
from pipeline.services import Mosquitto

TOPICS = Topics()
WINDOW_MS = 1000
KIND, METRIC = "fridge", "temp"
SPIKE_VALUE = 40.0  # a fridge at 40 °C: an anomaly for any detector that saw 4-5 °C


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def settings_for(url: str, tmp_path: Path, site: str, **extra: Any) -> Settings:
    """A node and a cloud worker for ``site`` on ``url``: 1 s windows, short ack timeout."""
    overrides: dict[str, Any] = {
        "mqtt.url": url,
        "store.url": f"sqlite:///{tmp_path / 'cloud.db'}",
        "edge.site": site,
        "edge.state_dir": str(tmp_path / "state"),
        "edge.batch_interval_s": 0.2,
        "edge.health_interval_s": 1.0,
        "aggregate.window_s": WINDOW_MS / 1000,
        "aggregate.lateness_s": 0.0,
        "aggregate.idle_s": 10.0,  # x10 = 100 s of silence > any outage here: no window cut short
        "cloud.client_id": f"cloud-{site}",
        "cloud.group": f"g-{site}",
        "cloud.flush_interval_s": 0.1,
        "cloud.buffer_dir": str(tmp_path / "cloud-buffer"),
        "uplink.ack_timeout_s": 3.0,
    }
    overrides.update(extra)
    return load_settings(overrides=overrides)


@dataclass
class Stack:
    site: str
    broker: Mosquitto
    settings: Settings  # the node's (its mqtt.url may be a proxy)
    cloud_settings: Settings  # the worker's: always the broker itself
    store: Store
    node: EdgeNode
    worker: IngestWorker


@contextmanager
def stacks(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """``make(broker=None, edge_url=None, start=True, **settings)`` -> a started Stack: its own
    Mosquitto (``mosquitto_factory``, so a test may kill it), an edge node and a cloud worker
    with a SQLite store, all in ``tmp_path``; stores are closed at the end.

    Not a conftest.py fixture: a conftest.py in a second test folder breaks collecting the
    whole suite together with tests/simulators/conftest.py (``--doctest-modules`` imports both
    as ``conftest``), so each test module wraps this in its own 3-line fixture.
    """
    stores: list[Store] = []

    def make(
        broker: Mosquitto | None = None, edge_url: str | None = None, start: bool = True, **extra: Any
    ) -> Stack:
        broker = broker or mosquitto_factory()
        site = f"retail-{uuid.uuid4().hex[:6]}"
        cloud_settings = settings_for(broker.url, tmp_path, site, **extra)
        settings = settings_for(edge_url or broker.url, tmp_path, site, **extra)
        store = open_store(cloud_settings.store.url)
        stores.append(store)
        node, worker = EdgeNode(settings), IngestWorker(cloud_settings, store)
        if start:
            worker.start(timeout=5)
            node.start(timeout=5)
        return Stack(site, broker, settings, cloud_settings, store, node, worker)

    try:
        yield make
    finally:
        for store in stores:
            store.close()


def value_of(seq: int) -> float:
    """The value a device sends with its ``seq``: deterministic, so the oracle knows it."""
    return 4.0 + (seq % 9) / 10


@dataclass
class Entry:
    device: str
    seq: int
    ts: int
    value: float
    delivery: Delivery
    sent_at: float  # time.monotonic() when handed to the client


CATCH_UP = 100  # rounds of readings the devices may publish in one pass of the loop when behind schedule


@dataclass
class LedgerDevices:
    """Devices publishing QoS 1 readings from one connection, recording each one's fate.

    ``rates`` maps device id to readings per second (all ``rate_hz`` by default). Every
    reading has a strictly increasing ``ts`` per device. Bounded: at most ``max_per_device``
    readings each (``counts`` names other totals per device), and the thread stops when
    asked or when every device has sent its total (``finished``).

    Rates hold on average on any machine: a device that a busy machine left behind its
    schedule publishes what is due at once (up to ``CATCH_UP`` a pass), so after a while
    each device has sent its rate times the time elapsed, and the devices' shares of the
    traffic (a flooder's 20x) are what the test asked for, not what the scheduler allowed.
    Catching up goes in rounds of one reading per device, so devices stay interleaved as
    they are on a quiet machine: a burst of one device's readings would make the others
    look quiet to the node's aggregator (its idle rule is relative to other devices'
    arrivals) and close their windows early, a loss the tests would then report.
    """

    url: str
    site: str
    devices: tuple[str, ...] = ("fridge-1", "fridge-2", "fridge-3")
    rate_hz: float = 50.0
    rates: dict[str, float] = field(default_factory=dict)
    protocol: str = "5"
    max_per_device: int = 20_000
    counts: dict[str, int] = field(default_factory=dict)  # device -> its total, if not max_per_device
    spike: Callable[[str, int], float | None] | None = None  # (device, seq) -> a value to send instead, or None
    ledger: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = MqttClient(self.url, protocol=self.protocol, reconnect_delay=(1, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-devices", daemon=True)
        self._lock = threading.Lock()

    def total(self, device: str) -> int:
        """How many readings ``device`` sends before it stops by itself."""
        return self.counts.get(device, self.max_per_device)

    def _run(self) -> None:
        tick = 0.002
        seqs = dict.fromkeys(self.devices, 0)
        last_ts = dict.fromkeys(self.devices, 0)
        due = dict.fromkeys(self.devices, time.monotonic())
        while not self._stop.is_set():
            now = time.monotonic()
            for _ in range(CATCH_UP):  # rounds: one due reading per device each, interleaved
                sent = False
                for device in self.devices:
                    if now < due[device] or seqs[device] >= self.total(device) or self._stop.is_set():
                        continue
                    due[device] += 1.0 / self.rates.get(device, self.rate_hz)
                    seq = seqs[device]
                    ts = max(last_ts[device] + 1, now_ms())
                    odd = None if self.spike is None else self.spike(device, seq)
                    value = value_of(seq) if odd is None else odd
                    reading = Reading(v=1, device=device, kind=KIND, ts=ts, seq=seq, metrics={METRIC: value})
                    sent_at = time.monotonic()
                    delivery = self.client.publish_tracked(TOPICS.reading(self.site, device), encode(reading))
                    with self._lock:
                        self.ledger.append(Entry(device, seq, ts, value, delivery, sent_at))
                    seqs[device], last_ts[device] = seq + 1, ts
                    sent = True
                if not sent:
                    break
            if all(seqs[d] >= self.total(d) for d in self.devices):
                break
            time.sleep(tick)

    @property
    def finished(self) -> bool:
        """Every device has sent its total (the publishing thread ended by itself)."""
        with self._lock:
            sent = Counter(e.device for e in self.ledger)
        return all(sent[d] >= self.total(d) for d in self.devices)

    def __enter__(self) -> LedgerDevices:
        self.client.connect(timeout=5)
        self._thread.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        """Stop publishing and wait (bounded) until paho has every PUBACK it will get."""
        self._stop.set()
        self._thread.join(5)
        self.client.flush(timeout)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close(timeout=1)

    @property
    def published(self) -> int:
        with self._lock:
            return len(self.ledger)

    def acked(self) -> list[Entry]:
        with self._lock:
            return [e for e in self.ledger if e.delivery.acknowledged]


class _Role(Protocol):
    def run(self, stop: threading.Event) -> None: ...


@contextmanager
def running(role: _Role) -> Iterator[threading.Thread]:
    """Run ``role.run(stop)`` on a thread; stop and join it (bounded) on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=role.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(15)


def window_counts(entries: list[Entry]) -> Counter[tuple[str, int]]:
    """The oracle: readings per (device, window start), the edge's tumbling-window rule."""
    return Counter((e.device, e.ts - e.ts % WINDOW_MS) for e in entries)


def stored_window_counts(store: Store, site: str) -> Counter[tuple[str, int]]:
    """Readings per (device, window start) in the store's aggregates of the fridges' metric."""
    since, until = now_ms() - 3_600_000, now_ms() + 3_600_000
    counts: Counter[tuple[str, int]] = Counter()
    for device, _kind in store.devices(site):
        for a in store.query_aggregates(site, device, METRIC, since, until):
            counts[(device, a.start)] += a.count
    return counts


@dataclass(frozen=True)
class Verdict:
    """Ledger against store: ``lost`` acknowledged readings missing, ``double`` counted twice."""

    published: int
    acked: int
    stored: int
    lost: int
    double: int
    windows_wrong: int  # windows whose count differs from the oracle's

    def line(self, label: str) -> str:
        return (
            f"{label}: published={self.published} acked={self.acked} stored={self.stored} "
            f"lost={self.lost} dup={self.double} windows_wrong={self.windows_wrong}"
        )


def verdict(devices: LedgerDevices, store: Store, site: str) -> Verdict:
    expected = window_counts(devices.acked())
    got = stored_window_counts(store, site)
    keys = expected.keys() | got.keys()
    lost = sum(max(0, expected[k] - got[k]) for k in keys)
    double = sum(max(0, got[k] - expected[k]) for k in keys)
    wrong = sum(1 for k in keys if expected[k] != got[k])
    return Verdict(devices.published, sum(expected.values()), sum(got.values()), lost, double, wrong)


def settle(
    node: Any, devices: LedgerDevices, store: Store, site: str, timeout: float = 60
) -> Verdict:
    """After the devices stopped: let the node take every acknowledged reading, close every
    window, and wait until the store holds them; then wait for the sentinel of
    ``wait_store_final``, so that anything counted twice would show."""
    acked = len(devices.acked())
    wait_until(lambda: node.counters.accepted >= acked, timeout)
    node.request_drain()
    wait_until(lambda: sum(stored_window_counts(store, site).values()) >= acked, timeout, step=0.25)
    wait_store_final(store, site, timeout)
    return verdict(devices, store, site)


def wait_store_final(store: Store, site: str, timeout: float = 3 * GENEROUS_S) -> None:
    """Wait until the store holds all it ever will of what ``site``'s node sent so far: a copy
    the node sent twice may still be on its way after the first was acknowledged.

    The sentinel is the node's own periodic health: one made after this call began, saying
    its outbox was empty (nothing left to send or to send again). It leaves on the same
    connection after every uplink copy, the broker hands a subscriber its messages in order,
    and the cloud worker commits in order, so once the store holds that health every copy
    sent before it is in the store too. Works for a node in another process (health only).
    The outbox empties only as fast as acknowledgements come (resends back off to 8 ack
    timeouts), hence the longer bound; a failure says what the last stored health showed.
    """
    since = now_ms()
    last: list[Health] = []

    def final() -> bool:
        last[:] = [h for h in store.latest_health() if h.site == site]
        return any(h.ts > since and h.gauges.get("queue_items") == 0 for h in last)

    try:
        wait_for(final, f"a health of {site} made after {since} with an empty outbox, in the store", timeout)
    except AssertionError as failed:
        seen = [(h.ts, h.gauges.get("queue_items"), h.gauges.get("queue_inflight")) for h in last]
        raise AssertionError(f"{failed}; last stored (ts, queue_items, queue_inflight): {seen}") from None
