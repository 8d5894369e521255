"""`edgepipe discover` after listening: a proposal with its summary, or a clear refusal to
propose when nothing heard could be a reading."""

from __future__ import annotations

import pytest

from pipeline.config import load_settings
from pipeline.ingest.discover import Sample
from pipeline.onboard import NothingHeard, propose

ARRIVAL_MS = 1_709_633_800_000


def test_messages_none_of_which_is_a_reading_give_no_proposal_but_the_reasons() -> None:
    samples = [
        Sample("cams/door/jpeg", b"\xff\xd8\xff\xe0", ARRIVAL_MS),
        Sample("homie/p1/t", b"21.5", ARRIVAL_MS),
    ]
    with pytest.raises(NothingHeard) as none:
        propose(load_settings(), samples, "test", all_kinds=False)
    assert "binary payload" in str(none.value) and "a bare value" in str(none.value)


def test_a_proposal_comes_with_its_summary_and_its_check() -> None:
    samples = [
        Sample(
            f"sensors/site/p{i % 2}/state",
            f'{{"t": {20 + i}, "kind": "probe"}}'.encode(),
            ARRIVAL_MS + i,
        )
        for i in range(6)
    ]
    outcome = propose(load_settings(), samples, "test", all_kinds=False)
    assert 'format = "json"' in outcome.text and "[kinds.probe]" in outcome.text
    assert outcome.check is not None and outcome.check.readings == 6
    assert outcome.lines[0] == "6 messages; 1 ingest entry, 2 devices, 1 kind"
    assert any(line.startswith("1 metric to review") for line in outcome.lines)


def test_a_proposal_config_check_would_refuse_is_still_given_and_said_to_be_a_bug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.onboard

    monkeypatch.setattr(pipeline.onboard, "render", lambda *a: '[[ingest]]\nformat = "nonsense"\n')
    samples = [
        Sample(f"sensors/site/p{i % 2}/state", b'{"t": 1}', ARRIVAL_MS + i) for i in range(4)
    ]
    outcome = propose(load_settings(), samples, "test", all_kinds=False)
    assert outcome.check is None and "nonsense" in outcome.text
    assert "does not pass config check" in outcome.lines[-1]
