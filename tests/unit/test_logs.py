"""Log lines: text for people, one JSON object per line for shippers; floods are budgeted."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.logs import JsonFormatter, WarningBudget, event, key_values


def _record(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    (record,) = caplog.records
    return record


def test_an_event_reads_as_key_values_in_its_message(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        event(logging.getLogger("t"), logging.INFO, "summary", received=3, by_reason={"bad_json": 2})
    assert _record(caplog).getMessage() == "summary received=3 by_reason.bad_json=2"


def test_values_with_spaces_or_quotes_are_quoted_so_the_line_stays_parseable() -> None:
    assert key_values({"detail": 'no "v" here', "empty": ""}) == 'detail="no \\"v\\" here" empty=""'


def test_the_json_line_has_ts_level_logger_msg_and_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        event(logging.getLogger("edgepipe.test"), logging.WARNING, "dead letter", reason="bad_json", size=5)
    line = JsonFormatter().format(_record(caplog))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "WARNING" and doc["logger"] == "edgepipe.test"
    assert doc["msg"] == "dead letter"
    assert (doc["reason"], doc["size"]) == ("bad_json", 5)
    assert doc["ts"].endswith("+00:00")


def test_a_plain_log_call_and_an_exception_are_json_too(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("edgepipe.test")
    with caplog.at_level(logging.INFO):
        try:
            raise ValueError("boom\non two lines")
        except ValueError:
            log.exception("handling %s failed", "x")
    line = JsonFormatter().format(_record(caplog))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["msg"] == "handling x failed" and "ValueError" in doc["exc"]


def test_a_field_cannot_overwrite_the_standard_keys(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        event(logging.getLogger("t"), logging.INFO, "odd", level="mine", msg="mine")
    doc = json.loads(JsonFormatter().format(_record(caplog)))
    assert (doc["level"], doc["msg"]) == ("INFO", "odd")


def test_the_budget_logs_the_first_n_per_key_per_window_and_counts_the_rest() -> None:
    budget = WarningBudget(per_window=3, window_s=60)
    allowed = [budget.allow("bad_json", t) for t in range(10)]
    assert allowed == [True] * 3 + [False] * 7
    assert budget.allow("out_of_range", 5) is True  # each key has its own budget
    assert budget.take_suppressed(now=59) == {}
    assert budget.take_suppressed(now=60) == {"bad_json": 7}
    assert budget.take_suppressed(now=200) == {}


def test_suppressed_warnings_not_yet_taken_carry_into_the_next_window() -> None:
    budget = WarningBudget(per_window=1, window_s=60)
    assert [budget.allow("k", t) for t in (0, 1, 2)] == [True, False, False]
    assert budget.allow("k", 70) is True  # a new window: logged again
    assert budget.take_suppressed(now=130) == {"k": 2}


def test_a_zero_budget_logs_none_and_counts_all() -> None:
    budget = WarningBudget(per_window=0, window_s=60)
    assert not any(budget.allow("k", t) for t in range(5))
    assert budget.take_suppressed(now=60) == {"k": 5}
