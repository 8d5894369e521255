"""The fleet analyst: cloud-side detectors that need more than one series or hours of memory.

``peers`` (a device against its kind's devices at its site, window by window), ``horizon``
(a device against its own previous days at the same hour) and ``fleet`` (``FleetAnalyst``:
windows in, the edge's ``AlertPolicy``, alerts with source ``cloud`` out) are pure; the role
that subscribes and publishes is ``pipeline.analyst.role``. docs/analyst.md has the numbers.
"""

from __future__ import annotations
