"""Edge benchmarks over a real Mosquitto: broker ceiling, node throughput, memory, uplink size.

How a run goes (docs/benchmarks.md has the reasons)::

    bench process ── pre-generated stream file ──► publisher process ── QoS 0 ──► mosquitto
         │                                                                          │
         │  UplinkTap (stands in for the cloud:                         consumer process:
         │  counts uplink bytes as sent, decodes                        plain counter (ceiling)
         │  batches, acknowledges every seq)  ◄── {site}/edge/batch|agg ── or a real EdgeNode
         └────────────────── pipes: ready / measured / drain / stop ──────────────┘

Every run uses a fresh site name, hence a fresh broker session and a fresh edge state
directory, so no run sees another's readings or outbox.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from pipeline.bench.common import Deadline, ratio, summarise
from pipeline.bench.stream import Stream, sim_stream
from pipeline.bench.workers import consumer_main, publisher_main
from pipeline.errors import EdgepipeError
from pipeline.mqtt import MqttClient
from pipeline.protocol import (
    SCHEMA_VERSION,
    Ack,
    Alert,
    Reading,
    Topics,
    decode,
    decode_batch,
    encode,
)
from pipeline.protocol.agg_codec import decode_aggregate_message
from pipeline.protocol.catalog import KINDS
from pipeline.protocol.messages import seq_ranges

PUBLISHER_LIFETIME_S = 900.0  # the publisher process ends by itself after this, whatever happens
PACING_WINDOW = 2000  # paced runs: readings ahead of the node (load shedding starts at 5,000)
_reading = msgspec.json.Decoder(Reading)


class BenchError(EdgepipeError):
    """A benchmark part could not run (a child failed, a deadline passed)."""


@dataclass(frozen=True)
class EdgePlan:
    """Sizes of the edge benchmarks; ``quick`` and ``full`` are the two the CLI runs."""

    repeats: int
    devices: int  # throughput stream: devices of one farm site ...
    ticks: int  # ... and readings per device (1 Hz, the simulator's default rate)
    rss_devices: int
    rss_ticks: int  # >= 7: the selector holds up to pre_anomaly_points + 1 points per series
    rss_repeats: int
    uplink_devices: int
    uplink_ticks: int
    variants: bool = False  # also measure over MQTT 3.1.1 (ceiling and node)

    @classmethod
    def quick(cls) -> EdgePlan:
        return cls(3, 2000, 20, 10_000, 8, 1, 100, 600)

    @classmethod
    def full(cls) -> EdgePlan:
        return cls(5, 2000, 75, 10_000, 8, 3, 250, 1800, variants=True)

    @classmethod
    def tiny(cls) -> EdgePlan:
        """For the unit test: every code path, a few thousand readings at most."""
        return cls(1, 100, 20, 200, 2, 1, 20, 120)


def _expect(conn: Connection, kind: str, timeout: float) -> dict[str, Any]:
    """The next message from a child, which must be ``kind``; BenchError otherwise."""
    if not conn.poll(timeout):
        raise BenchError(f"no {kind!r} from the child within {timeout:.0f} s")
    got, data = conn.recv()
    if got == "error":
        raise BenchError(data["error"])
    if got != kind:
        raise BenchError(f"expected {kind!r} from the child, got {got!r}")
    result: dict[str, Any] = data
    return result


class UplinkTap:
    """Stands in for the cloud: receives a node's uplink, counts its bytes, acknowledges it.

    Bytes are payload bytes as the node sent them (topic and MQTT header not counted, as on
    the device side). Acknowledging matters: without it the node stops sending after
    ``uplink.max_inflight`` messages, which is not how it runs. With ``acknowledge=False``
    it is how a node runs while the cloud is away (a partition: nothing acknowledged, the
    window full), which the offline alert latency measures. With ``keep_points`` every
    shipped value is kept by (device, ts) for the error check.
    """

    def __init__(
        self, url: str, site: str, *, keep_points: bool = False, lifetime_s: float = 900.0, acknowledge: bool = True
    ) -> None:
        self.site = site
        self.acknowledge = acknowledge
        self.topics = Topics()
        self.keep_points = keep_points
        self.bytes: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.resent = 0
        self.points = 0
        self.aggregated_points = 0
        self.aggregates = 0  # aggregate records received (each once)
        self.agg_zstd_bytes = 0  # what the aggregates would weigh zstd-compressed (a diagnosis)
        self.shipped: dict[tuple[str, int], tuple[str, dict[str, float]]] = {}
        self.errors: list[str] = []
        self.alerts_raised: dict[tuple[str, str], float] = {}  # (device, metric) -> first seen
        self._seen: set[tuple[str, int]] = set()
        self.last_message = time.monotonic()
        self._lifetime = Deadline(lifetime_s)
        self._zstd = zstandard.ZstdCompressor(level=3)
        self._stop = threading.Event()
        self.client = MqttClient(url)
        self.client.connect(timeout=10)
        for what in ("batch", "agg", "model"):
            self.client.subscribe(self.topics.edge(site, what), qos=1)
        self.client.subscribe(self.topics.alerts(site), qos=1)
        self._thread = threading.Thread(target=self._loop, name="uplink-tap", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        inbox = self.client.messages
        pending: list[int] = []
        next_ack = time.monotonic()
        while not self._stop.is_set() and not self._lifetime.expired:
            try:
                message = inbox.get(timeout=0.01)
            except queue.Empty:
                message = None
            if message is not None:
                self.last_message = time.monotonic()
                try:
                    seq = self._take(message.topic, message.payload)
                except Exception as exc:  # noqa: BLE001 - a bad uplink message is a finding
                    self.errors.append(f"{message.topic}: {type(exc).__name__}: {exc}")
                    continue
                pending.append(seq)
            if pending and not self.acknowledge:
                pending = []  # the cloud is away: what arrived is counted, never acknowledged
            if pending and time.monotonic() >= next_ack:
                ack = Ack(v=SCHEMA_VERSION, site=self.site, seq=max(pending), ranges=seq_ranges(pending))
                self.client.publish(self.topics.cloud_ack(self.site), encode(ack), qos=1)
                pending = []
                next_ack = time.monotonic() + 0.02

    def _take(self, topic: str, payload: bytes) -> int:
        what = "alert" if "/alerts/" in topic else topic.rsplit("/", 1)[-1]
        if what == "batch":
            batch = decode_batch(payload)
            seq = batch.seq
            if (what, seq) not in self._seen:
                for r in batch.readings:
                    self.points += len(r.metrics)
                    if self.keep_points:
                        entry = self.shipped.setdefault((r.device, r.ts), (r.kind, {}))
                        entry[1].update(r.metrics)
        elif what == "agg":
            aggs = decode_aggregate_message(payload)
            seq = aggs.seq
            if (what, seq) not in self._seen:
                self.aggregated_points += sum(a.count for a in aggs.aggregates)
                self.aggregates += len(aggs.aggregates)
                self.agg_zstd_bytes += len(self._zstd.compress(payload))
        elif what == "alert":
            alert = decode(payload, Alert)
            seq = alert.seq
            if alert.data.state == "raised":
                self.alerts_raised.setdefault((alert.data.device, alert.data.metric), time.perf_counter())
        else:  # model deltas: not built yet; counted if they appear
            seq = int(msgspec.json.decode(payload).get("seq", 0))
        if (what, seq) in self._seen:
            self.resent += 1
        else:
            self._seen.add((what, seq))
            self.bytes[what] += len(payload)
            self.messages[what] += 1
        return seq

    def wait_quiet(self, quiet_s: float, timeout: float) -> bool:
        """Wait until nothing arrived for ``quiet_s`` (the node has sent everything)."""
        deadline = Deadline(timeout)
        while time.monotonic() - self.last_message < quiet_s:
            if deadline.expired:
                return False
            time.sleep(0.05)
        return True

    def wait_received(self, points: int, aggregates: int, timeout: float) -> bool:
        """Wait until the tap holds ``points`` batch points and ``aggregates`` aggregate records.

        Why not only ``wait_quiet``: the node ships its last windows when it stops, and on a
        loaded machine they can arrive after any fixed quiet gap (a CI run saw none of them).
        """
        deadline = Deadline(timeout)
        while self.points < points or self.aggregates < aggregates:
            if deadline.expired:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.client.close(timeout=2)


class Harness:
    """The processes around one broker: a long-lived publisher, and one consumer per run."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.ctx = multiprocessing.get_context("spawn")
        self.progress = self.ctx.RawValue("q", 0)
        self.conn, child = self.ctx.Pipe()
        self.publisher = self.ctx.Process(
            target=publisher_main,
            args=(url, self.progress, child, PUBLISHER_LIFETIME_S),
            name="bench-publisher",
            daemon=True,
        )
        self.publisher.start()
        child.close()
        self.stream: Stream | None = None
        try:
            _expect(self.conn, "connected", 60)
        except BenchError:
            self.close()
            raise

    def load(self, stream: Stream, name: str) -> None:
        """Hand ``stream`` to the publisher (through a file: children share no memory)."""
        path = stream.save(self.workdir / f"{name}.msgpack")
        self.conn.send(("load", {"path": str(path)}))
        loaded = _expect(self.conn, "loaded", 120)
        if loaded["n"] != stream.n:
            raise BenchError(f"the publisher loaded {loaded['n']} readings of {stream.n}")
        self.stream = stream

    def run(
        self,
        mode: str,
        site: str,
        *,
        window: int | None = None,
        rate: float | None = None,
        tap: UplinkTap | None = None,
        drain: bool = False,
        extra_readings: int = 0,
        protocol: str = "5",
        timeout: float = 120.0,
        fmt: str = "edgepipe",
    ) -> dict[str, Any]:
        """One run: start the consumer, publish the loaded stream, collect what it measured.

        ``extra_readings`` are published by someone else (the alert probes) on the same site.
        ``fmt``: the stream is published in that ingest format and the node reads it so.
        """
        if self.stream is None:
            raise BenchError("no stream loaded")
        expected = self.stream.n + extra_readings
        self.progress.value = 0
        parent, child = self.ctx.Pipe()
        state_dir = self.workdir / "state" / site
        proc = self.ctx.Process(
            target=consumer_main,
            args=(
                mode,
                self.url,
                site,
                str(state_dir),
                expected,
                self.progress,
                child,
                timeout + 60,
                protocol,
                fmt,
            ),
            name=f"bench-{mode}",
            daemon=True,
        )
        proc.start()
        child.close()
        stopped: dict[str, Any] | None = None
        try:
            ready = _expect(parent, "ready", 60)
            command = {
                "site": site,
                "window": window,
                "rate": rate,
                "timeout": timeout,
                "format": fmt,
            }
            self.conn.send(("publish", command))
            published = _expect(self.conn, "published", timeout + 30)
            parent.send(("publisher_done", {}))
            measured = _expect(parent, "measured", timeout + 30)
            if measured.get("errors"):
                raise BenchError(f"{mode} on {site}: the node thread failed: {measured['errors'][0]}")
            if drain:
                parent.send(("drain", {}))
                if not _expect(parent, "draining", 45).get("drained"):
                    raise BenchError("the node did not close its windows within 30 s of the drain")
                if tap is not None and not tap.wait_quiet(1.5, 120):
                    raise BenchError("the node's uplink never went quiet after the drain")
            parent.send(("stop", {}))
            stopped = _expect(parent, "stopped", 90)
            if tap is not None:
                tap.wait_received(stopped["readings_shipped"], stopped["aggregates"], 30)
                tap.wait_quiet(0.5, 30)
        finally:
            if stopped is None:  # a failure on the way: ask the child to end now
                try:
                    parent.send(("stop", {}))
                except OSError:
                    pass
            proc.join(timeout=15)
            if proc.is_alive():  # our own child, by its handle
                proc.terminate()
                proc.join(timeout=5)
            parent.close()
        return {
            "mode": mode,
            "protocol": protocol,
            "ready": ready,
            "published": published,
            "stopped": stopped,
            **measured,
        }

    def close(self) -> None:
        try:
            self.conn.send(("stop", {}))
        except OSError:
            pass
        self.publisher.join(timeout=10)
        if self.publisher.is_alive():
            self.publisher.terminate()
            self.publisher.join(timeout=5)
        self.conn.close()


def run_timeout(n: int) -> float:
    """Generous but finite: 2,000 readings/s would be ten times slower than the target."""
    return 30.0 + n / 2000


def bench_throughput(harness: Harness, plan: EdgePlan, echo: Any) -> dict[str, Any]:
    """Ceiling, edge with detection off and on: interleaved rounds over the same stream.

    The headline figures use the protocol the node speaks by default (``mqtt.protocol``
    auto: 3.1.1 at the edge), the ceiling the same. With ``plan.variants`` also the ceiling
    and the node (detection off) over the other protocol, MQTT 5, whose PUBLISH properties
    paho parses for every message.
    """
    from pipeline.config import load_settings

    main = load_settings().mqtt.protocol_for("edge")
    other = "5" if main == "3.1.1" else "3.1.1"
    stream = sim_stream(plan.devices, plan.ticks, boundary_at=0.25)
    harness.load(stream, "throughput")
    timeout = run_timeout(stream.n)
    modes = [("count", main), ("edge-nodetect", main), ("edge", main)]
    if plan.variants:
        modes += [("count", other), ("edge-nodetect", other)]
    rates: dict[tuple[str, str], list[float]] = {m: [] for m in modes}
    runs: list[dict[str, Any]] = []
    for r in range(plan.repeats):
        for mode, protocol in modes:
            site = f"farm-b{r}-{mode}-{protocol.replace('.', '')}"
            tap = None if mode == "count" else UplinkTap(harness.url, site)
            try:
                result = harness.run(mode, site, tap=tap, protocol=protocol, timeout=timeout)
            finally:
                if tap is not None:
                    tap.close()
            got = result["received"]
            if got != stream.n:
                raise BenchError(f"{mode} run {r}: received {got} of {stream.n} readings (QoS 0 lost some)")
            if result["readings_per_s"] is None:
                raise BenchError(f"{mode} run {r}: no interval measured")
            rates[(mode, protocol)].append(result["readings_per_s"])
            runs.append(_brief(result))
            label = f"{mode} (MQTT {protocol})"
            echo(f"  round {r + 1}/{plan.repeats} {label:<26} {result['readings_per_s']:>10,.0f} readings/s")
    ceiling = summarise(rates[("count", main)])
    off, on = summarise(rates[("edge-nodetect", main)]), summarise(rates[("edge", main)])
    publisher = [run["published_per_s"] for run in runs if run["published_per_s"]]
    variants: dict[str, Any] = {}
    if plan.variants:
        tag = "mqtt5" if other == "5" else "mqtt311"
        ceiling_other = summarise(rates[("count", other)])
        off_other = summarise(rates[("edge-nodetect", other)])
        variants = {
            f"broker.ceiling_readings_per_s_{tag}": ceiling_other,
            f"edge.readings_per_s_{tag}": off_other,
            f"edge.readings_per_s_{tag}_ratio_to_ceiling": ratio(off_other, ceiling_other),
            f"edge.readings_per_s_{tag}_ratio_to_default": ratio(off_other, off),
        }
    return {
        "broker.ceiling_readings_per_s": ceiling,
        "broker.publisher_readings_per_s": summarise(publisher),
        "edge.readings_per_s": off,
        "edge.readings_per_s_ratio_to_ceiling": ratio(off, ceiling),
        "edge.readings_per_s_detect": on,
        "edge.readings_per_s_detect_ratio_to_ceiling": ratio(on, ceiling),
        **variants,
        "edge.throughput_details": {
            "protocol": main,
            "stream": _describe(stream),
            "selection_scale_max": max(run.get("selection_scale_max", 1.0) for run in runs),
            "backlog_max": max(run.get("backlog_max", 0) for run in runs),
            "runs": runs,
        },
    }


def bench_formats(harness: Harness, plan: EdgePlan, echo: Any) -> dict[str, Any]:
    """The node (detection off) fed each ingest format over the broker, against native readings.

    ``edge.readings_per_s_<format>_ratio`` (issue 17 asks for >= 0.8): the same simulated
    readings, published as that format's system would (``simulators.formats``) and read by
    the node through its ``[[ingest]]`` entry, over the native run of the same round; the
    median of the rounds' ratios. The rates are readings per CPU second of the node's
    process (its receive loop, paho's thread): on 2 shared cores the wall-clock rate of one
    run moved by half from one round to the next, with the broker, the publisher and other
    programs taking turns; ``edge.formats_details`` keeps the wall-clock rates too.
    Zigbee2MQTT readings are dated on arrival.
    """
    from pipeline.config import load_settings
    from pipeline.ingest.registry import ADAPTERS, NATIVE

    protocol = load_settings().mqtt.protocol_for("edge")  # as edge.readings_per_s: the node's own
    # a quarter of the throughput stream: 10,000 readings with --quick, enough for a CPU rate,
    # so that the 18 runs of a quick bench (6 formats x 3 rounds) take about a minute
    stream = sim_stream(plan.devices, max(plan.ticks // 4, 5), boundary_at=0.25)
    harness.load(stream, "formats")
    timeout = run_timeout(stream.n)
    formats = (NATIVE, *ADAPTERS)
    native: list[float] = []
    ratios: dict[str, list[float]] = {fmt: [] for fmt in ADAPTERS}
    wall: dict[str, list[float]] = {fmt: [] for fmt in formats}
    for r in range(plan.repeats):
        rates: dict[str, float] = {}
        for fmt in formats:
            site = f"farm-f{r}-{fmt}"
            tap = UplinkTap(harness.url, site)
            try:
                result = harness.run(
                    "edge-nodetect", site, tap=tap, protocol=protocol, timeout=timeout, fmt=fmt
                )
            finally:
                tap.close()
            if result["accepted"] != stream.n:
                raise BenchError(
                    f"{fmt} run {r}: accepted {result['accepted']} of {stream.n} readings"
                )
            if result["readings_per_cpu_s"] is None or result["readings_per_s"] is None:
                raise BenchError(f"{fmt} run {r}: no interval measured")
            rates[fmt] = result["readings_per_cpu_s"]
            wall[fmt].append(result["readings_per_s"])
            echo(
                f"  round {r + 1}/{plan.repeats} {fmt:<12} {rates[fmt]:>10,.0f} readings per CPU s"
            )
        native.append(rates[NATIVE])
        for fmt in ADAPTERS:
            ratios[fmt].append(rates[fmt] / rates[NATIVE])
    return {
        **{f"edge.readings_per_s_{fmt}_ratio": summarise(ratios[fmt]) for fmt in ADAPTERS},
        "edge.formats_details": {
            "stream": _describe(stream),
            "protocol": protocol,
            "native_readings_per_cpu_s": native,
            "wall_readings_per_s": wall,
        },
    }


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    published = result["published"]
    keys = ("mode", "protocol", "received", "accepted", "seconds", "readings_per_s", "rss_mb", "selection_scale_max", "backlog_max")
    out = {k: result[k] for k in keys if k in result}
    out["published_per_s"] = published["sent"] / published["seconds"] if published["seconds"] > 0 else None
    return out


def _describe(stream: Stream) -> dict[str, Any]:
    return {
        "site_domain": "farm",
        "devices": stream.sim_devices,
        "readings_per_device": stream.ticks,
        "rate_hz": stream.rate_hz,
        "readings": stream.n,
        "json_bytes_per_reading": stream.json_bytes / stream.n,
    }


def bench_rss(harness: Harness, plan: EdgePlan, echo: Any) -> dict[str, Any]:
    """RSS of a node process once it has state for ``rss_devices`` devices (paced feed)."""
    stream = sim_stream(plan.rss_devices, plan.rss_ticks, boundary_at=0.0)
    harness.load(stream, "rss")
    after, before = [], []
    for r in range(plan.rss_repeats):
        site = f"farm-m{r}"
        tap = UplinkTap(harness.url, site)
        try:
            result = harness.run("edge", site, window=PACING_WINDOW, tap=tap, timeout=run_timeout(stream.n))
        finally:
            tap.close()
        if result["accepted"] != stream.n:
            raise BenchError(f"rss run {r}: accepted {result['accepted']} of {stream.n}")
        after.append(result["rss_mb"])
        before.append(result["rss_mb_before"])
        echo(f"  run {r + 1}/{plan.rss_repeats} rss {result['rss_mb']:.1f} MB (idle {result['rss_mb_before']:.1f} MB)")
    return {
        "edge.rss_mb_10k_devices": summarise(after),
        "edge.rss_mb_idle": summarise(before),
        "edge.rss_details": {"stream": _describe(stream), "devices": plan.rss_devices},
    }


def bench_uplink(harness: Harness, plan: EdgePlan, echo: Any) -> dict[str, Any]:
    """Uplink bytes per reading against the devices' JSON, and the shipped values' error.

    Paced (the node's backlog stays below its load-shedding threshold, which would widen the
    tolerances), drained at the end so every window and batch is shipped and counted.
    """
    stream = sim_stream(plan.uplink_devices, plan.uplink_ticks, boundary_at=0.0)
    harness.load(stream, "uplink")
    site = "farm-u0"
    tap = UplinkTap(harness.url, site, keep_points=True)
    try:
        result = harness.run(
            "edge", site, window=PACING_WINDOW, tap=tap, drain=True, timeout=run_timeout(stream.n)
        )
    finally:
        tap.close()
    figures = uplink_figures(stream, tap, result)
    echo(
        f"  {stream.n:,} readings: {figures['uplink.shipped_bytes_per_reading']:.2f} B/reading shipped, "
        f"reduction {figures['uplink.reduction_factor']:.1f}x"
    )
    return figures


def uplink_figures(stream: Stream, tap: UplinkTap, result: dict[str, Any]) -> dict[str, Any]:
    """Bytes and error of what the tap received from the node, against the original stream."""
    accepted = result["accepted"]
    stopped = result["stopped"]
    if accepted != stream.n:
        raise BenchError(f"uplink run: accepted {accepted} of {stream.n}")
    if tap.errors:
        raise BenchError(f"uplink run: undecodable uplink messages: {tap.errors[:3]}")
    if tap.points != stopped["readings_shipped"]:
        raise BenchError(
            f"uplink run: the tap decoded {tap.points} points, the node shipped {stopped['readings_shipped']}"
        )
    json_bytes = stream.json_bytes
    shipped = tap.bytes["batch"] + tap.bytes["agg"]
    worst, compared = 0.0, 0
    points_by_metric: Counter[str] = Counter()
    shipped_by_metric: Counter[str] = Counter()
    for payload in stream.payloads:
        r = _reading.decode(payload)
        for metric in r.metrics:
            points_by_metric[f"{r.kind}.{metric}"] += 1
        entry = tap.shipped.get((r.device, r.ts))
        if entry is None:
            continue
        kind, values = entry
        metrics = KINDS[kind].metrics
        for metric, value in values.items():
            original = r.metrics.get(metric)
            if original is not None:
                worst = max(worst, abs(value - original) / metrics[metric].resolution)
                compared += 1
                shipped_by_metric[f"{kind}.{metric}"] += 1
    missing = sum(len(values) for _, values in tap.shipped.values()) - compared
    if missing:
        raise BenchError(f"uplink run: {missing} shipped points match no original reading")
    points_in = stopped["points_in"]
    return {
        "uplink.json_bytes_per_reading": json_bytes / stream.n,
        "uplink.shipped_bytes_per_reading": shipped / accepted,
        "uplink.reduction_factor": json_bytes / shipped if shipped else None,
        "uplink.max_error_over_resolution": worst,
        "uplink.details": {
            "stream": _describe(stream),
            "readings_accepted": accepted,
            "points_in": points_in,
            "points_shipped": tap.points,
            "points_compared": compared,
            "selection_ratio": tap.points / points_in if points_in else None,
            "aggregated_points": tap.aggregated_points,
            "late_points": result.get("late"),
            "bytes": dict(tap.bytes),
            "messages": dict(tap.messages),
            "bytes_per_reading": {k: v / accepted for k, v in tap.bytes.items()},
            "agg_bytes_if_zstd": tap.agg_zstd_bytes,
            "selection_ratio_by_metric": {
                k: round(shipped_by_metric[k] / n, 4) for k, n in sorted(points_by_metric.items())
            },
            "resent_messages": tap.resent,
            "alerts": stopped.get("alerts"),
            "selection_scale_max": result.get("selection_scale_max"),
            "backlog_max": result.get("backlog_max"),
        },
    }
