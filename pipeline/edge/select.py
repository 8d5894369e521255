"""Data selection: which points are worth the uplink.

Two selectors with one contract (``select_one(point) -> points to ship``):

* :class:`Deadband` ships a point when it moved more than the metric's tolerance from the
  last shipped value. A reader that holds the last shipped value sees every value within
  the tolerance.
* :class:`SwingingDoor` ships the corners of trends. A reader that joins shipped points with
  straight lines sees every value within the tolerance; on ramps it ships far fewer points.

Both always ship a heartbeat (``heartbeat_ms`` after the last shipped point, so silence means
"unchanged", not "dead") and everything in or near an anomaly at full resolution: the
``pre_points`` held back before the anomaly, the anomalous points, and all points until
``post_ms`` after the last anomalous one. ``scale`` widens every tolerance at once; the load
governor raises it when the node falls behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.edge.stages import Point

ToleranceFor = Callable[[str, str], float]  # (kind, metric) -> tolerance in the metric's unit


@dataclass
class _Series:
    last_ts: int = -(2**62)  # ts of the last shipped point
    last_value: float = 0.0
    anomaly_until: int = -(2**62)
    held: deque[Point] = field(default_factory=deque)  # recent unshipped points (pre-anomaly)


class _Selector:
    def __init__(
        self,
        tolerance_for: ToleranceFor,
        *,
        heartbeat_ms: int = 300_000,
        anomaly_score: float = 0.99,
        pre_points: int = 5,
        post_ms: int = 60_000,
    ) -> None:
        if heartbeat_ms <= 0:
            raise ValueError(f"heartbeat_ms must be positive, got {heartbeat_ms}")
        if not 0.0 < anomaly_score <= 1.0:
            raise ValueError(f"anomaly_score must be in (0, 1], got {anomaly_score}")
        if pre_points < 0 or post_ms < 0:
            raise ValueError("pre_points and post_ms must not be negative")
        self.tolerance_for = tolerance_for
        self.heartbeat_ms = heartbeat_ms
        self.anomaly_score = anomaly_score
        self.pre_points = pre_points
        self.post_ms = post_ms
        self.scale = 1.0
        self._held_limit = pre_points
        self._tolerances: dict[tuple[str, str], float] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(heartbeat_ms={self.heartbeat_ms}, "
            f"anomaly_score={self.anomaly_score}, pre_points={self.pre_points}, post_ms={self.post_ms})"
        )

    def tolerance(self, kind: str, metric: str) -> float:
        key = (kind, metric)
        tol = self._tolerances.get(key)
        if tol is None:
            tol = self._tolerances[key] = self.tolerance_for(kind, metric)
        return tol * self.scale

    def _anomaly(self, s: _Series, p: Point) -> list[Point] | None:
        """Points to ship when ``p`` is in or near an anomaly, else None."""
        if p.score >= self.anomaly_score:
            s.anomaly_until = p.ts + self.post_ms
            released = [*s.held, p]
            s.held.clear()
            return released
        if p.ts <= s.anomaly_until:
            return [p]
        return None

    def _hold(self, s: _Series, p: Point) -> None:
        if self._held_limit:
            if len(s.held) >= self._held_limit:
                s.held.popleft()
            s.held.append(p)


class Deadband(_Selector):
    """Ship on change beyond the tolerance, on heartbeat, and around anomalies.

    >>> d = Deadband(lambda kind, metric: 0.5, heartbeat_ms=10_000, pre_points=0)
    >>> def p(ts, v): return Point("d1", "fridge", "temp", ts, ts, v)
    >>> [len(d.select_one(p(t, v))) for t, v in [(0, 4.0), (1000, 4.2), (2000, 4.6), (3000, 4.7)]]
    [1, 0, 1, 0]
    """

    def __init__(self, tolerance_for: ToleranceFor, **kwargs: int | float) -> None:
        super().__init__(tolerance_for, **kwargs)  # type: ignore[arg-type]
        self._series: dict[tuple[str, str], _Series] = {}

    def select_one(self, point: Point) -> list[Point]:
        key = (point.device, point.metric)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series()
        shipped = self._anomaly(s, point)
        if shipped is None:
            moved = abs(point.value - s.last_value) > self.tolerance(point.kind, point.metric)
            if not (moved or point.ts - s.last_ts >= self.heartbeat_ms):
                self._hold(s, point)
                return []
            shipped = [point]
            s.held.clear()
        s.last_ts, s.last_value = point.ts, point.value
        return shipped


@dataclass
class _Door(_Series):
    anchor: Point | None = None  # the last shipped point, where the door hinges
    latest: Point | None = None  # the newest point seen, not yet shipped
    upper: float = float("inf")  # slopes from the anchor that pass within tol of every point
    lower: float = float("-inf")  # seen since the anchor


class SwingingDoor(_Selector):
    """Swinging-door trending: ship the corners, so that lines between shipped points stay
    within the tolerance of every value.

    >>> sd = SwingingDoor(lambda kind, metric: 0.5, heartbeat_ms=100_000, pre_points=0)
    >>> def p(ts, v): return Point("d1", "soil_probe", "moisture", ts, ts, v)
    >>> ramp = [p(t * 1000, 10.0 + t) for t in range(10)]           # a straight ramp ...
    >>> shipped = [q.ts for x in ramp + [p(10_000, 19.0)] for q in sd.select_one(x)]
    >>> shipped                                                     # ... then flat: 2 corners
    [0, 9000]
    """

    def __init__(self, tolerance_for: ToleranceFor, **kwargs: int | float) -> None:
        super().__init__(tolerance_for, **kwargs)  # type: ignore[arg-type]
        self._doors: dict[tuple[str, str], _Door] = {}
        # One more point than asked: the oldest held point ends a valid segment from the
        # anchor, so shipping it keeps the line-interpolation bound when the rest follow.
        self._held_limit = self.pre_points + 1 if self.pre_points else 0

    def select_one(self, point: Point) -> list[Point]:
        key = (point.device, point.metric)
        door = self._doors.get(key)
        if door is None:
            door = self._doors[key] = _Door()
        released = self._anomaly(door, point)
        if released is not None:
            return self._restart(door, point, released)
        if door.anchor is None or point.ts - door.anchor.ts >= self.heartbeat_ms:
            return self._restart(door, point, [point])
        anchor, tol = door.anchor, self.tolerance(point.kind, point.metric)
        dt = point.ts - anchor.ts
        if dt <= 0:  # same or older timestamp: nothing to hinge on
            return []
        slope = (point.value - anchor.value) / dt
        if door.lower <= slope <= door.upper:
            # The line anchor -> point passes within tol of every point since the anchor
            # (each point's band is exactly the slopes that do): extend the segment.
            door.upper = min(door.upper, (point.value + tol - anchor.value) / dt)
            door.lower = max(door.lower, (point.value - tol - anchor.value) / dt)
            door.latest = point
            self._hold(door, point)
            return []
        corner = door.latest  # the last point that ended a valid segment: ship it, hinge there
        assert corner is not None
        door.held.clear()
        door.anchor, door.latest = corner, point
        dt = point.ts - corner.ts
        door.upper = (point.value + tol - corner.value) / dt
        door.lower = (point.value - tol - corner.value) / dt
        self._hold(door, point)
        return [corner]

    @staticmethod
    def _restart(door: _Door, point: Point, shipped: list[Point]) -> list[Point]:
        """Ship ``shipped`` (ending with ``point``) and hinge a new door on ``point``."""
        if door.latest is not None and door.anchor is not None and door.latest is not door.anchor:
            if door.latest not in shipped and door.latest.ts < shipped[0].ts:
                shipped = [door.latest, *shipped]  # close the open segment exactly
        door.anchor, door.latest = point, point
        door.upper, door.lower = float("inf"), float("-inf")
        door.held.clear()
        return shipped
