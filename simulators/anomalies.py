"""Anomaly injection with exact ground truth.

An injection is an overlay on a device's clean signal: it changes values only inside its
label window [start, end] (in ticks) and nothing outside, never feeding back into the
device model. So a run with anomalies equals the same run without them everywhere but in
the labelled windows, which is what makes the labels exact (and testable). Inside a window
every reading deviates by at least one resolution step where the physics allows it (a dip
on a reading already at 0 cannot go lower). Two exceptions, both stated in the label's
anomaly name: ``stuck`` repeats the last good reading, which the clean signal may happen
to equal for a moment, and ``theft`` leaves the shelf short of the stolen items after its
window until the next restock (the theft is the drop, not the lower stock that follows).

Anomalies arrive per device as a Poisson process, one at a time, with a rate per anomaly
kind; their parameters come from the device's own anomaly generator, never from the
signal's, so the clean signal does not depend on which anomalies are enabled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from simulators.devices import GENERIC, DeviceModel
from simulators.retail import ColdCabinets
from simulators.signals import HOUR, MINUTE

DOMAIN_EVENTS = ("door_open", "irrigation_leak", "theft", "accident", "pollution_episode")
ANOMALIES = (*GENERIC, "dropout", *DOMAIN_EVENTS)

# How long each anomaly lasts, in simulated seconds (spike and dip: in readings).
DURATIONS: dict[str, tuple[float, float]] = {
    "level_shift": (10 * MINUTE, 1 * HOUR),
    "drift": (30 * MINUTE, 2 * HOUR),
    "stuck": (10 * MINUTE, 1 * HOUR),
    "noise_burst": (2 * MINUTE, 20 * MINUTE),
    "dropout": (2 * MINUTE, 30 * MINUTE),
    "door_open": (2 * MINUTE, 20 * MINUTE),
    "irrigation_leak": (20 * MINUTE, 2 * HOUR),
    "theft": (1 * MINUTE, 10 * MINUTE),
    "accident": (15 * MINUTE, 1 * HOUR),
    "pollution_episode": (1 * HOUR, 4 * HOUR),
}
SPIKE_READINGS = (1, 3)
# ... and at least this many readings, whatever the rate: what it takes for the anomaly to
# exist in the data. One missing reading is a lost packet (LoRaWAN loses a few per cent of
# uplinks by design), not a dropout; a value read twice by a 15-minute sensor is not a stuck
# sensor; one noisy reading is a spike. At 1 Hz and one a minute the durations above are
# longer than these floors (docs/decisions/0012-observable-anomalies.md).
MIN_READINGS: dict[str, int] = {"dropout": 4, "stuck": 6, "noise_burst": 3}

# Moisture rise in the leaking zone, in % per hour for each L/min of leak, and how fast the
# extra water drains away afterwards.
SOAK_PER_LITRE = 0.3
SOAK_CAP = 25.0
SOAK_DRAIN_S = 2 * HOUR


def applicable(model: type[DeviceModel]) -> tuple[str, ...]:
    """The anomaly kinds a device kind can show, in ``ANOMALIES`` order."""
    generic = {a for allowed in model.generic.values() for a in allowed}
    return tuple(a for a in ANOMALIES if a in generic or a == "dropout" or a in model.events)


def rates_for(
    model: type[DeviceModel], anomaly_rate: float, overrides: Mapping[str, float]
) -> dict[str, float]:
    """Rate per device per simulated hour of each anomaly kind the device kind can show.

    ``anomaly_rate`` is shared evenly between the applicable kinds; ``overrides`` sets a
    kind's rate outright (0 disables it).
    """
    kinds = applicable(model)
    share = anomaly_rate / len(kinds)
    return {a: float(overrides.get(a, share)) for a in kinds}


@dataclass(eq=False)
class Injection:
    """One anomaly on one device of a model: ``start``..``end`` is the label window in ticks."""

    anomaly: str
    device: int
    metrics: tuple[int, ...]
    start: int
    end: int
    silent: bool = False  # dropout: the device publishes nothing in the window

    def needed_after(self, tick: int) -> bool:
        """True while the injection still changes ticks after ``tick``."""
        return self.end > tick

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        """Change this device's raw block ``values`` (ticks, metrics), block starting at ``b0``."""

    def after_rounding(self, values: np.ndarray, b0: int, previous: np.ndarray) -> None:
        """Change the rounded block; ``previous`` is the rounded row before the block."""

    def span(self, b0: int, ticks: int, end: int | None = None) -> tuple[int, int]:
        """The part of [start, end] inside the block, as slice bounds relative to ``b0``."""
        last = self.end if end is None else end
        lo = max(self.start, b0) - b0
        hi = min(last, b0 + ticks - 1) - b0 + 1
        return lo, max(lo, hi)


@dataclass(eq=False)
class Shift(Injection):
    """spike, dip, level_shift: a constant offset."""

    delta: float = 0.0

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        lo, hi = self.span(b0, len(values))
        values[lo:hi, self.metrics[0]] += self.delta


@dataclass(eq=False)
class Drift(Injection):
    """A calibration drift: one step at first, growing linearly to ``total``."""

    step: float = 0.0
    total: float = 0.0

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        lo, hi = self.span(b0, len(values))
        k = np.arange(lo + b0, hi + b0) - self.start
        length = max(1, self.end - self.start)
        sign = math.copysign(1.0, self.total)
        offset = sign * (abs(self.step) + (abs(self.total) - abs(self.step)) * k / length)
        values[lo:hi, self.metrics[0]] += offset


@dataclass(eq=False)
class NoiseBurst(Injection):
    """Extra noise: each reading is off by at least one step, in a random direction."""

    sd: float = 0.0
    step: float = 0.0
    low: float = -math.inf
    high: float = math.inf
    rng: np.random.Generator | None = None

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        lo, hi = self.span(b0, len(values))
        assert self.rng is not None
        z = self.rng.standard_normal(hi - lo)
        column = values[lo:hi, self.metrics[0]]
        size = self.step + np.abs(z) * self.sd
        sign = np.where(z >= 0, 1.0, -1.0)
        # a count at 0 cannot read lower: push such readings up instead
        sign = np.where(
            column - size < self.low, 1.0, np.where(column + size > self.high, -1.0, sign)
        )
        values[lo:hi, self.metrics[0]] = column + sign * size


@dataclass(eq=False)
class Stuck(Injection):
    """The sensor repeats its last good reading for the whole window."""

    held: float | None = None

    def after_rounding(self, values: np.ndarray, b0: int, previous: np.ndarray) -> None:
        lo, hi = self.span(b0, len(values))
        if lo == hi:
            return
        column = self.metrics[0]
        if self.held is None:
            before = self.start - 1 - b0
            self.held = float(values[before, column] if before >= 0 else previous[column])
        values[lo:hi, column] = self.held


@dataclass(eq=False)
class Dropout(Injection):
    """The device is silent: the fleet publishes nothing for it in the window."""


@dataclass(eq=False)
class Scale(Injection):
    """accident: traffic collapses to ``factors`` of itself (count, speed)."""

    factors: tuple[float, ...] = ()

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        lo, hi = self.span(b0, len(values))
        for column, factor in zip(self.metrics, self.factors, strict=True):
            values[lo:hi, column] *= factor


@dataclass(eq=False)
class Episode(Injection):
    """pollution_episode: a smooth bump on every metric, at least one step high."""

    amplitudes: tuple[float, ...] = ()
    steps: tuple[float, ...] = ()

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        lo, hi = self.span(b0, len(values))
        k = np.arange(lo + b0, hi + b0) - self.start
        shape = np.sin(np.pi * (k + 0.5) / (self.end - self.start + 1))
        for column, amplitude, step in zip(self.metrics, self.amplitudes, self.steps, strict=True):
            values[lo:hi, column] += step + amplitude * shape


@dataclass(eq=False)
class Leak(Injection):
    """irrigation_leak at the valve: flow where there should be none."""

    flow: float = 0.0
    zone: int = 0
    rng: np.random.Generator | None = None

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        lo, hi = self.span(b0, len(values))
        assert self.rng is not None
        z = self.rng.standard_normal(hi - lo)
        values[lo:hi, self.metrics[0]] += self.flow * (1.0 + 0.03 * np.clip(z, -3.0, 3.0))


@dataclass(eq=False)
class Soak(Injection):
    """irrigation_leak seen by a soil probe of the zone: moisture rises, then drains away.

    ``origin`` is the leak's first tick, ``leak_ticks`` its length, ``rise`` the moisture
    gained per tick; the window holds exactly the ticks where the extra water is at least
    one step.
    """

    origin: int = 0
    leak_ticks: int = 1
    rise: float = 0.0
    decay: float = 1.0  # per tick after the leak stops
    step: float = 0.1

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        lo, hi = self.span(b0, len(values))
        k = np.arange(lo + b0, hi + b0) - self.origin
        values[lo:hi, self.metrics[0]] += np.maximum(self.extra(k), self.step)

    def extra(self, k: np.ndarray) -> np.ndarray:
        peak = min(SOAK_CAP, self.rise * self.leak_ticks)
        rising = np.minimum(SOAK_CAP, self.rise * (k + 1))
        draining = peak * self.decay ** (k - self.leak_ticks + 1.0)
        return np.where(k < self.leak_ticks, rising, draining)


def soak_for(leak: Leak, probe: int, column: int, dt: float, step: float) -> Soak | None:
    """The soil-probe side of a leak, or None when the extra water never reaches one step."""
    length = leak.end - leak.start + 1
    rise = leak.flow * SOAK_PER_LITRE * dt / HOUR
    first = max(0, math.ceil(step / rise) - 1)
    if first >= length:
        return None
    peak = min(SOAK_CAP, rise * length)
    decay = math.exp(-dt / SOAK_DRAIN_S)
    tail = math.floor(math.log(peak / step) / (dt / SOAK_DRAIN_S)) if peak > step else 0
    return Soak(
        anomaly="irrigation_leak",
        device=probe,
        metrics=(column,),
        start=leak.start + first,
        end=leak.start + length - 1 + tail,
        origin=leak.start,
        leak_ticks=length,
        rise=rise,
        decay=decay,
        step=step,
    )


@dataclass(eq=False)
class DoorOpen(Injection):
    """door_open: the door stays open, the cabinet warms, the compressor runs flat out.

    ``open_ticks`` ticks with door = 1; the temperature rises towards the store's air and,
    once the door shuts, falls back; the window ends at the last tick still one step warm.
    Power is the compressor's rated power over the whole window.
    """

    open_ticks: int = 1
    warm_by: float = 0.0  # °C the cabinet would gain if left open for ever
    warm_rate: float = 0.0  # per tick, while open
    cool_rate: float = 0.0  # per tick, after the door shuts
    step: float = 0.1
    running_power: float = 0.0  # W with the compressor on
    rng: np.random.Generator | None = None

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        temp, door, power = self.metrics
        lo, hi = self.span(b0, len(values))
        k = np.arange(lo + b0, hi + b0) - self.start
        warm = self.warming(k)
        values[lo:hi, temp] += np.where(warm >= self.step, warm, 0.0)
        values[lo:hi, door] = np.where(k < self.open_ticks, 1.0, values[lo:hi, door])
        assert self.rng is not None
        z = self.rng.standard_normal(hi - lo)
        values[lo:hi, power] = self.running_power * (1.0 + 0.01 * np.clip(z, -3.0, 3.0))

    def warming(self, k: np.ndarray) -> np.ndarray:
        opened = self.warm_by * (1.0 - np.exp(-self.warm_rate * (k + 1.0)))
        at_close = self.warm_by * (1.0 - math.exp(-self.warm_rate * self.open_ticks))
        closed = at_close * np.exp(-self.cool_rate * (k - self.open_ticks + 1.0))
        return np.where(k < self.open_ticks, opened, closed)


def door_open(
    device: int,
    metrics: tuple[int, int, int],
    start: int,
    open_ticks: int,
    warm_by: float,
    running_power: float,
    dt: float,
    step: float,
    rng: np.random.Generator,
) -> DoorOpen:
    warm_rate = dt / (10 * MINUTE)
    cool_rate = dt / (6 * MINUTE)
    at_close = warm_by * (1.0 - math.exp(-warm_rate * open_ticks))
    tail = math.floor(math.log(at_close / step) / cool_rate) if at_close > step else 0
    return DoorOpen(
        anomaly="door_open",
        device=device,
        metrics=metrics,
        start=start,
        end=start + open_ticks - 1 + tail,
        open_ticks=open_ticks,
        warm_by=warm_by,
        warm_rate=warm_rate,
        cool_rate=cool_rate,
        step=step,
        running_power=running_power,
        rng=rng,
    )


@dataclass(eq=False)
class Theft(Injection):
    """theft: ``items`` vanish over the window, with no footfall behind them.

    The shelf stays short by ``items`` after the window until it is next restocked.
    """

    items: int = 1
    restocked: bool = False

    def before_rounding(self, values: np.ndarray, b0: int, model: DeviceModel) -> None:
        ticks = len(values)
        lo, hi = self.span(b0, ticks, end=b0 + ticks - 1)
        if lo == hi or self.restocked:
            return
        k = np.arange(lo + b0, hi + b0) - self.start
        length = self.end - self.start + 1
        taken = np.minimum(self.items, np.ceil(self.items * (k + 1) / length))
        after = k >= length
        restocked = model.restocked
        if restocked is not None and after.any():
            refill = restocked[lo:hi, self.device] & after
            if refill.any():
                first = int(np.argmax(refill))
                taken[first:] = 0.0
                self.restocked = True
        values[lo:hi, self.metrics[0]] -= taken

    def needed_after(self, tick: int) -> bool:
        return not self.restocked


NEVER = 2**62


class AnomalySchedule:
    """Draws and applies the anomalies of the devices of one model, one at a time per device.

    ``rngs`` holds each device's anomaly generator; ``rates`` the rate per device per
    simulated hour of each anomaly kind; ``dt`` the seconds between ticks.
    """

    def __init__(
        self,
        model: DeviceModel,
        rngs: list[np.random.Generator],
        rates: Mapping[str, float],
        dt: float,
    ) -> None:
        self.model = model
        self.rngs = rngs
        self.dt = dt
        self.kinds = [a for a, r in rates.items() if r > 0]
        total = sum(rates[a] for a in self.kinds)
        self.weights = np.array([rates[a] / total for a in self.kinds]) if total else None
        self.per_tick = total * dt / HOUR
        self.next_start = [self._gap(r, 0) for r in rngs]
        self.active: list[list[Injection]] = [[] for _ in rngs]
        self.unlabelled: list[Injection] = []
        metrics = list(model.kind.metrics.values())
        self.steps = [m.resolution for m in metrics]
        self.lows = [m.low for m in metrics]
        self.highs = [m.high for m in metrics]
        self.names = [m.name for m in metrics]
        # Injections asked for by time (``SimOptions.inject``): (tick, device, anomaly, metric)
        self.planned: list[tuple[int, int, str, str | None, np.random.Generator]] = []

    def plan(self, tick: int, i: int, anomaly: str, metric: str | None, rng: np.random.Generator) -> None:
        """Start ``anomaly`` on device ``i`` at ``tick`` (on ``metric``, or one it may show on).

        Its size and length are drawn from ``rng`` as for a random one of its kind; it starts
        whatever else the device shows, and the random anomalies of the device wait for its end.
        """
        self.planned.append((tick, i, anomaly, metric, rng))
        self.planned.sort(key=lambda p: p[0])

    def _gap(self, rng: np.random.Generator, after: int) -> int:
        """The next start: at least one tick after ``after``, then an exponential wait."""
        if self.per_tick <= 0:
            return NEVER
        return after + 1 + int(rng.exponential(1.0 / self.per_tick))

    def start_due(self, b0: int, raw: np.ndarray) -> list[Injection]:
        """Start every anomaly due in the block [b0, b0 + len(raw)); ``raw`` is the clean block."""
        started: list[Injection] = []
        b1 = b0 + len(raw)
        while self.planned and self.planned[0][0] < b1:
            start, i, anomaly, metric, planned_rng = self.planned.pop(0)
            injection = self._draw(i, start, raw[start - b0, i], planned_rng, anomaly, metric)
            self.active[i].append(injection)
            self.unlabelled.append(injection)
            started.append(injection)
            self.next_start[i] = max(self.next_start[i], injection.end + 1)
        for i, rng in enumerate(self.rngs):
            while self.next_start[i] < b1:
                start = self.next_start[i]
                if any(j.needed_after(start - 1) for j in self.active[i]):
                    # one at a time: wait for the last one (a theft's short shelf) to end
                    self.next_start[i] = self._gap(rng, start)
                    continue
                injection = self._draw(i, start, raw[start - b0, i], rng)
                self.active[i].append(injection)
                self.unlabelled.append(injection)
                started.append(injection)
                self.next_start[i] = self._gap(rng, injection.end + 1)
        return started

    def adopt(self, injection: Injection) -> bool:
        """Take an injection caused by another device (a leak's soak) if the device is free."""
        i = injection.device
        for other in self.active[i]:
            if other.start <= injection.end + 1 and other.end >= injection.start - 1:
                return False
        self.active[i].append(injection)
        self.unlabelled.append(injection)
        if self.next_start[i] <= injection.end + 1:
            self.next_start[i] = self._gap(self.rngs[i], injection.end + 1)
        return True

    def before_rounding(self, raw: np.ndarray, b0: int) -> None:
        for i, injections in enumerate(self.active):
            for injection in injections:
                injection.before_rounding(raw[:, i, :], b0, self.model)

    def after_rounding(self, rounded: np.ndarray, b0: int, previous: np.ndarray) -> None:
        for i, injections in enumerate(self.active):
            for injection in injections:
                injection.after_rounding(rounded[:, i, :], b0, previous[i])

    def silent(self, b0: int, ticks: int) -> list[tuple[int, int, int]]:
        """(device, lo, hi) block-relative slices in which a device is silent."""
        spans = []
        for i, injections in enumerate(self.active):
            for injection in injections:
                if injection.silent:
                    lo, hi = injection.span(b0, ticks)
                    if hi > lo:
                        spans.append((i, lo, hi))
        return spans

    def retire(self, last_tick: int) -> None:
        """Forget injections that change nothing after ``last_tick``."""
        for injections in self.active:
            if injections:
                injections[:] = [j for j in injections if j.needed_after(last_tick)]

    def due(self, tick: int) -> list[Injection]:
        """Injections whose label window ends at ``tick``, removed from the unlabelled list."""
        if not self.unlabelled:
            return []
        ready = [j for j in self.unlabelled if j.end == tick]
        if ready:
            self.unlabelled = [j for j in self.unlabelled if j.end != tick]
        return ready

    # --- drawing one anomaly ------------------------------------------------------------

    def _draw(
        self,
        i: int,
        start: int,
        row: np.ndarray,
        rng: np.random.Generator,
        anomaly: str | None = None,
        metric: str | None = None,
    ) -> Injection:
        """One anomaly of a kind drawn by rate (or ``anomaly``; generic ones on ``metric`` if given)."""
        if anomaly is None:
            assert self.weights is not None
            anomaly = self.kinds[int(rng.choice(len(self.kinds), p=self.weights))]
        if anomaly in ("spike", "dip"):
            length = int(rng.integers(SPIKE_READINGS[0], SPIKE_READINGS[1] + 1))
        else:
            low, high = DURATIONS[anomaly]
            length = max(MIN_READINGS.get(anomaly, 1), round(rng.uniform(low, high) / self.dt))
        end = start + length - 1
        if anomaly in GENERIC:
            return self._generic(anomaly, i, start, end, row, rng, metric)
        every = tuple(range(len(self.names)))
        model = self.model
        match anomaly:
            case "dropout":
                return Dropout(anomaly, i, every, start, end, silent=True)
            case "door_open":
                assert isinstance(model, ColdCabinets)
                warm_by = 0.6 * (21.0 - model.setpoint)
                power = float(model.rated_power[i] + model.standby[i])
                return door_open(
                    i, (0, 1, 2), start, length, warm_by, power, self.dt, self.steps[0], rng
                )
            case "irrigation_leak":
                flow = rng.uniform(3.0, 15.0)
                return Leak(
                    anomaly, i, (0,), start, end, flow=flow, zone=int(model.zones[i]), rng=rng
                )
            case "theft":
                return Theft(anomaly, i, (0,), start, end, items=int(rng.integers(5, 31)))
            case "accident":
                factors = (rng.uniform(0.05, 0.3), rng.uniform(0.15, 0.4))
                return Scale(anomaly, i, (0, 1), start, end, factors=factors)
            case "pollution_episode":
                amplitudes = (rng.uniform(30.0, 150.0), rng.uniform(20.0, 80.0))
                steps = (self.steps[0], self.steps[1])
                return Episode(anomaly, i, (0, 1), start, end, amplitudes=amplitudes, steps=steps)
        raise ValueError(f"no injector for anomaly {anomaly!r}")

    def _generic(
        self,
        anomaly: str,
        i: int,
        start: int,
        end: int,
        row: np.ndarray,
        rng: np.random.Generator,
        metric: str | None = None,
    ) -> Injection:
        names = [n for n, allowed in self.model.generic.items() if anomaly in allowed]
        name = names[int(rng.integers(len(names)))] if metric is None else metric
        column = self.names.index(name)
        scale = self.model.scales[name]
        step = self.steps[column]
        metrics = (column,)
        match anomaly:
            case "spike":
                return Shift(anomaly, i, metrics, start, end, delta=rng.uniform(5, 10) * scale)
            case "dip":
                return Shift(anomaly, i, metrics, start, end, delta=-rng.uniform(5, 10) * scale)
            case "level_shift":
                size = rng.uniform(2, 4) * scale
                delta = size * self._sign(rng, float(row[column]), size, column)
                return Shift(anomaly, i, metrics, start, end, delta=delta)
            case "drift":
                size = rng.uniform(3, 6) * scale
                total = size * self._sign(rng, float(row[column]), size, column)
                return Drift(anomaly, i, metrics, start, end, step=step, total=total)
            case "stuck":
                return Stuck(anomaly, i, metrics, start, end)
            case _:  # noise_burst
                sd = rng.uniform(1.5, 3.0) * scale
                low, high = self.lows[column], self.highs[column]
                return NoiseBurst(
                    anomaly, i, metrics, start, end, sd=sd, step=step, low=low, high=high, rng=rng
                )

    def _sign(self, rng: np.random.Generator, value: float, size: float, column: int) -> float:
        """Up or down at random, unless only the other way has room for ``size``."""
        sign = 1.0 if rng.random() < 0.5 else -1.0
        up, down = self.highs[column] - value, value - self.lows[column]
        if sign > 0 and up < size and down > up:
            return -1.0
        if sign < 0 and down < size and up > down:
            return 1.0
        return sign
