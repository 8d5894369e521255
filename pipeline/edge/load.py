"""Load awareness: an overloaded node widens its selection tolerances instead of falling behind."""

from __future__ import annotations


class LoadGovernor:
    """Turns the input backlog into a tolerance scale, in steps, with hysteresis.

    When more than ``high`` messages wait for ``patience_ms``, the scale doubles (up to
    ``max_scale``): selection ships fewer points, the node does less uplink work per reading
    and catches up. When fewer than ``low`` wait for ``patience_ms``, it halves back to 1.

    >>> g = LoadGovernor(high=100, low=10, patience_ms=1000)
    >>> [g.update_one(backlog, now) for backlog, now in [(500, 0), (500, 1000), (500, 2000)]]
    [1.0, 2.0, 4.0]
    >>> [g.update_one(0, now) for now in (3000, 4000, 5000)]
    [4.0, 2.0, 1.0]
    """

    def __init__(self, high: int = 5000, low: int = 500, patience_ms: int = 2000, max_scale: float = 16.0) -> None:
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")
        if max_scale < 1.0:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}")
        self.high, self.low, self.patience_ms, self.max_scale = high, low, patience_ms, max_scale
        self.scale = 1.0
        self._since: int | None = None  # when the backlog entered its current band
        self._band = 0

    def __repr__(self) -> str:
        return f"LoadGovernor(high={self.high}, low={self.low}, patience_ms={self.patience_ms}, max_scale={self.max_scale})"

    @property
    def shedding(self) -> bool:
        return self.scale > 1.0

    def update_one(self, backlog: int, now_ms: int) -> float:
        band = 1 if backlog > self.high else -1 if backlog < self.low else 0
        if band != self._band or self._since is None:
            self._band, self._since = band, now_ms
            return self.scale
        if band and now_ms - self._since >= self.patience_ms:
            self._since = now_ms
            if band > 0:
                self.scale = min(self.max_scale, self.scale * 2.0)
            else:
                self.scale = max(1.0, self.scale / 2.0)
        return self.scale
