"""The docs stay in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import (
    IngestSettings,
    KindSettings,
    MetricSettings,
    Settings,
    reference_markdown,
    section_names,
)
from pipeline.protocol import Reason
from pipeline.protocol.causes import Cause

ROOT = Path(__file__).resolve().parents[1]


def dotted_keys() -> list[str]:
    keys = []
    for section in section_names():
        model = Settings.model_fields[section].annotation
        assert model is not None
        keys += [f"{section}.{name}" for name in model.model_fields]  # type: ignore[union-attr]
    keys += [f"ingest.{name}" for name in IngestSettings.model_fields]
    keys += [f"kinds.{name}" for name in KindSettings.model_fields]
    keys += [f"kinds.NAME.metrics.{name}" for name in MetricSettings.model_fields]
    return keys


@pytest.mark.parametrize("key", dotted_keys())
def test_configuration_doc_lists_every_setting(key: str) -> None:
    assert f"`{key}`" in (ROOT / "docs" / "configuration.md").read_text()


def test_configuration_doc_is_the_generated_reference() -> None:
    """Regenerate with: edgepipe config sample --markdown > docs/configuration.md"""
    assert (ROOT / "docs" / "configuration.md").read_text() == reference_markdown()


@pytest.mark.parametrize("cause", list(Cause))
def test_protocol_doc_explains_every_alert_cause(cause: Cause) -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert re.search(rf"^\| `{cause.value}` \|", text, re.MULTILINE)


@pytest.mark.parametrize("reason", list(Reason))
def test_protocol_doc_explains_every_reason_code(reason: Reason) -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert re.search(rf"^\| `{reason.value}` \|", text, re.MULTILINE)


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/check" in readme
    assert "scripts/check" in ci
