"""Pure learning primitives shared by detection (``pipeline.detect``), the edge and the cloud.

No I/O, no settings, nothing of the node: the decaying top-k memory (``memory``), the score
scale (``scores``), time constants (``periods``) and the mergeable model-sync statistics
(``sync_stats``). Imports flow one way: ``protocol`` <- ``learn`` <- ``detect`` <- ``edge``,
``cloud``, ``bench`` (tests/unit/test_import_graph.py keeps it so).
"""

from __future__ import annotations
