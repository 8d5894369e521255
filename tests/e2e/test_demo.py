"""The walking skeleton end to end: simulator → broker → edge → cloud → store, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pipeline.services
from pipeline.cloud.store import open_store
from pipeline.config import load_settings
from pipeline.demo import run_demo
from pipeline.errors import ServiceError
from pipeline.services import Influxd, Mosquitto


def test_edgepipe_demo_stores_everything_the_edge_accepted(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--duration", "5", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["broker"] == "mosquitto"
    assert report["readings_stored"] > 0
    assert report["readings_stored"] == report["readings_accepted"]
    assert report["lost"] == 0
    assert report["unaccounted"] == 0
    assert (tmp_path / "edgepipe.db").is_file()


def test_the_demo_at_its_defaults_shows_an_alert_that_matches_the_anomaly_it_injected(tmp_path: Path) -> None:
    """No flags, no keys (issue 19): 20 s, 6 farm devices at 2 Hz; the spike at 12 s is caught
    because new series warm-start from the built-in priors (docs/detection.md)."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["labels"] >= 1
    assert report["injected"].startswith("spike on soil_probe-0001 moisture at 12 s")
    assert report["alerts_matching_labels"] >= 1, report
    assert any(m.startswith("soil_probe-0001 moisture ") for m in report["matched"]), report["matched"]
    assert report["lost"] == 0


def test_without_the_built_in_priors_the_default_demo_matches_nothing(tmp_path: Path) -> None:
    """The priors are what makes the demo show detection: switched off, the detector is still
    warming up when the spike comes (100 readings, 50 s at 2 Hz). Also: the setting works."""
    settings = load_settings(
        overrides={"store.url": f"sqlite:///{tmp_path / 'demo.db'}", "detect.builtin_priors": False}
    )
    report = run_demo(settings, own_broker=True, duration=20, devices=6)
    assert report["labels"] >= 1
    assert report["alerts_matching_labels"] == 0


def test_the_demo_falls_back_to_the_embedded_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_mosquitto(*args: object, **kwargs: object) -> Mosquitto:
        raise ServiceError("mosquitto is not installed")

    monkeypatch.setattr(pipeline.services, "Mosquitto", no_mosquitto)
    settings = load_settings(overrides={"store.url": f"sqlite:///{tmp_path / 'demo.db'}"})
    report = run_demo(settings, own_broker=True, duration=3, devices=3)
    assert report["broker"] == "embedded"
    assert report["readings_stored"] > 0
    assert report["lost"] == 0


def test_sim_to_influxdb_through_a_real_broker(mosquitto: Mosquitto, influxdb: Influxd, influx_db: str) -> None:
    url = f"influxdb://127.0.0.1:{influxdb.port}/{influx_db}"
    settings = load_settings(
        overrides={
            "mqtt.url": mosquitto.url,
            "store.url": url,
            "edge.site": "farm-e2e",
            "cloud.client_id": "cloud-e2e",
            "cloud.group": "e2e",
        }
    )
    report = run_demo(settings, own_broker=False, duration=4, devices=4)
    assert report["lost"] == 0
    assert report["readings_stored"] == report["readings_accepted"] > 0

    store = open_store(url)
    try:
        devices = store.devices("farm-e2e")
        assert len(devices) == 4
        device, kind = devices[0]
        from pipeline.protocol.catalog import KINDS

        metric = next(iter(KINDS[kind].metrics))
        now = time.time_ns() // 1_000_000
        rows = store.query_readings("farm-e2e", device, metric, now - 600_000, now + 1000)
        assert rows, f"no {metric} readings of {device} read back from InfluxDB"
    finally:
        store.close()
