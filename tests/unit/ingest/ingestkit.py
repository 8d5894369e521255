"""Helpers for the ingest adapter tests: fixtures on disk and entries built like config does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import IngestSettings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ingest"
ARRIVAL_MS = 1_709_633_800_000  # 2024-03-05T10:16:40Z


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def entry(fmt: str, **keys: Any) -> IngestSettings:
    return IngestSettings.model_validate({"format": fmt, **keys})
