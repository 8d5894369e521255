"""Dropouts: devices silent far longer than their usual interval, on the site's event time.

``SilenceWatch`` learns every device's usual interval; ``dropout_alerts`` raises a
``dropout`` alert (metric ``_device``) per device that has just gone silent, and
``heard_again`` clears it when the device publishes again. ``Detection`` (``detection.py``)
calls them; when to check is the caller's business (the node: every second and every 15 s of
event time; the quality bench: every fleet tick).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.point import Point
from pipeline.learn.periods import MS_PER_S
from pipeline.protocol import Alert, Reading
from pipeline.protocol.causes import DEVICE_METRIC, Cause

# The site's event time is this quantile of the devices' newest timestamps: up to a quarter of
# devices with clocks running ahead cannot make the others look silent.
SITE_TIME_QUANTILE = 0.75
NEVER_MS = -(2**62)  # a timestamp before any reading


@dataclass(frozen=True, slots=True)
class Silence:
    """A device that has gone silent: since ``last`` (its newest ts), for ``silent_ms``."""

    device: str
    kind: str
    last: int
    silent_ms: int
    usual_ms: float


@dataclass(slots=True)
class _Device:
    last: int
    kind: str
    gap: float = 0.0  # exponentially weighted mean interval, ms
    gaps: int = 0
    silent: bool = False


class SilenceWatch:
    """Dropout detection: which devices have been silent far longer than their usual interval.

    ``learn_one(device, ts)`` at every reading, with the reading's own timestamp; it
    returns True when the device was reported silent and is heard again (its dropout alert
    can be cleared). ``due(now)`` returns each device that has just gone silent, once per
    silence: silent means no reading for more than ``factor`` usual intervals and at least
    ``min_silence_ms``. The usual interval is an exponentially weighted mean of the gaps
    (weight ``alpha``); a device is watched after ``min_gaps`` gaps. ``due`` scans every
    device: call it about once a second, not per reading.

    Time is event time: the node passes ``site_time()`` as ``now``, so a replayed journal,
    a simulation faster than the wall clock or a late batch cannot fake a silence; a whole
    site going quiet is the node's health's business, not a device alert. ``site_time()``
    is a high quantile of the devices' newest timestamps, not the newest of all: one device
    whose clock runs a minute ahead must not make every other device look silent.

    >>> w = SilenceWatch(factor=3.0, min_gaps=5, min_silence_ms=0)
    >>> for t in range(0, 600_001, 60_000):
    ...     _ = w.learn_one("a", t)
    >>> w.due(700_000), [s.silent_ms for s in w.due(781_000)], w.due(900_000)
    ([], [181000], [])
    >>> w.learn_one("a", 960_000)
    True
    """

    def __init__(
        self, factor: float = 3.0, min_gaps: int = 10, min_silence_ms: int = 30_000, alpha: float = 0.1
    ) -> None:
        if factor <= 1.0:
            raise ValueError(f"factor must be above 1, got {factor}")
        if min_gaps < 1 or min_silence_ms < 0 or not 0.0 < alpha <= 1.0:
            raise ValueError("need min_gaps >= 1, min_silence_ms >= 0 and alpha in (0, 1]")
        self.factor = factor
        self.min_gaps = min_gaps
        self.min_silence_ms = min_silence_ms
        self.alpha = alpha
        self._devices: dict[str, _Device] = {}
        self.latest = NEVER_MS  # newest timestamp learned
        self.quantile = SITE_TIME_QUANTILE

    def __repr__(self) -> str:
        return (
            f"SilenceWatch(factor={self.factor}, min_gaps={self.min_gaps}, "
            f"min_silence_ms={self.min_silence_ms}, alpha={self.alpha})"
        )

    def learn_one(self, device: str, ts: int, kind: str = "") -> bool:
        """Record a reading; True if the device had been reported silent (it is back)."""
        if ts > self.latest:
            self.latest = ts
        d = self._devices.get(device)
        if d is None:
            self._devices[device] = _Device(ts, kind)
            return False
        gap = ts - d.last
        if gap <= 0:
            return False  # out of order or a repeat: no news about silence
        back = d.silent
        d.silent = False
        d.last = ts
        if back:
            return True  # the silence itself is not a usual gap
        d.gap = gap if d.gaps == 0 else d.gap + self.alpha * (gap - d.gap)
        d.gaps += 1
        return False

    def site_time(self) -> int:
        """The site's event time: robust to up to a quarter of devices with clocks ahead."""
        if not self._devices:
            return self.latest
        lasts = sorted(d.last for d in self._devices.values())
        return lasts[round(self.quantile * (len(lasts) - 1))]

    def due(self, now: int) -> list[Silence]:
        """Devices that went silent since the last call."""
        found = []
        for device, d in self._devices.items():
            if d.silent or d.gaps < self.min_gaps:
                continue
            silent = now - d.last
            if silent > self.factor * d.gap and silent >= self.min_silence_ms:
                d.silent = True
                found.append(Silence(device, d.kind, d.last, silent, d.gap))
        return found


def dropout_alerts(policy: AlertPolicy, watch: SilenceWatch) -> list[Alert]:
    """Raise a ``dropout`` alert (metric ``_device``, value: seconds silent) per newly silent device."""
    now = watch.site_time()
    alerts = []
    for s in watch.due(now):
        point = Point(s.device, s.kind, DEVICE_METRIC, now, 0, s.silent_ms / MS_PER_S, 1.0)
        reason = f"{Cause.DROPOUT}: silent for {s.silent_ms / MS_PER_S:.0f} s, usual interval {s.usual_ms / MS_PER_S:.1f} s"
        alert = policy.open_one(point, reason)
        if alert is not None:
            alerts.append(alert)
    return alerts


def heard_again(policy: AlertPolicy, reading: Reading) -> Alert | None:
    """Clear a device's dropout alert: it has published ``reading``."""
    point = Point(reading.device, reading.kind, DEVICE_METRIC, reading.ts, reading.seq, 0.0, 0.0)
    return policy.close_one(point, f"{Cause.DROPOUT}: heard again")
