"""Peers: each device's window statistic against the other devices of its kind at its site.

The edge sees one series; the cloud sees all of a site's devices of one kind in the same
window. A soil probe drifting away from its neighbours, a shelf emptying while the other
shelves do not, a footfall counter shifting level while the street's other counters do not:
none of these changes the *fleet*, so each device is compared with its peers, not with a
fixed value.

For every window the detector takes the **median of the device's peers** (leave-one-out, so
the device does not pull its own reference) and predicts the device from it with a per-device
linear fit learned with exponential forgetting (``x ≈ a + b · median``): a probe that always
reads 3 % wetter, or a counter at a door twice as busy as the street's median, is normal. The
residual is standardised by the larger of the device's own residual spread, the spread of
all devices' residuals in this window (a fleet-wide event such as the morning restock moves
every device differently, and then nobody stands out) and a floor of one sensor step, and
smoothed and judged against its own usual spread (``change.SmoothedShift``). A change of the whole fleet moves the median with
it and leaves every residual small, so it is not alerted.

The statistic is ``level`` (the window mean) or ``change`` (the mean minus the previous
window's mean: for stock that sales and restocks move, a theft is an unusual *fall*), and a
profile can watch one direction only (``PROFILES``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from pipeline.analyst.change import DIRECTIONS, EwStats, SmoothedShift, shift_score
from pipeline.protocol import Aggregate

MAD_TO_SD = 1.4826  # median absolute deviation of a normal sample, in standard deviations
SLOPE_MAX = 10.0  # a device is at most this many times its peers' median (guards a flat median)
VARIANCE_EPS = 1e-12
DAY_MS = 86_400_000
MIN_CORRELATION = 0.5  # below it a device's scale against its peers is not trusted (slope 1)


@dataclass(frozen=True, slots=True)
class Profile:
    """What the peer detector watches for one (kind, metric)."""

    statistic: str = "level"  # "level" | "change" | "off"
    direction: str = "both"  # "both" | "up" | "down"
    floor_steps: float = 1.0  # no residual spread is taken below this many sensor steps


# A shelf's stock rises at every restock and top-up (at fixed hours, on some shelves only)
# and falls with sales: only an unusual fall (theft) is news.
# Switched and shaded devices are not comparable with their peers: a valve opens on its
# zone's schedule, a streetlight switches when its own (shaded) light sensor says so, and
# the light a station reads depends on its shade. Peers say nothing about them.
PROFILES: dict[tuple[str, str], Profile] = {
    # A shelf's change per minute is usually 0 (sales of a tenth of an item a minute): with a
    # floor of one item, a theft of one item a minute read as one spread. Measured on the
    # full plan, seed 11: theft recall 0.41 -> 0.77 at 0.3 items, no false alarm added.
    ("smart_shelf", "stock"): Profile("change", "down", floor_steps=0.3),
    ("irrigation_valve", "flow"): Profile("off"),
    ("streetlight", "power"): Profile("off"),
    ("streetlight", "ambient"): Profile("off"),
    ("weather_station", "light"): Profile("off"),
}


@dataclass(frozen=True, slots=True)
class PeerScore:
    """The peer detector's verdict on one device in one window."""

    device: str
    score: float  # in [0, 1]: 0.8 when the shift reaches its threshold
    z: float  # the smoothed residual, in spreads of its own history
    expected: float  # what the peers predicted
    peers: int

    @property
    def detail(self) -> str:
        return f"{self.z:+.1f} sd from {self.peers} peers (expected {self.expected:.4g})"


@dataclass(slots=True)
class _Device:
    fit_m: EwStats
    fit_x: EwStats
    cov: float = 0.0
    residual: EwStats = field(default_factory=lambda: EwStats(0.01))
    shift: SmoothedShift = field(default_factory=lambda: SmoothedShift(10.0, 0.01))
    previous: tuple[int, float] | None = None  # (window end, mean) for the change statistic
    daily: dict[int, list[float]] = field(default_factory=dict)  # time slot -> [sum, count] of residuals

    def usual(self, slot: int, slots_per_day: int, days: int) -> float:
        """The median over the previous days of this device's mean residual in this slot of the day."""
        means = [b[0] / b[1] for k in range(1, days + 1) if (b := self.daily.get(slot - k * slots_per_day)) and b[1]]
        if not means:
            return 0.0
        means.sort()
        n = len(means)
        return means[n // 2] if n % 2 else 0.5 * (means[n // 2 - 1] + means[n // 2])

    def remember(self, slot: int, residual: float, slots_per_day: int, days: int) -> None:
        bucket = self.daily.get(slot)
        if bucket is None:
            for old in [k for k in self.daily if k < slot - days * slots_per_day]:
                del self.daily[old]
            bucket = self.daily[slot] = [0.0, 0.0]
        bucket[0] += residual
        bucket[1] += 1.0

    def predict(self, median: float) -> float:
        if self.fit_m.count == 0:
            return median
        # Reduced major axis, not least squares: the peers' median is itself noisy, and a
        # least-squares slope shrinks towards 0 with that noise (regression dilution), so a
        # fleet-wide step would leak into the residual as (1 - slope) x step. Devices that
        # hardly co-vary with their peers (noise dominates) move with them one for one.
        sd_m, sd_x = self.fit_m.std, self.fit_x.std
        correlation = self.cov / (sd_m * sd_x) if sd_m * sd_x > VARIANCE_EPS else 0.0
        slope = sd_x / sd_m if correlation >= MIN_CORRELATION else 1.0
        slope = min(SLOPE_MAX, max(0.0, slope))
        return self.fit_x.mean + slope * (median - self.fit_m.mean)

    def learn(self, median: float, x: float, alpha: float) -> None:
        # the covariance is updated with the means before they move (West's weighted form)
        dm, dx = median - self.fit_m.mean, x - self.fit_x.mean
        a = max(alpha, 1.0 / (self.fit_m.count + 1))
        self.cov = (1.0 - a) * (self.cov + a * dm * dx) if self.fit_m.count else 0.0
        self.fit_m.learn_one(median)
        self.fit_x.learn_one(x)


class PeerDetector:
    """Scores the devices of one (site, kind, metric) against each other, window by window.

    Parameters
    ----------
    profile: the statistic and direction watched.
    step: the metric's resolution; no residual spread is taken below it.
    half_life_windows: how fast a device's fit to its peers forgets (windows).
    warmup_windows: windows a device is learned on before it is scored.
    min_peers: fewer other devices in a window and nobody is scored in it.
    span_windows: the residual is smoothed over about this many windows (``SmoothedShift``).
    threshold_sd: a smoothed residual this many of its usual spreads away scores 0.8 (raise).
    clip_sd: a residual beyond this is learned as this (an anomaly teaches little).

    >>> import random; rng = random.Random(3)
    >>> det = PeerDetector(step=0.1, warmup_windows=100)
    >>> def window(t, drift=0.0):
    ...     base = 20.0 + (t % 7) * 0.3  # the whole fleet moves together
    ...     return [Aggregate(1, "s", f"d{i}", "k", "m", t, t + 1, 1, 0, 0,
    ...                       base + i * 0.1 + rng.gauss(0, 0.2) + (drift if i == 0 else 0), 0, 0, 0)
    ...             for i in range(12)]
    >>> for t in range(300):
    ...     _ = det.update_group(window(t))
    >>> max(s.score for s in det.update_group(window(300))) < 0.8  # the fleet's moves: nothing
    True
    >>> scores = [det.update_group(window(t, drift=0.1 * (t - 300)))[0].score for t in range(301, 330)]
    >>> scores[-1] > 0.8  # d0 drifts away from its peers
    True
    """

    def __init__(
        self,
        profile: Profile | None = None,
        *,
        step: float = 0.0,
        half_life_windows: float = 720.0,
        warmup_windows: int = 240,
        min_peers: int = 3,
        span_windows: float = 6.0,
        threshold_sd: float = 8.0,
        clip_sd: float = 4.0,
        slot_ms: int = 1_800_000,
        days: int = 0,
    ) -> None:
        self.profile = profile or Profile()
        if self.profile.statistic not in ("level", "change", "off") or self.profile.direction not in DIRECTIONS:
            raise ValueError(f"bad peer profile {self.profile}")
        if half_life_windows <= 0 or warmup_windows < 0 or min_peers < 1 or step < 0:
            raise ValueError("half_life_windows > 0, warmup_windows >= 0, min_peers >= 1, step >= 0")
        if span_windows < 1 or threshold_sd <= 0 or clip_sd <= 0:
            raise ValueError("span_windows >= 1, threshold_sd > 0, clip_sd > 0")
        if slot_ms <= 0 or DAY_MS % slot_ms or days < 0:
            raise ValueError("slot_ms must divide a day; days >= 0")
        self.slot_ms, self.days = slot_ms, days
        self.slots_per_day = DAY_MS // slot_ms
        self.step = step
        self.alpha = 1.0 - 0.5 ** (1.0 / half_life_windows)
        self.warmup_windows = warmup_windows
        self.min_peers = min_peers
        self.span_windows, self.threshold_sd, self.clip_sd = span_windows, threshold_sd, clip_sd
        self._devices: dict[str, _Device] = {}

    def __repr__(self) -> str:
        return (
            f"PeerDetector(profile={self.profile}, step={self.step}, warmup_windows={self.warmup_windows}, "
            f"min_peers={self.min_peers}, span_windows={self.span_windows}, threshold_sd={self.threshold_sd})"
        )

    @property
    def devices(self) -> int:
        return len(self._devices)

    def device_names(self) -> list[str]:
        """The devices this detector holds state for."""
        return list(self._devices)

    def _device(self, name: str) -> _Device:
        d = self._devices.get(name)
        if d is None:
            d = self._devices[name] = _Device(
                EwStats(self.alpha), EwStats(self.alpha), residual=EwStats(self.alpha),
                shift=SmoothedShift(self.span_windows, self.alpha, direction=self.profile.direction),
            )
        return d

    def _statistic(self, agg: Aggregate) -> float | None:
        d = self._device(agg.device)
        if self.profile.statistic == "level":
            return agg.mean
        previous, d.previous = d.previous, (agg.end, agg.mean)
        if previous is None or previous[0] != agg.start:
            return None  # no previous window right before this one: no change to judge
        return agg.mean - previous[1]

    def update_group(self, aggs: Sequence[Aggregate], hold: Collection[str] = ()) -> list[PeerScore]:
        """Score, then learn, one window of the devices of this group (one aggregate each).

        Devices in ``hold`` (an alert is open on them, or the edge reported them) are scored
        but neither learned from nor left with accumulated evidence: their anomaly must not become
        their normal, nor raise later in the cloud what the edge already raised.
        """
        values: list[tuple[Aggregate, float]] = []
        if self.profile.statistic == "off":
            return []
        for agg in aggs:
            x = self._statistic(agg)
            if x is not None and math.isfinite(x):
                values.append((agg, x))
        if len(values) < self.min_peers + 1:
            return []
        ordered = sorted(x for _, x in values)
        rows = []
        for agg, x in values:
            median = _median_without(ordered, x)
            d = self._device(agg.device)
            slot = agg.start // self.slot_ms
            raw = x - d.predict(median)
            # a device that differs from its peers at the same time every day (its zone waters
            # at 04:30, its shelf is topped up at 14:00) is not news: that part is taken out
            rows.append((agg, x, median, d, raw - d.usual(slot, self.slots_per_day, self.days), raw, slot))
        residuals = sorted(r[4] for r in rows)
        centre = residuals[len(residuals) // 2]
        spread_now = MAD_TO_SD * sorted(abs(r - centre) for r in residuals)[len(residuals) // 2]
        out = []
        for agg, x, median, d, residual, raw, slot in rows:
            warm = d.residual.count >= self.warmup_windows
            scale = max(d.residual.std, spread_now, self.step * self.profile.floor_steps, VARIANCE_EPS)
            z = (residual - d.residual.mean) / scale if d.residual.count else 0.0
            held = agg.device in hold
            score, shift = 0.0, 0.0
            if held:
                d.shift.reset()
            else:
                shift = d.shift.update(z)
                if warm:
                    score = shift_score(shift, self.threshold_sd)
            out.append(PeerScore(agg.device, score, shift, d.predict(median), len(values) - 1))
            if held:
                continue
            if self.days:  # what recurs daily is learned even when it stands out (the median of days judges)
                d.remember(slot, raw, self.slots_per_day, self.days)
            if not warm or abs(z) < self.clip_sd:
                d.learn(median, x, self.alpha)
                d.residual.learn_one(residual)
            if not warm or abs(shift) < self.clip_sd:
                d.shift.learn(shift, self.clip_sd)
        return out


def _median_without(ordered: Sequence[float], x: float) -> float:
    """The median of ``ordered`` (sorted) with one occurrence of ``x`` left out, in O(log n)."""
    import bisect

    p = bisect.bisect_left(ordered, x)
    n = len(ordered) - 1

    def at(j: int) -> float:
        return ordered[j] if j < p else ordered[j + 1]

    return at(n // 2) if n % 2 else 0.5 * (at(n // 2 - 1) + at(n // 2))
