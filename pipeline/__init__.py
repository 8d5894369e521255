"""edgepipe: an edge-to-cloud IoT analytics pipeline."""

from __future__ import annotations

__version__ = "0.1.0"
