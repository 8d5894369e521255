"""Dropouts: devices silent far longer than their usual interval, on the site's event time.

``SilenceWatch`` learns every device's usual interval; ``dropout_alerts`` raises a
``dropout`` alert (metric ``_device``) per device that has just gone silent, and
``heard_again`` clears it when the device publishes again. ``Detection`` (``detection.py``)
calls them; when to check is the caller's business (the node: every 15 s of event time; the
quality bench: every fleet tick). Whenever it checks, the answer is the same: silence is
judged at event-time checkpoints behind the site's watermark.
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
SILENCE_CHECK_MS = 15_000  # event time between checkpoints (half the shortest silence, 30 s)


@dataclass(frozen=True, slots=True)
class Silence:
    """A device that has gone silent: since ``last`` (its newest ts), for ``silent_ms`` at checkpoint ``at``."""

    device: str
    kind: str
    last: int
    silent_ms: int
    usual_ms: float
    at: int = 0


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
    returns True when the device was silent and is heard again (its dropout alert can be
    cleared). Silent means no reading for more than ``factor`` usual intervals and at least
    ``min_silence_ms``, judged at **checkpoints**, the multiples of ``check_ms`` of event
    time: a device last heard at ``last`` is silent from the first checkpoint past that bound,
    ``silent_from(device)``, a function of its own stream alone. The usual interval is an
    exponentially weighted mean of the gaps (weight ``alpha``); a device is watched after
    ``min_gaps`` gaps.

    Who says so, and when, is event time, never arrival order or the wall clock
    (docs/decisions/0011-event-time-watermark.md). ``due()`` reports the devices silent at a
    checkpoint the site's **watermark** has passed: the site's event time (``site_time()``,
    a high quantile of the devices' newest timestamps: one device whose clock runs ahead
    cannot make the others look silent) minus ``lateness_ms``, the lateness the site allows
    a reading. A device whose next reading arrives before the watermark has passed its
    checkpoint but lies after it was silent all the same: ``learn_one`` keeps that silence
    in ``missed`` (the caller raises and clears it), so the same stream gives the same
    dropouts whether the others or the device itself were heard first. A whole site going
    quiet moves no watermark: that is the node's health's business, not a device alert.

    >>> w = SilenceWatch(factor=3.0, min_gaps=5, min_silence_ms=0, check_ms=1_000)
    >>> for t in range(0, 600_001, 60_000):
    ...     _ = w.learn_one("a", t)
    >>> w.silent_from("a")
    781000
    >>> w.due(700_000), [(s.at, s.silent_ms) for s in w.due(790_000)], w.due(900_000)
    ([], [(781000, 181000)], [])
    >>> w.learn_one("a", 960_000), w.missed
    (True, [])
    """

    def __init__(
        self,
        factor: float = 3.0,
        min_gaps: int = 10,
        min_silence_ms: int = 30_000,
        alpha: float = 0.1,
        check_ms: int = SILENCE_CHECK_MS,
        lateness_ms: int = 0,
    ) -> None:
        if factor <= 1.0:
            raise ValueError(f"factor must be above 1, got {factor}")
        if min_gaps < 1 or min_silence_ms < 0 or not 0.0 < alpha <= 1.0:
            raise ValueError("need min_gaps >= 1, min_silence_ms >= 0 and alpha in (0, 1]")
        if check_ms < 1 or lateness_ms < 0:
            raise ValueError(f"need check_ms >= 1 and lateness_ms >= 0, got {check_ms} and {lateness_ms}")
        self.factor = factor
        self.min_gaps = min_gaps
        self.min_silence_ms = min_silence_ms
        self.alpha = alpha
        self.check_ms = check_ms
        self.lateness_ms = lateness_ms
        self._devices: dict[str, _Device] = {}
        self.latest = NEVER_MS  # newest timestamp learned
        self.quantile = SITE_TIME_QUANTILE
        self.watermark = NEVER_MS  # checkpoints up to here are judged (never moves back)
        self.missed: list[Silence] = []  # silences learn_one found (the device was heard first)

    def __repr__(self) -> str:
        return (
            f"SilenceWatch(factor={self.factor}, min_gaps={self.min_gaps}, "
            f"min_silence_ms={self.min_silence_ms}, alpha={self.alpha}, "
            f"check_ms={self.check_ms}, lateness_ms={self.lateness_ms})"
        )

    def learn_one(self, device: str, ts: int, kind: str = "") -> bool:
        """Record a reading; True if the device had been silent (it is back: clear its alert).

        A silence the watermark had not reached yet is appended to ``missed``.
        """
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
        if not back and d.gaps >= self.min_gaps:
            at = self._silent_from(d)
            if ts > at:  # silent at a checkpoint before this reading: heard before the watermark got there
                self.missed.append(Silence(device, d.kind, d.last, at - d.last, d.gap, at))
                back = True
        d.silent = False
        d.last = ts
        if back:
            return True  # the silence itself is not a usual gap
        d.gap = gap if d.gaps == 0 else d.gap + self.alpha * (gap - d.gap)
        d.gaps += 1
        return False

    def _silent_from(self, d: _Device) -> int:
        """The first checkpoint at which ``d`` is silent if nothing more is heard from it."""
        bound = max(d.last + self.factor * d.gap, d.last + self.min_silence_ms - 1)
        return (int(bound // self.check_ms) + 1) * self.check_ms

    def silent_from(self, device: str) -> int | None:
        """The checkpoint from which ``device`` is silent (None: unknown or not watched yet)."""
        d = self._devices.get(device)
        if d is None or d.gaps < self.min_gaps:
            return None
        return self._silent_from(d)

    def site_time(self) -> int:
        """The site's event time: robust to up to a quarter of devices with clocks ahead."""
        if not self._devices:
            return self.latest
        lasts = sorted(d.last for d in self._devices.values())
        return lasts[round(self.quantile * (len(lasts) - 1))]

    def due(self, watermark: int | None = None) -> list[Silence]:
        """Devices silent at a checkpoint before ``watermark`` that were not reported yet, oldest first.

        ``watermark`` defaults to ``site_time() - lateness_ms``; it never moves back.
        """
        if watermark is None:
            watermark = self.site_time() - self.lateness_ms
        if watermark > self.watermark:
            self.watermark = watermark
        watermark = self.watermark
        found = []
        for device, d in self._devices.items():
            if d.silent or d.gaps < self.min_gaps:
                continue
            at = self._silent_from(d)
            if at < watermark:
                d.silent = True
                found.append(Silence(device, d.kind, d.last, at - d.last, d.gap, at))
        found.sort(key=lambda s: (s.at, s.device))
        return found


def dropout_alerts(policy: AlertPolicy, watch: SilenceWatch, silences: list[Silence] | None = None) -> list[Alert]:
    """Raise a ``dropout`` alert (metric ``_device``, value: seconds silent) per newly silent device.

    The alert's time is the checkpoint the device was silent at, not when it was found out.
    ``silences``: those to raise (default ``watch.due()``).
    """
    alerts = []
    for s in watch.due() if silences is None else silences:
        point = Point(s.device, s.kind, DEVICE_METRIC, s.at, 0, s.silent_ms / MS_PER_S, 1.0)
        reason = f"{Cause.DROPOUT}: silent for {s.silent_ms / MS_PER_S:.0f} s, usual interval {s.usual_ms / MS_PER_S:.1f} s"
        alert = policy.open_one(point, reason)
        if alert is not None:
            alerts.append(alert)
    return alerts


def heard_again(policy: AlertPolicy, reading: Reading) -> Alert | None:
    """Clear a device's dropout alert: it has published ``reading``."""
    point = Point(reading.device, reading.kind, DEVICE_METRIC, reading.ts, reading.seq, 0.0, 0.0)
    return policy.close_one(point, f"{Cause.DROPOUT}: heard again")
