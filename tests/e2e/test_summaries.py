"""The summaries of `edgepipe sim` and `edgepipe demo` add up, and docs/summaries.md defines
every count they print (issue 20: acknowledged counted labels beside published readings)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.services import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 180


def documented_keys(command: str) -> set[str]:
    """The keys of the table under ``## `edgepipe COMMAND``` in docs/summaries.md."""
    text = (ROOT / "docs" / "summaries.md").read_text()
    section = text.split(f"## `edgepipe {command}`", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))


def edgepipe_json(*args: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args, "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def sim_against(broker: Mosquitto, tmp_path: Path, *flags: str) -> dict[str, Any]:
    return edgepipe_json(
        "sim", "--broker", broker.url, "--sites", "farm,city", "--devices-per-site", "4",
        "--duration", "3", "--speed", "1200", "--bad-rate", "0.05", "--seed", "2", *flags,
        cwd=tmp_path,
        env={"EDGEPIPE_SIM__ANOMALY_RATE": "4"},  # labels within a 3 s run
    )


def test_a_sim_summary_counts_labels_apart_from_the_payloads_it_acknowledges(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    report = sim_against(mosquitto, tmp_path, "--qos", "1")
    assert set(report) <= documented_keys("sim"), set(report) - documented_keys("sim")
    assert report["payloads_published"] == report["readings_published"] + report["bad_published"]
    assert report["bad_published"] == sum(report["bad_by_kind"].values()) > 0
    assert report["labels"] == sum(report["labels_by_anomaly"].values()) > 0
    assert report["payloads_acknowledged"] == report["payloads_published"]
    assert report["labels_acknowledged"] == report["labels"]


def test_at_qos_0_a_sim_summary_acknowledges_labels_only(mosquitto: Mosquitto, tmp_path: Path) -> None:
    report = sim_against(mosquitto, tmp_path, "--qos", "0")
    assert report["payloads_acknowledged"] is None
    assert report["labels_acknowledged"] == report["labels"] > 0


def test_the_demo_summary_adds_up(tmp_path: Path) -> None:
    report = edgepipe_json("demo", "--duration", "5", cwd=tmp_path)
    assert set(report) <= documented_keys("demo"), set(report) - documented_keys("demo")
    published = report["readings_published"] + report["bad_published"]
    assert report["payloads_published"] == published == report["payloads_acknowledged"]
    assert report["labels_acknowledged"] == report["labels"]
    assert report["readings_received"] == published
    refused = report["dead_letters"] + report["duplicates"] + report["dropped"]
    assert report["readings_received"] == report["readings_accepted"] + refused
    assert report["unaccounted"] == 0
    assert report["dead_letters"] == sum(report["dead_letters_by_reason"].values())
    assert report["readings_stored"] == report["readings_accepted"] > 0
    assert report["lost"] == 0
    assert report["points_stored"] == report["points_shipped"] > 0
    assert report["labels"] >= 1  # the demo's injected spike, labelled even in a short run
    assert report["alerts_matching_labels"] == len(report["matched"]) <= report["alerts_raised"] <= report["alerts"]
