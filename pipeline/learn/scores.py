"""The score scale every edgepipe detector and stage shares."""

from __future__ import annotations


def ratio_score(ratio: float) -> float:
    """``r**2 / (1 + r**2)``: 0.5 at r = 1 ("as unusual as the usual largest"), 0.9 at r = 3.

    Why one function: a detector's score, a stuck run's, a soak's and a broken relation's are
    compared with each other (the highest wins) and with one alert threshold, so they must
    mean the same.

    >>> ratio_score(1.0), ratio_score(3.0)
    (0.5, 0.9)
    """
    return ratio * ratio / (1.0 + ratio * ratio)
