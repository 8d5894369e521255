"""The edge node and its stages."""

from __future__ import annotations
