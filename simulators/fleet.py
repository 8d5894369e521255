"""The fleet runner: every device of every site, tick by tick, published through a ``Publisher``.

Flow of one run::

    for each block of 32 ticks:
        for each site:   environment.block(t)            shared weather, opening hours, traffic
                         model.block(t, env)             clean raw values, per device kind
                         schedule.start_due(...)          anomalies that begin in the block
                         (leaks also soak the zone's soil probes)
                         overlays, clip, round            anomalies change only their windows
                         silences (dropout), malformed payloads (bad_rate)
        for each tick:   [pace to the wall clock]
                         for each site: readings, then the labels whose window ended

Time: ``duration`` is in wall seconds and the run covers ``duration * speed`` simulated
seconds. With ``realtime`` it is paced so that it takes ``duration`` wall seconds; without,
it goes as fast as it can and produces exactly the same stream. The stream depends only on
the options (``start_ms`` included), so ``--out`` files of two runs are byte-identical.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from pipeline.errors import ConfigError
from pipeline.protocol.catalog import domain_of_site
from pipeline.protocol.json_codec import encode
from pipeline.protocol.messages import SCHEMA_VERSION, Label, Reading
from pipeline.protocol.topics import DEFAULT_ROOT, Topics, is_valid_id
from simulators.anomalies import ANOMALIES, AnomalySchedule, Injection, Leak, rates_for, soak_for
from simulators.bad import BAD_KINDS, malformed
from simulators.devices import GENERIC, DeviceModel
from simulators.domains import DOMAINS, MODELS
from simulators.formats import FORMATS, foreign_message
from simulators.output import Publisher, SimReport, Sink, wait_until
from simulators.signals import ANOMALY, BAD, ENVIRONMENT, PLANNED, SIGNAL, generator, quantise

BLOCK = 32  # ticks generated at once; fixed, because the random streams are drawn per block
MAX_RATE = 1000.0  # readings per second per device: timestamps are whole milliseconds
MAX_SIM_SECONDS = 10 * 365.25 * 86400  # simulated span of one run: keeps a default start after 1970
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time a reading may carry


@dataclass(frozen=True, slots=True)
class Inject:
    """An anomaly asked for by time: ``anomaly`` on ``device`` (at every site that has it), on
    ``metric`` (None: one the anomaly may show on), ``at_s`` simulated seconds after the start.

    Written ``ANOMALY@SECONDS:DEVICE[.METRIC]`` (``parse_inject``); generic anomalies only
    (``simulators.GENERIC``): a domain event needs more of the site than one device.
    """

    anomaly: str
    at_s: float
    device: str
    metric: str | None = None

    def __str__(self) -> str:
        metric = "" if self.metric is None else f".{self.metric}"
        return f"{self.anomaly}@{self.at_s:g}:{self.device}{metric}"


def parse_inject(text: str) -> Inject:
    """Parse ``spike@12:soil_probe-0001.moisture`` (``ConfigError`` naming ``sim.inject`` if bad)."""
    form = "ANOMALY@SECONDS:DEVICE[.METRIC], e.g. spike@12:soil_probe-0001.moisture"
    anomaly, at, rest = text.strip().partition("@")
    seconds, colon, target = rest.partition(":")
    device, _, metric = target.partition(".")
    if not anomaly.strip() or not at or not colon or not device:
        raise ConfigError("sim.inject", text, form)
    try:
        at_s = float(seconds)
    except ValueError:
        raise ConfigError("sim.inject", text, form) from None
    return Inject(anomaly.strip(), at_s, device.strip(), metric.strip() or None)


@dataclass(frozen=True)
class SimOptions:
    """What to simulate. Invalid values raise ``ConfigError`` naming the ``sim.*`` key.

    ``rate`` is readings per simulated second per device. ``duration`` is wall seconds: the
    run covers ``duration * speed`` simulated seconds, paced to the wall clock when
    ``realtime``, as fast as possible otherwise (same stream either way). ``start_ms`` is the
    simulated start (Unix ms); None means ``default_start_ms(options, now)``, which is not
    reproducible: pass it explicitly for identical runs. ``anomaly_rate`` is anomalies per
    device per simulated hour, shared evenly between the kinds a device can show;
    ``anomaly_rates`` sets single kinds outright (``{"spike": 2, "dropout": 0}``).
    ``bad_rate`` is the fraction of readings replaced by malformed payloads. ``inject`` adds
    anomalies at given times (``Inject``), beside the random ones.
    """

    sites: tuple[str, ...] = ("farm", "retail", "city")
    devices_per_site: int = 10
    rate: float = 1.0
    duration: float = 60.0
    speed: float = 1.0
    seed: int = 0
    qos: int = 0
    bad_rate: float = 0.0
    anomaly_rate: float = 0.1
    anomaly_rates: Mapping[str, float] = field(default_factory=dict)
    start_ms: int | None = None
    topic_root: str = DEFAULT_ROOT
    realtime: bool = False
    latitude: float = 45.0
    format: str = "edgepipe"  # the payload format devices publish in (simulators/formats.py)
    inject: tuple[Inject, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))
        object.__setattr__(self, "inject", tuple(self.inject))
        object.__setattr__(self, "anomaly_rates", dict(self.anomaly_rates))
        _check(bool(self.sites), "sites", self.sites, "at least one site")
        for site in self.sites:
            _check(is_valid_id(site), "sites", site, "ids of letters, digits, _ and -")
            try:
                domain_of_site(site)
            except ValueError as exc:
                raise ConfigError("sim.sites", site, str(exc)) from None
        _check(len(set(self.sites)) == len(self.sites), "sites", self.sites, "no site twice")
        _check(self.devices_per_site >= 1, "devices_per_site", self.devices_per_site, ">= 1")
        _check(0 < self.rate <= MAX_RATE, "rate", self.rate, f"> 0 and <= {MAX_RATE:g}")
        _check(self.duration > 0 and math.isfinite(self.duration), "duration", self.duration, "> 0")
        _check(self.speed > 0 and math.isfinite(self.speed), "speed", self.speed, "> 0")
        too_long = "speed" if self.speed > 1 else "duration"  # the factor that made it so
        _check(
            self.sim_seconds <= MAX_SIM_SECONDS,
            too_long,
            getattr(self, too_long),
            f"duration x speed = {self.sim_seconds:g} simulated s, at most {MAX_SIM_SECONDS:g} (10 years)",
        )
        start_ok = self.start_ms is None or 0 <= self.start_ms <= MAX_TS_MS - self.sim_seconds * 1000
        _check(start_ok, "start_ms", self.start_ms, "Unix ms from 0 with the run ending before year 10000")
        _check(self.seed >= 0, "seed", self.seed, ">= 0")
        _check(self.qos in (0, 1, 2), "qos", self.qos, "0, 1 or 2")
        _check(0.0 <= self.bad_rate <= 1.0, "bad_rate", self.bad_rate, "between 0 and 1")
        _check(self.anomaly_rate >= 0, "anomaly_rate", self.anomaly_rate, ">= 0")
        for name, value in self.anomaly_rates.items():
            _check(name in ANOMALIES, "anomaly_rates", name, f"one of {', '.join(ANOMALIES)}")
            _check(value >= 0, f"anomaly_rates.{name}", value, ">= 0")
        root_ok = bool(self.topic_root) and not set("+#") & set(self.topic_root)
        _check(root_ok, "topic_root", self.topic_root, "a topic without wildcards")
        _check(-90 <= self.latitude <= 90, "latitude", self.latitude, "between -90 and 90")
        _check(self.format in FORMATS, "format", self.format, f"one of {', '.join(FORMATS)}")
        for planned in self.inject:
            _check(planned.anomaly in GENERIC, "inject", str(planned), f"an anomaly of {', '.join(GENERIC)}")
            within = 0 <= planned.at_s < self.sim_seconds
            _check(within, "inject", str(planned), f"a time from 0 to below {self.sim_seconds:g} simulated s")
            _check(self._has_device(planned), "inject", str(planned), "a device (and metric) the sites have")

    def _has_device(self, planned: Inject) -> bool:
        """True when a site of this run has the device, and its kind the metric for the anomaly."""
        kind, _, number = planned.device.rpartition("-")
        if not number.isdigit() or int(number) < 1:
            return False
        for site in self.sites:
            domain = DOMAINS[domain_of_site(site)]
            kinds = [domain.kind_at(i) for i in range(self.devices_per_site)]
            if kinds.count(kind) >= int(number):
                allowed = MODELS[kind].generic
                if any(planned.anomaly in allowed.get(m, ()) for m in allowed if planned.metric in (None, m)):
                    return True
        return False

    @property
    def sim_seconds(self) -> float:
        return self.duration * self.speed


def _check(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"sim.{key}", value, allowed)


def default_start_ms(options: SimOptions, now_ms: int) -> int:
    """A start, on a whole minute, that keeps every reading at or before the wall clock.

    Faster than real time the simulation runs ahead, and an edge refuses readings more than
    five minutes in its future: so the run starts in the past by as much as it will gain
    (all of it when not paced).
    """
    ahead = options.duration * (options.speed - 1.0) if options.realtime else options.sim_seconds
    start = now_ms - int(max(0.0, ahead) * 1000)
    return start - start % 60_000


def parse_anomaly_rates(text: str) -> dict[str, float]:
    """Parse ``spike=2,dropout=0`` (per device per simulated hour) for ``anomaly_rates``."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in ANOMALIES:
            raise ConfigError(
                "sim.anomaly_rates", part, f"name=rate, name one of {', '.join(ANOMALIES)}"
            )
        try:
            rate = float(value)
        except ValueError:
            raise ConfigError(f"sim.anomaly_rates.{name}", value, "a number >= 0") from None
        if not rate >= 0:
            raise ConfigError(f"sim.anomaly_rates.{name}", value, "a number >= 0")
        rates[name] = rate
    return rates


@dataclass(frozen=True, slots=True)
class Timeline:
    """Tick k happens at ``start_ms + k * period``; the period is kept in whole microseconds."""

    start_ms: int
    period_us: int
    ticks: int

    @classmethod
    def of(cls, options: SimOptions, start_ms: int) -> Timeline:
        period_us = max(1000, round(1e6 / options.rate))
        return cls(start_ms, period_us, int(options.sim_seconds * 1e6 // period_us))

    @property
    def dt(self) -> float:
        return self.period_us / 1e6

    def tick_ms(self, tick: int) -> int:
        return self.start_ms + tick * self.period_us // 1000

    def seconds(self, b0: int, count: int) -> np.ndarray:
        """Unix seconds of ticks b0 .. b0 + count - 1."""
        ticks = np.arange(b0, b0 + count, dtype=np.int64)
        return (self.start_ms * 1000 + ticks * self.period_us) / 1e6


class DeviceGroup:
    """The devices of one kind at one site: their model, anomalies, and what they publish."""

    def __init__(
        self,
        site: str,
        model_type: type[DeviceModel],
        indices: list[int],
        numbers: list[int],
        zones: list[int],
        options: SimOptions,
        timeline: Timeline,
        topics: Topics,
    ) -> None:
        self.kind = model_type.kind_name
        self.site = site
        self.format = options.format
        seed = options.seed
        signal = [generator(seed, site, SIGNAL, i) for i in indices]
        self.ids = [f"{self.kind}-{n:04d}" for n in numbers]
        self.topics = [topics.reading(site, d) for d in self.ids]
        jitter = min(timeline.period_us // 1000, 1000)
        self.offsets = [int(r.random() * jitter) for r in signal]  # devices are not in lockstep
        self.model = model_type(signal, zones, timeline.dt)
        self.schedule = AnomalySchedule(
            self.model,
            [generator(seed, site, ANOMALY, i) for i in indices],
            rates_for(model_type, options.anomaly_rate, options.anomaly_rates),
            timeline.dt,
        )
        for planned in options.inject:
            if planned.device in self.ids:
                i = self.ids.index(planned.device)
                tick = round(planned.at_s * 1e6 / timeline.period_us)
                rng = generator(seed, site, PLANNED, indices[i])
                self.schedule.plan(tick, i, planned.anomaly, planned.metric, rng)
        self.bad_rate = options.bad_rate
        self.bad_rngs = [generator(seed, site, BAD, i) for i in indices] if self.bad_rate else []
        metrics = list(self.model.kind.metrics.values())
        self.names = [m.name for m in metrics]
        self.metric_limits = [(m.resolution, m.low, m.high) for m in metrics]
        self.previous = np.zeros((len(indices), len(metrics)))
        self.rows: list[list[list[float]]] = []
        self.specials: dict[int, dict[int, tuple[str, bytes] | None]] = {}
        self.due: dict[int, list[Injection]] = {}
        self.timeline = timeline

    def finish(self, b0: int, raw: np.ndarray) -> None:
        """Apply the anomalies to the clean block ``raw``, round it, and plan silences and bad payloads."""
        self.schedule.before_rounding(raw, b0)
        rounded = np.empty_like(raw)
        for c, (resolution, low, high) in enumerate(self.metric_limits):
            rounded[..., c] = quantise(raw[..., c], resolution, low, high)
        self.schedule.after_rounding(rounded, b0, self.previous)
        self.previous = rounded[-1].copy()
        self.rows = rounded.tolist()
        ticks = len(raw)
        self.specials = {}
        for i, lo, hi in self.schedule.silent(b0, ticks):
            for k in range(lo, hi):
                self.specials.setdefault(k, {})[i] = None
        if self.bad_rate:
            self._plan_bad(b0, ticks)
        self.due = {}
        for injection in self.schedule.unlabelled:
            if b0 <= injection.end < b0 + ticks:
                self.due.setdefault(injection.end - b0, []).append(injection)
        self.schedule.retire(b0 + ticks - 1)

    def _plan_bad(self, b0: int, ticks: int) -> None:
        n = len(self.ids)
        for i, rng in enumerate(self.bad_rngs):
            hits = np.flatnonzero(rng.random(ticks) < self.bad_rate).tolist()
            for k in hits:
                bad_kind = BAD_KINDS[int(rng.integers(len(BAD_KINDS)))]
                tick = b0 + k
                reading = {
                    "v": SCHEMA_VERSION,
                    "device": self.ids[i],
                    "kind": self.kind,
                    "ts": self.timeline.tick_ms(tick) + self.offsets[i],
                    "seq": tick,
                    "metrics": dict(zip(self.names, self.rows[k][i], strict=True)),
                }
                other = self.ids[(i + 1) % n] if n > 1 else f"{self.ids[i]}-twin"
                payload = malformed(bad_kind, rng, reading, other)
                slot = self.specials.setdefault(k, {})
                if i not in slot:  # a silent device sends nothing, not even garbage
                    slot[i] = (bad_kind, payload)

    def emit(self, k: int, tick: int, tick_ms: int, sink: Sink) -> int:
        """Publish tick ``tick`` (row ``k`` of the block); returns the good readings sent."""
        kind, names, v = self.kind, self.names, SCHEMA_VERSION
        topics = self.topics
        if self.format == "edgepipe":
            payloads: list[bytes | None] = [
                encode(
                    Reading(v, device, kind, tick_ms + offset, tick, dict(zip(names, row, strict=True)))
                )
                for device, offset, row in zip(self.ids, self.offsets, self.rows[k], strict=True)
            ]
        else:  # --format: as that system would publish it (simulators/formats.py)
            pairs = [
                foreign_message(
                    self.format,
                    self.site,
                    Reading(v, device, kind, tick_ms + offset, tick, dict(zip(names, row, strict=True))),
                )
                for device, offset, row in zip(self.ids, self.offsets, self.rows[k], strict=True)
            ]
            topics = [topic for topic, _ in pairs]
            payloads = [payload for _, payload in pairs]
        special = self.specials.get(k)
        bad: list[tuple[str, str, bytes]] = []
        if special:
            for i, entry in special.items():
                payloads[i] = None
                if entry is not None:
                    bad.append((topics[i], *entry))
        publisher, out, qos = sink.publisher, sink.out, sink.qos
        if publisher is not None:
            publish = publisher.publish
            for topic, payload in zip(topics, payloads, strict=True):
                if payload is not None:
                    publish(topic, payload, qos, False)
        if out is not None:
            out.write(
                "".join(
                    f"{topic}\t{payload.decode()}\n"
                    for topic, payload in zip(topics, payloads, strict=True)
                    if payload is not None
                )
            )
        for topic, bad_kind, payload in bad:
            sink.bad(topic, payload, bad_kind)
        return len(payloads) - (len(special) if special else 0)

    def label(self, site: str, injection: Injection, end: int) -> Label:
        offset = self.offsets[injection.device]
        return Label(
            v=SCHEMA_VERSION,
            site=site,
            device=self.ids[injection.device],
            metrics=[self.names[c] for c in injection.metrics],
            anomaly=injection.anomaly,
            start=self.timeline.tick_ms(injection.start) + offset,
            end=self.timeline.tick_ms(end) + offset,
        )


class SiteFleet:
    """Every device of one site, sharing the site's environment."""

    def __init__(self, site: str, options: SimOptions, timeline: Timeline, topics: Topics) -> None:
        self.site = site
        domain = DOMAINS[domain_of_site(site)]
        env_rng = generator(options.seed, site, ENVIRONMENT)
        self.environment = domain.environment(env_rng, timeline.dt, options.latitude)
        by_kind: dict[str, list[int]] = {}
        for index in range(options.devices_per_site):
            by_kind.setdefault(domain.kind_at(index), []).append(index)
        # soil_probe-0001 is the first soil probe of the site, whatever the site's size
        self.groups = [
            DeviceGroup(
                site,
                MODELS[kind],
                indices,
                list(range(1, len(indices) + 1)),
                [domain.zone_of(i) for i in indices],
                options,
                timeline,
                topics,
            )
            for kind, indices in by_kind.items()
        ]
        self.labels_topic = topics.labels(site)
        self.devices = options.devices_per_site
        self.dt = timeline.dt

    def prepare(self, b0: int, t: np.ndarray) -> None:
        env = self.environment.block(t)
        raws = [g.model.block(t, env) for g in self.groups]
        started: list[Injection] = []
        for group, raw in zip(self.groups, raws, strict=True):
            started.extend(group.schedule.start_due(b0, raw))
        probes = next((g for g in self.groups if g.kind == "soil_probe"), None)
        for injection in started:
            if isinstance(injection, Leak) and probes is not None:
                self._soak(injection, probes)
        for group, raw in zip(self.groups, raws, strict=True):
            group.finish(b0, raw)

    def _soak(self, leak: Leak, probes: DeviceGroup) -> None:
        """A leaking valve wets the soil of its zone: the zone's probes see moisture rise."""
        step = probes.metric_limits[0][0]
        for p, zone in enumerate(probes.model.zones.tolist()):
            if zone == leak.zone:
                soak = soak_for(leak, p, 0, self.dt, step)
                if soak is not None:
                    probes.schedule.adopt(soak)

    def emit(self, k: int, tick: int, tick_ms: int, sink: Sink) -> int:
        sent = 0
        for group in self.groups:
            sent += group.emit(k, tick, tick_ms, sink)
        for group in self.groups:
            for injection in group.due.pop(k, ()):
                group.schedule.unlabelled.remove(injection)
                sink.label(self.labels_topic, group.label(self.site, injection, injection.end))
        return sent

    def close(self, last_tick: int, sink: Sink) -> None:
        """Label the windows still open when the run ends, cut at the last tick sent."""
        for group in self.groups:
            for injection in group.schedule.unlabelled:
                if injection.start <= last_tick:
                    end = min(injection.end, last_tick)
                    sink.label(self.labels_topic, group.label(self.site, injection, end))
            group.schedule.unlabelled = []


def run(
    options: SimOptions,
    publisher: Publisher | None = None,
    out: TextIO | None = None,
    labels_out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> SimReport:
    """Simulate the fleet and publish it; bounded by ``options.duration`` and by ``stop``.

    Readings go to ``{root}/{site}/dev/{device}`` at ``options.qos``, labels to
    ``{root}/{site}/labels`` at QoS 1 as each window closes (and to ``labels_out`` as JSON
    lines); ``out`` gets every publication as a ``topic<TAB>payload`` line.
    """
    start_ms = options.start_ms
    if start_ms is None:
        start_ms = default_start_ms(options, int(time.time() * 1000))
    timeline = Timeline.of(options, start_ms)
    topics = Topics(options.topic_root)
    sites = [SiteFleet(site, options, timeline, topics) for site in options.sites]
    report = SimReport(devices=sum(s.devices for s in sites))
    sink = Sink(publisher, out, labels_out, options.qos, report)
    began = time.monotonic()
    last = -1
    running = True
    for b0 in range(0, timeline.ticks, BLOCK):
        seconds = timeline.seconds(b0, BLOCK)
        for site in sites:
            site.prepare(b0, seconds)
        for k in range(min(BLOCK, timeline.ticks - b0)):
            tick = b0 + k
            if options.realtime:
                running = wait_until(began + tick * timeline.dt / options.speed, stop)
            elif stop is not None:
                running = not stop.is_set()
            if not running:
                break
            tick_ms = timeline.tick_ms(tick)
            for site in sites:
                report.readings_published += site.emit(k, tick, tick_ms, sink)
            last = tick
        if not running:
            break
    if options.realtime and running:
        wait_until(began + options.duration, stop)  # the run lasts its duration
    for site in sites:
        site.close(last, sink)
    report.stopped = last + 1 < timeline.ticks
    report.sim_seconds = (last + 1) * timeline.dt
    report.seconds = time.monotonic() - began
    sent = report.readings_published + report.bad_published
    report.readings_per_s = sent / report.seconds if report.seconds > 0 else 0.0
    return report
