"""The cloud tier: ingest from the edge nodes, merge model deltas, and store everything.

``pipeline.cloud.store`` is the one seam to the database; the dashboard reads only through it.
"""

from __future__ import annotations
