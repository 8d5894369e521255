"""FleetAnalyst: the cloud's detectors over the sites' window aggregates, alerts out. No I/O.

::

    aggregates ──► pending windows per (site, kind, metric, start)
                      │ due once the group's event time is ``delay_windows`` past the window
                      ▼
                   peers (one PeerDetector per site, kind, metric)  ┐
                   horizon (one HorizonDetector per device, metric) ┴─► max score
                      │ held: the edge alerted this device (or it dropped out) near the window
                      ▼
                   AlertPolicy (the edge's class, the ``alert`` settings) ──► Alert, source "cloud"
    edge alerts ──► what the edge already raised (never raised again by the cloud)
    health      ──► sites whose node is offline (not scored)

Everything is keyed on event time: a window is judged when aggregates of a later window
of its group arrive, never on a wall clock, so a replay from the store (a restart) or the
quality bench computes the same alerts as the live role.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from msgspec.structs import replace

from pipeline.analyst.change import SCORE_AT_THRESHOLD, shift_score
from pipeline.analyst.horizon import HorizonDetector
from pipeline.analyst.peers import PROFILES, PeerDetector, Profile
from pipeline.detect.alerts import AlertPolicy
from pipeline.edge.stages import Point
from pipeline.protocol import Aggregate, Alert, AlertData, Health
from pipeline.protocol.catalog import KINDS
from pipeline.protocol.causes import DEVICE_METRIC, Cause
from pipeline.protocol.messages import Escalation

SOURCE_EDGE = "edge"
SOURCE_CLOUD = "cloud"
MODEL_VERSION = "analyst-1"
PEERS = Cause.PEERS
HORIZON = Cause.HORIZON
EDGE_INTERVALS_KEPT = 8  # per (site, device, metric): enough for the suppression margin
NEVER_MS = 2**62


@dataclass
class AnalystCounters:
    """What the analyst did, for its summary line and metrics."""

    aggregates: int = 0
    windows: int = 0  # (site, kind, metric, start) groups judged
    late: int = 0  # aggregates of a window already judged
    held: int = 0  # device windows not scored: the edge had it, or it was offline
    held_edge: int = 0  # of those, because the edge alerted on the device near the window
    held_offline: int = 0  # of those, because the site's node was offline
    raised: int = 0
    cleared: int = 0
    edge_alerts: int = 0
    escalations: int = 0  # uncertain edge windows received
    escalations_raised: int = 0  # of those, raised by the cloud's second opinion


def step_of(kind: str, metric: str) -> float:
    """The sensor's resolution from the catalogue (0 for a kind or metric it does not know)."""
    k = KINDS.get(kind)
    m = k.metrics.get(metric) if k is not None else None
    return m.resolution if m is not None else 0.0


def default_peers(kind: str, metric: str) -> PeerDetector:
    return PeerDetector(PROFILES.get((kind, metric), Profile()), step=step_of(kind, metric))


def default_horizon(kind: str, metric: str) -> HorizonDetector:
    return HorizonDetector(step=step_of(kind, metric))


def as_cloud(alert: Alert) -> Alert:
    """The policy's event as the cloud's: ``source`` in the data and in the CloudEvents source."""
    return replace(
        alert,
        source=f"edgepipe/{alert.data.site}/{SOURCE_CLOUD}",
        id=f"cloud.{alert.id}",
        data=replace(alert.data, source=SOURCE_CLOUD, alert_id=f"cloud.{alert.data.alert_id}"),
    )


class FleetAnalyst:
    """The cloud's view of a fleet: ``add_aggregates``, ``add_alert``, ``add_health``; alerts out.

    Parameters
    ----------
    policy: makes the alert policy of one site (``AlertPolicy.from_settings`` in the role).
    delay_windows: a window is judged once its group has seen a window this many later
        (time for every device's aggregate of it to arrive); later ones count as late.
    suppress_ms: the cloud raises nothing on a device and metric that the edge alerted on
        (or on the device, for a dropout) within this margin of the window.
    peers, horizon: detector factories per (kind, metric); None turns a detector off. The
        horizon detector is off unless given (``default_horizon``): measured, it raised far
        more false alarms than it found events (docs/analyst.md).
    """

    def __init__(
        self,
        policy: Callable[[str], AlertPolicy] | None = None,
        *,
        delay_windows: int = 2,
        suppress_ms: int = 600_000,
        peers: Callable[[str, str], PeerDetector] | None = default_peers,
        horizon: Callable[[str, str], HorizonDetector] | None = None,
        second_opinion: float = 0.5,
    ) -> None:
        if delay_windows < 1 or suppress_ms < 0 or not 0 < second_opinion <= 1:
            raise ValueError("delay_windows must be >= 1, suppress_ms >= 0, 0 < second_opinion <= 1")
        self.second_opinion = second_opinion
        self._make_policy = policy or (lambda site: AlertPolicy(site, model_version=MODEL_VERSION))
        self.delay_windows = delay_windows
        self.suppress_ms = suppress_ms
        self._make_peers = peers
        self._make_horizon = horizon
        self.counters = AnalystCounters()
        self._pending: dict[tuple[str, str, str], dict[int, dict[str, Aggregate]]] = {}
        self._newest: dict[tuple[str, str, str], int] = {}
        self._judged_until: dict[tuple[str, str, str], int] = {}
        self._peers: dict[tuple[str, str, str], PeerDetector] = {}
        self._horizon: dict[tuple[str, str, str], HorizonDetector] = {}
        self._policies: dict[str, AlertPolicy] = {}
        self._edge: dict[tuple[str, str, str], deque[list[int]]] = {}
        self._edge_open: dict[str, list[int]] = {}  # edge alert_id -> its [raised, cleared] interval
        self._offline: set[str] = set()
        self._uncertain: dict[tuple[str, str, str, int], Escalation] = {}

    def __repr__(self) -> str:
        return f"FleetAnalyst(delay_windows={self.delay_windows}, suppress_ms={self.suppress_ms})"

    # --- what the analyst knows ---------------------------------------------------------------

    @property
    def series(self) -> int:
        """Device series the detectors hold state for (the analyst's memory grows with it)."""
        return sum(p.devices for p in self._peers.values()) + len(self._horizon)

    @property
    def open_alerts(self) -> int:
        return sum(p.open_alerts for p in self._policies.values())

    @property
    def pending_windows(self) -> int:
        """(site, kind, metric, window) groups waiting for later windows before they are judged."""
        return sum(len(ws) for ws in self._pending.values())

    def devices_by_site(self) -> dict[str, int]:
        """Devices the detectors hold state for, per site."""
        names: dict[str, set[str]] = {}
        for (site, _kind, _metric), peers in self._peers.items():
            names.setdefault(site, set()).update(peers.device_names())
        for site, device, _metric in self._horizon:
            names.setdefault(site, set()).add(device)
        return {site: len(devices) for site, devices in names.items()}

    def add_alert(self, d: AlertData) -> None:
        """Remember an edge alert's interval (the cloud's own alerts, seen again, are ignored)."""
        if d.source != SOURCE_EDGE:
            return
        self.counters.edge_alerts += 1
        key = (d.site, d.device, d.metric)
        if d.state == "raised":
            if d.alert_id in self._edge_open:
                return  # an escalation of an alert already open
            interval = [d.reading_ts, NEVER_MS]
            self._edge_open[d.alert_id] = interval
            self._edge.setdefault(key, deque(maxlen=EDGE_INTERVALS_KEPT)).append(interval)
        else:
            interval_or_none = self._edge_open.pop(d.alert_id, None)
            if interval_or_none is None:  # a clear whose raise we never saw: it was open until now
                self._edge.setdefault(key, deque(maxlen=EDGE_INTERVALS_KEPT)).append([d.reading_ts, d.reading_ts])
            else:
                interval_or_none[1] = d.reading_ts

    def add_escalation(self, e: Escalation) -> None:
        """A window the edge was unsure about: judged against its peers at a lower bar."""
        group = (e.site, e.kind, e.metric)
        if e.start < self._judged_until.get(group, -NEVER_MS):
            self.counters.late += 1
            return
        self.counters.escalations += 1
        self._uncertain[(e.site, e.device, e.metric, e.start)] = e

    def add_health(self, health: Health) -> None:
        """An offline edge node's site is not judged until it is back online."""
        if health.status == "offline":
            self._offline.add(health.site)
        else:
            self._offline.discard(health.site)

    def edge_had(self, site: str, device: str, metric: str, start: int, end: int) -> bool:
        """Did the edge alert on this device's metric (or the device itself) near [start, end)?"""
        lo, hi = start - self.suppress_ms, end + self.suppress_ms
        for m in (metric, DEVICE_METRIC):
            for raised, cleared in self._edge.get((site, device, m), ()):
                if raised <= hi and cleared >= lo:
                    return True
        return False

    # --- aggregates in, alerts out -------------------------------------------------------------

    def add_aggregates(self, aggs: Iterable[Aggregate]) -> list[Alert]:
        """Take a batch of aggregates; the alerts of every window that became due."""
        touched = set()
        for agg in aggs:
            self.counters.aggregates += 1
            group = (agg.site, agg.kind, agg.metric)
            if agg.start < self._judged_until.get(group, -NEVER_MS):
                self.counters.late += 1
                continue
            self._pending.setdefault(group, {}).setdefault(agg.start, {})[agg.device] = agg
            if agg.start > self._newest.get(group, -NEVER_MS):
                self._newest[group] = agg.start
            touched.add(group)
        due = []
        for group in touched:
            windows = self._pending[group]
            newest = self._newest[group]
            for start in list(windows):
                sample = next(iter(windows[start].values()))
                if newest >= start + self.delay_windows * (sample.end - sample.start):
                    due.append((start, group, windows.pop(start)))
        return self._judge(due)

    def flush(self) -> list[Alert]:
        """Judge every pending window now (the end of a replay or of a bench run)."""
        due = [(start, group, w) for group, ws in self._pending.items() for start, w in ws.items()]
        self._pending.clear()
        return self._judge(due)

    def _judge(self, due: list[tuple[int, tuple[str, str, str], dict[str, Aggregate]]]) -> list[Alert]:
        out: list[Alert] = []
        for _start, group, by_device in sorted(due, key=lambda d: (d[0], d[1])):
            site, kind, metric = group
            end = next(iter(by_device.values())).end
            self._judged_until[group] = max(self._judged_until.get(group, -NEVER_MS), end)
            self.counters.windows += 1
            if site in self._offline:
                self.counters.held += len(by_device)
                self.counters.held_offline += len(by_device)
                continue
            aggs = [by_device[d] for d in sorted(by_device)]
            hold = {a.device for a in aggs if self.edge_had(site, a.device, metric, a.start, a.end)}
            self.counters.held += len(hold)
            self.counters.held_edge += len(hold)
            scores: dict[str, tuple[float, Cause, str]] = {}
            if self._make_peers is not None:
                peers = self._peers.get(group)
                if peers is None:
                    peers = self._peers[group] = self._make_peers(kind, metric)
                for s in peers.update_group(aggs, hold):
                    scores[s.device] = (s.score, PEERS, s.detail)
                    flagged = self._uncertain.pop((site, s.device, metric, aggs[0].start), None)
                    if flagged is not None and s.score < SCORE_AT_THRESHOLD:
                        # second opinion: the edge was unsure; the peers need to agree only half as much
                        second = shift_score(s.z, peers.threshold_sd * self.second_opinion)
                        if second >= SCORE_AT_THRESHOLD:
                            self.counters.escalations_raised += 1
                        scores[s.device] = (
                            max(s.score, second),
                            PEERS,
                            f"{s.detail}; second opinion on an edge score of {flagged.score:.2f}",
                        )
            if self._make_horizon is not None:
                for agg in aggs:
                    key = (site, agg.device, metric)
                    horizon = self._horizon.get(key)
                    if horizon is None:
                        horizon = self._horizon[key] = self._make_horizon(kind, metric)
                    h = horizon.update_one(agg, held=agg.device in hold)
                    if h is not None and h.score > scores.get(agg.device, (0.0, PEERS, ""))[0]:
                        scores[agg.device] = (h.score, HORIZON, h.detail)
            for agg in aggs:  # escalations of windows no detector scored (held, profile off) go too
                self._uncertain.pop((site, agg.device, metric, agg.start), None)
            policy = self._policies.get(site)
            if policy is None:
                policy = self._policies[site] = self._make_policy(site)
            for agg in aggs:
                if agg.device in hold or agg.device not in scores:
                    continue
                score, cause, detail = scores[agg.device]
                value = agg.mean if math.isfinite(agg.mean) else 0.0
                point = Point(agg.device, kind, metric, agg.end, 0, value, score)
                alert = policy.update_one(point, cause, detail)
                if alert is not None:
                    if alert.data.state == "raised":
                        self.counters.raised += 1
                    else:
                        self.counters.cleared += 1
                    out.append(as_cloud(alert))
        return out
