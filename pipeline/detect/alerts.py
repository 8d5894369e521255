"""AlertPolicy: anomaly scores in, alerts out: raised and cleared with hysteresis, no duplicates.

Per device and metric there is at most one open alert. It is raised when the score reaches
``raise_score`` on ``raise_after`` consecutive points, and cleared when the score stays below
``clear_score`` for ``clear_after`` consecutive points; the gap between the two thresholds
keeps a score hovering near one of them from flapping. The defaults are the ``alert``
settings' defaults (``pipeline.config.AlertSettings``). After a clear, the same series may not
raise again for ``cooldown_ms``. Severity grows with the highest score seen while open, and an
alert is raised again only if its severity rises (the same ``alert_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pipeline.detect.point import Point
from pipeline.learn.periods import MS_PER_S
from pipeline.protocol import SCHEMA_VERSION, Alert, AlertData
from pipeline.protocol.causes import Cause

SEVERITIES = ("info", "warning", "critical")


class AlertRules(Protocol):
    """What the policy reads from the ``alert`` settings (``pipeline.config.AlertSettings`` fits).

    A protocol, so that detection needs nothing from ``pipeline.config``.
    """

    @property
    def raise_score(self) -> float: ...
    @property
    def clear_score(self) -> float: ...
    @property
    def raise_after(self) -> int: ...
    @property
    def clear_after(self) -> int: ...
    @property
    def clear_after_s(self) -> float: ...
    @property
    def cooldown_s(self) -> float: ...
    @property
    def critical_score(self) -> float: ...


@dataclass
class _Series:
    open_id: str | None = None
    severity: str = ""
    peak: float = 0.0
    hot: int = 0  # consecutive points at or above raise_score
    cool: int = 0  # consecutive points below clear_score while open
    cool_since: int = 0  # event time (ms) of the first of them
    quiet_until: int = -(2**62)  # cooldown after a clear
    cause: Cause = Cause.ANOMALY  # of the open alert


class AlertPolicy:
    """Turns scored points into raise and clear events.

    >>> policy = AlertPolicy("farm", raise_after=1, clear_after=2, clear_after_ms=0)
    >>> def p(ts, score): return Point("d1", "fridge", "temp", ts, ts, 9.5, score)
    >>> [a.data.state if a else None for a in map(policy.update_one, [p(1, 0.2), p(2, 0.999), p(3, 0.4), p(4, 0.4)])]
    [None, 'raised', None, 'cleared']
    """

    def __init__(
        self,
        site: str,
        *,
        raise_score: float = 0.8,
        clear_score: float = 0.5,
        raise_after: int = 1,
        clear_after: int = 2,
        clear_after_ms: int = 240_000,
        cooldown_ms: int = 60_000,
        critical_score: float = 0.99,
        model_version: str = "zscore-1",
    ) -> None:
        if not 0.0 < clear_score < raise_score <= 1.0:
            raise ValueError(f"need 0 < clear_score < raise_score <= 1, got {clear_score}, {raise_score}")
        if raise_after < 1 or clear_after < 1 or cooldown_ms < 0 or clear_after_ms < 0:
            raise ValueError("raise_after and clear_after must be >= 1, clear_after_ms and cooldown_ms >= 0")
        self.site = site
        self.raise_score, self.clear_score = raise_score, clear_score
        self.raise_after, self.clear_after = raise_after, clear_after
        self.clear_after_ms = clear_after_ms
        self.cooldown_ms = cooldown_ms
        self.critical_score = critical_score
        self.model_version = model_version
        self._series: dict[tuple[str, str], _Series] = {}

    @classmethod
    def from_settings(cls, site: str, alert: AlertRules, model_version: str = "zscore-1") -> AlertPolicy:
        """The policy the ``alert`` section of the settings describes."""
        return cls(
            site,
            raise_score=alert.raise_score,
            clear_score=alert.clear_score,
            raise_after=alert.raise_after,
            clear_after=alert.clear_after,
            clear_after_ms=int(alert.clear_after_s * MS_PER_S),
            cooldown_ms=int(alert.cooldown_s * MS_PER_S),
            critical_score=alert.critical_score,
            model_version=model_version,
        )

    def __repr__(self) -> str:
        return (
            f"AlertPolicy(raise_score={self.raise_score}, clear_score={self.clear_score}, "
            f"raise_after={self.raise_after}, clear_after={self.clear_after}, clear_after_ms={self.clear_after_ms}, "
            f"cooldown_ms={self.cooldown_ms})"
        )

    @property
    def open_alerts(self) -> int:
        return sum(1 for s in self._series.values() if s.open_id is not None)

    def severity(self, score: float) -> str:
        return "critical" if score >= self.critical_score else "warning"

    def update_one(self, point: Point, cause: Cause = Cause.ANOMALY, detail: str = "") -> Alert | None:
        """Feed one scored point; a raise, an escalation, a clear, or None.

        ``detail`` (from the stage that set ``cause``) follows the cause in a raise's reason;
        without one the reason says ``score >= raise_score``.
        """
        key = (point.device, point.metric)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series()
        if s.open_id is None:
            s.hot = s.hot + 1 if point.score >= self.raise_score else 0
            if s.hot < self.raise_after or point.ts < s.quiet_until:
                return None
            s.open_id = f"{self.site}.{point.device}.{point.metric}.{point.ts}"
            s.peak, s.severity, s.cool, s.cause = point.score, self.severity(point.score), 0, cause
            # the score itself is the alert's ``score``: the reason says why, not the number again
            return self._event(point, s, "raised", f"{cause}: {detail or f'score >= {self.raise_score}'}")
        s.peak = max(s.peak, point.score)
        if point.score < self.clear_score:
            if not s.cool:
                s.cool_since = point.ts
            s.cool += 1
            if s.cool >= self.clear_after and point.ts - s.cool_since >= self.clear_after_ms:
                alert = self._event(
                    point, s, "cleared", f"{s.cause}: score below {self.clear_score} for {s.cool} readings"
                )
                s.open_id, s.hot, s.quiet_until = None, 0, point.ts + self.cooldown_ms
                return alert
            return None
        s.cool = 0
        severity = self.severity(s.peak)
        if SEVERITIES.index(severity) > SEVERITIES.index(s.severity):
            s.severity = severity
            return self._event(point, s, "raised", f"{s.cause}: escalated to {severity}")
        return None

    def open_one(self, point: Point, reason: str) -> Alert | None:
        """Raise an alert on ``point``'s series now, unless one is open (e.g. a dropout)."""
        s = self._series.setdefault((point.device, point.metric), _Series())
        if s.open_id is not None:
            return None
        s.open_id = f"{self.site}.{point.device}.{point.metric}.{point.ts}"
        s.peak, s.severity, s.cool = point.score, self.severity(point.score), 0
        return self._event(point, s, "raised", reason)

    def close_one(self, point: Point, reason: str) -> Alert | None:
        """Clear the open alert of ``point``'s series now (None if there is none)."""
        s = self._series.get((point.device, point.metric))
        if s is None or s.open_id is None:
            return None
        alert = self._event(point, s, "cleared", reason)
        s.open_id, s.hot = None, 0
        return alert

    def _event(self, p: Point, s: _Series, state: str, reason: str) -> Alert:
        assert s.open_id is not None
        data = AlertData(
            v=SCHEMA_VERSION,
            alert_id=s.open_id,
            site=self.site,
            device=p.device,
            kind=p.kind,
            metric=p.metric,
            state=state,
            severity=s.severity,
            score=p.score,
            value=p.value,
            reading_ts=p.ts,
            reason=reason,
            model_version=self.model_version,
        )
        return Alert(
            id=f"{s.open_id}.{state}.{p.ts}",
            source=f"edgepipe/{self.site}/edge",
            type=f"io.edgepipe.alert.{state}",
            time=datetime.fromtimestamp(p.ts / MS_PER_S, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            subject=p.device,
            data=data,
        )
