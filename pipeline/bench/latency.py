"""``latency.alert_p50_ms`` / ``_p99_ms``: device publish to alert received, under a stated load.

While the publisher process feeds the node the farm stream at a fixed rate (the load),
probe devices publish from the bench process: warm-up readings (past the detector's
warm-up), then ``alert.raise_after`` spikes in a row. The node's detector scores the spikes,
its ``AlertPolicy`` raises on the last one, and the alert travels through the outbox to
``{site}/alerts/{device}``. The latency of one probe is from just before that last
spike is published to the moment the bench's ``UplinkTap`` (the cloud stand-in, which also
acknowledges) takes the alert off its connection. Both clocks are this process's
``perf_counter``, so no clock skew enters.

One probe per device: after a clear, a series may not raise again for
``alert.cooldown_s``, so probes on fresh devices do not wait on each other.

``offline=True`` measures the same with the cloud away (RELIABILITY.md R9): the tap takes
the uplink off the broker but acknowledges nothing, so the node's uplink window is full of
unacknowledged batches for the whole run and an alert arrives only because alerts skip the
window. Its keys end in ``_offline``. tests/reliability/test_offline_alerting.py asserts that
every offline alert arrives and in order; how fast is this figure's job, on a quiet machine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pipeline.bench.common import wait_for
from pipeline.bench.edge import BenchError, EdgePlan, Harness, UplinkTap, run_timeout
from pipeline.bench.stream import sim_stream
from pipeline.mqtt import MqttClient
from pipeline.protocol import Reading, Topics, encode

KIND, METRIC = "soil_probe", "moisture"
SETTLE_S = 2.0  # after the warm-up, before the first timed spike
PROBE_INTERVAL_MS = 60_000  # event time between two readings of a probe device
WARMUP_PER_S = 2000.0  # probe warm-up readings a second, on top of the load: the node's spare room


class AlertProbe:
    """Publishes probe devices' readings on ``site`` and times each one's alert."""

    def __init__(self, url: str, site: str, tap: UplinkTap, devices: int, gap_s: float = 0.05) -> None:
        from pipeline.config import load_settings
        from pipeline.detect.registry import edge_detector

        self.url, self.site, self.tap = url, site, tap
        # Past the detector's warm-up (it scores nothing before), then as many spikes as the
        # alert policy needs in a row: the last one is the reading whose alert is timed.
        self.warmup = edge_detector().warmup + 20
        self.spikes = load_settings().alert.raise_after
        self.settle_s = SETTLE_S
        self.devices = [f"{KIND}-{9000 + i:04d}" for i in range(devices)]
        self.gap_s = gap_s
        self.spiked_at: dict[str, float] = {}
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="alert-probe", daemon=True)
        self._start_when: Any = None

    @property
    def readings(self) -> int:
        return len(self.devices) * (self.warmup + self.spikes)

    def start(self, when: Any) -> None:
        """Start probing once ``when()`` holds (the load is flowing), within 60 s."""
        self._start_when = when
        self._thread.start()

    def _run(self) -> None:
        try:
            if not wait_for(self._start_when, timeout=60):
                raise BenchError("the load never started")
            client = MqttClient(self.url)
            client.connect(timeout=10)
            try:
                self._probe(client)
            finally:
                client.close(timeout=5)
        except Exception as exc:  # noqa: BLE001 - reported by the bench
            self.error = f"{type(exc).__name__}: {exc}"

    def _probe(self, client: MqttClient) -> None:
        """Warm every probe device up at ``WARMUP_PER_S``, let the node settle, then time spikes.

        The warm-up is paced, not a burst: a burst of ``devices x warmup`` readings would
        queue in front of the spikes and time the backlog instead of the alert path. Only
        the spikes go out while alerts are timed, one device every ``gap_s``: the load
        during the measurement is the stated one.
        """
        topics = Topics()
        names = [topics.reading(self.site, d) for d in self.devices]
        # One reading a minute of event time: the detector warms up over event time, not readings.
        base = time.time_ns() // 1_000_000 - (self.warmup + self.spikes + 1) * PROBE_INTERVAL_MS
        started = time.perf_counter()
        for k in range(self.warmup):
            for device, topic in zip(self.devices, names, strict=True):
                metrics = {METRIC: 30.0 + 0.1 * (k % 3), "soil_temp": 12.0}
                client.publish(topic, encode(Reading(v=1, device=device, kind=KIND, ts=base + k * PROBE_INTERVAL_MS, seq=k, metrics=metrics)), qos=0)
            ahead = started + (k + 1) * len(self.devices) / WARMUP_PER_S - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        time.sleep(self.settle_s)
        for device, topic in zip(self.devices, names, strict=True):
            for k in range(self.warmup, self.warmup + self.spikes):
                metrics = {METRIC: 60.0, "soil_temp": 12.0}
                payload = encode(Reading(v=1, device=device, kind=KIND, ts=base + k * PROBE_INTERVAL_MS, seq=k, metrics=metrics))
                if k == self.warmup + self.spikes - 1:
                    self.spiked_at[device] = time.perf_counter()
                client.publish(topic, payload, qos=0)
            time.sleep(self.gap_s)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def latencies_ms(self) -> list[float]:
        out = []
        for device, sent in self.spiked_at.items():
            got = self.tap.alerts_raised.get((device, METRIC))
            if got is not None:
                out.append((got - sent) * 1000)
        return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with few samples, p99 is the worst one, not an interpolation.

    >>> percentile([5.0, 1.0, 3.0], 50)
    3.0
    """
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def bench_alert_latency(
    harness: Harness,
    plan: EdgePlan,
    load_per_s: float,
    probes: int,
    echo: Any,
    suffix: str = "",
    offline: bool = False,
) -> dict[str, Any]:
    """Alert latency with the node fed ``load_per_s`` readings/s of farm data meanwhile.

    ``suffix`` names a variant (another broker configuration) in the result keys;
    ``offline`` nobody acknowledges the uplink (the cloud is away), keys end in ``_offline``.
    """
    if offline:
        suffix += "_offline"
    # Enough load to outlast the probes: the paced warm-up, the settling, then one spike
    # per gap, plus start-up.
    seconds = 3.0 + SETTLE_S + probes * 0.06 + probes * 120 / WARMUP_PER_S
    ticks = max(2, int(load_per_s * seconds / plan.devices) + 1)
    stream = sim_stream(plan.devices, ticks, boundary_at=0.5)
    harness.load(stream, "latency")
    site = f"farm-l0{suffix.replace('_', '-')}"
    tap = UplinkTap(harness.url, site, acknowledge=not offline)
    probe = AlertProbe(harness.url, site, tap, probes)
    harness.progress.value = 0
    probe.start(lambda: harness.progress.value >= min(2000, stream.n // 4))
    try:
        result = harness.run(
            "edge",
            site,
            rate=load_per_s,
            tap=None if offline else tap,  # offline, the uplink never drains: no wait for it
            extra_readings=probe.readings,
            timeout=run_timeout(stream.n) + seconds,
        )
        probe.join(timeout=30)
        wait_for(lambda: len(probe.latencies_ms()) >= len(probe.spiked_at), timeout=10)
    finally:
        tap.close()
    if probe.error:
        raise BenchError(f"alert probe: {probe.error}")
    latencies = probe.latencies_ms()
    if not latencies:
        raise BenchError("no probe alert arrived")
    published = result["published"]
    achieved = published["sent"] / published["queued_s"] if published["queued_s"] > 0 else None
    if achieved is not None and achieved < 0.9 * load_per_s:
        echo(f"  note: the load reached only {achieved:,.0f} readings/s")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    where = ", the cloud away" if offline else ""
    echo(f"  {len(latencies)} alerts at {load_per_s:,.0f} readings/s{where}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return {
        f"latency.alert_p50_ms{suffix}": p50,
        f"latency.alert_p99_ms{suffix}": p99,
        f"latency{suffix}.details": {
            "load_readings_per_s": load_per_s,
            "cloud": "away: nothing acknowledged, the uplink window full" if offline else "acknowledging",
            "uplink_messages_taken": sum(tap.messages.values()),
            "load_achieved_readings_per_s": achieved,
            "alerts": len(latencies),
            "probes": len(probe.spiked_at),
            "min_ms": min(latencies),
            "max_ms": max(latencies),
            "backlog_max": result.get("backlog_max"),
            "note": "p99 of fewer than 100 alerts is the worst one (nearest rank)",
        },
    }
