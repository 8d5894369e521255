"""docs/onboarding.md's worked examples are true: each message, under its settings, passes
`config check` and becomes readings through the real adapter, none refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ingestkit import ARRIVAL_MS

from pipeline.config import load_settings
from pipeline.ingest.discover import Sample, discover, verify

DOC = Path(__file__).resolve().parents[3] / "docs" / "onboarding.md"
EXAMPLE = re.compile(
    r"^### .*?\(`([\w-]+)`\)\n.*?Topic `([^`]+)`.*?```(?:json|text)\n(.*?)```.*?```toml\n(.*?)```",
    re.S | re.M,
)


def examples() -> list[tuple[str, str, str, str]]:
    worked = DOC.read_text().split("## One worked example per format", 1)[1]
    return [m.groups() for m in EXAMPLE.finditer(worked)]


def test_the_doc_has_one_worked_example_per_format() -> None:
    assert sorted(fmt for fmt, *_ in examples()) == sorted(
        ["ttn", "chirpstack", "zigbee2mqtt", "influx-line", "json", "edgepipe"]
    )


@pytest.mark.parametrize(
    ("fmt", "topic", "message", "settings"), [pytest.param(*e, id=e[0]) for e in examples()]
)
def test_each_worked_example_is_taken_whole(
    fmt: str, topic: str, message: str, settings: str, tmp_path: Path
) -> None:
    config = tmp_path / "edgepipe.toml"
    config.write_text(settings)
    load_settings(config)  # what `edgepipe config check` runs
    lines = message.strip().splitlines()
    payload = "\n".join(lines) if fmt == "influx-line" else " ".join(message.split())
    sample = Sample(topic, payload.encode(), ARRIVAL_MS)
    check = verify(settings, [sample])
    assert check.readings == (len(lines) if fmt == "influx-line" else 1)
    assert not check.refused and check.not_taken == 0
    assert discover([sample]).entries[0].format == fmt  # discover recognises the message's format
