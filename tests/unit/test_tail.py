"""The alert lines of `edgepipe alerts`: who raised an alert is told, and filters keep it or not."""

from __future__ import annotations

from pipeline.protocol import Alert
from pipeline.protocol.messages import AlertData
from pipeline.tail import alert_wanted, format_alert


def alert(source: str, severity: str = "warning") -> Alert:
    data = AlertData(
        v=1,
        alert_id="farm.soil_probe-0002.moisture.1",
        site="farm",
        device="soil_probe-0002",
        kind="soil_probe",
        metric="moisture",
        state="raised",
        severity=severity,
        score=0.9,
        value=41.5,
        reading_ts=1_796_000_000_000,
        reason="peers: 3.1 sd above the kind's median",
        model_version="m1",
        source=source,
    )
    return Alert(
        data.alert_id, f"edgepipe/{source}", "edgepipe.alert", "2026-12-01T00:00:00Z", "d", data
    )


def test_an_analyst_alert_line_says_the_cloud_raised_it_right_after_the_device() -> None:
    assert "farm/soil_probe-0002 (cloud) moisture=41.5 WARNING" in format_alert(alert("cloud"))


def test_an_edge_alert_line_is_unmarked() -> None:
    line = format_alert(alert("edge"))
    assert (
        "farm/soil_probe-0002 moisture=41.5 WARNING" in line
        and "(" not in line.split(" moisture")[0]
    )


def test_a_source_filter_keeps_only_that_sources_alerts() -> None:
    assert alert_wanted(alert("cloud"), None, "cloud") and not alert_wanted(
        alert("edge"), None, "cloud"
    )
    assert alert_wanted(alert("edge"), None, "edge") and not alert_wanted(
        alert("cloud"), None, "edge"
    )
    assert alert_wanted(alert("edge"), None, None) and alert_wanted(alert("cloud"), None, None)


def test_a_severity_filter_keeps_that_level_and_above() -> None:
    assert alert_wanted(alert("edge", "critical"), "warning", None)
    assert not alert_wanted(alert("edge", "info"), "warning", None)
