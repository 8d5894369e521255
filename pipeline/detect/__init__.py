"""Detection: river-compatible detectors, the stages after them, the alert policy, ``build``.

No MQTT, no disk, no uplink, no settings: data in, data out (tests/unit/test_import_graph.py
keeps it so). docs/detection.md starts with the map of this package.
"""

from __future__ import annotations

from pipeline.detect.features import TS_MS, VALUE

__all__ = ["TS_MS", "VALUE"]
