"""The decaying top-k memory: the ``k`` largest values seen, all slowly forgotten.

Every edgepipe detector calibrates itself against "the k-th largest residual (run, soak, z)
seen lately": a distribution-free reference that adapts as a series changes. Forgetting
multiplies every remembered value by ``1 - forget`` per step; instead of touching k values
per step, the memory stores them multiplied by a scale that grows by ``1 / (1 - forget)``
per step, so a step costs one multiplication. The scale is renormalised (every value
divided by it, the scale reset to 1) once it passes ``RENORMALISE_AT``, far below the
float64 limit (1.8e308) so that ``value * scale`` cannot overflow for any finite residual
below ~1e150.
"""

from __future__ import annotations

import heapq

RENORMALISE_AT = 1e150  # scale above which the stored values are divided down (see above)
DISCARD_TOLERANCE = 1e-9  # relative: a stored value found again after renormalising (rounding)


class DecayingTopK:
    """The ``k`` largest values added, decayed by ``decay(growth)`` (``growth = 1 / (1 - forget)``).

    ``heap`` holds the stored (scaled) values as a min-heap, ``scale`` the factor they are
    stored with: a value's current size is ``stored / scale``. Both are public for the few
    detectors that compare stored values directly (the hot path avoids a division).

    >>> m = DecayingTopK(2)
    >>> for v in (1.0, 5.0, 3.0):
    ...     m.add(v)
    >>> m.kth(), m.largest(), len(m)
    (3.0, 5.0, 2)
    >>> m.decay(2.0)  # everything remembered now counts half
    0.0
    >>> m.kth()
    1.5
    """

    __slots__ = ("heap", "k", "scale")

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.heap: list[float] = []
        self.scale = 1.0

    def __len__(self) -> int:
        return len(self.heap)

    def decay(self, growth: float) -> float:
        """Forget one step (``growth = 1 / (1 - forget)``, or its power for several steps).

        Returns the divisor if the stored values were renormalised (0.0 otherwise), so a
        caller keeping other values at the same scale can divide them too.
        """
        scale = self.scale * growth
        if scale > RENORMALISE_AT:
            self.heap = [v / scale for v in self.heap]
            self.scale = 1.0
            return scale
        self.scale = scale
        return 0.0

    def add(self, value: float) -> None:
        """Remember ``value`` (at today's size) if it is among the ``k`` largest."""
        stored = value * self.scale
        heap = self.heap  # as add_scaled, inlined: called per reading on the node's hot path
        if len(heap) < self.k:
            heapq.heappush(heap, stored)
        elif stored > heap[0]:
            heapq.heapreplace(heap, stored)

    def add_scaled(self, stored: float) -> None:
        """Remember a value already multiplied by ``scale``."""
        heap = self.heap
        if len(heap) < self.k:
            heapq.heappush(heap, stored)
        elif stored > heap[0]:
            heapq.heapreplace(heap, stored)

    def kth(self) -> float:
        """The smallest value remembered (the k-th largest once full); 0.0 when empty."""
        return self.heap[0] / self.scale if self.heap else 0.0

    def kth_when_full(self) -> float:
        """The k-th largest value, or 0.0 while fewer than ``k`` are remembered."""
        return self.heap[0] / self.scale if len(self.heap) >= self.k else 0.0

    def largest(self) -> float:
        """The largest value remembered; 0.0 when empty."""
        return max(self.heap) / self.scale if self.heap else 0.0

    def discard_scaled(self, stored: float) -> bool:
        """Drop one stored value equal to ``stored`` (relative tolerance 1e-9); True if found."""
        heap = self.heap
        for i, v in enumerate(heap):
            if abs(v - stored) <= DISCARD_TOLERANCE * stored:
                heap[i] = heap[-1]
                heap.pop()
                heapq.heapify(heap)
                return True
        return False

    def reset(self, values: list[float]) -> None:
        """Replace the memory with ``values`` (at today's size), scale 1 (e.g. a warm start)."""
        self.heap = sorted(values)
        self.scale = 1.0
