"""The dashboard page renders over an empty store and over a filled one, never a traceback."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.cloud.store import open_store
from pipeline.protocol import Health, Reading

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")


def run_app(monkeypatch: pytest.MonkeyPatch, store_url: str) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["app.py", "--store", store_url])
    app = AppTest.from_file(APP, default_timeout=30)
    app.run()
    return app


def test_an_empty_store_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app = run_app(monkeypatch, f"sqlite:///{tmp_path / 'empty.db'}")
    assert not app.exception
    assert "The store is empty" in app.info[0].value


def test_an_unreachable_influxdb_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.services import free_port

    app = run_app(monkeypatch, f"influxdb://127.0.0.1:{free_port()}/nothing")
    assert not app.exception
    assert "not reachable" in app.error[0].value


def test_a_filled_store_shows_its_sites(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'filled.db'}"
    store = open_store(url)
    now = time.time_ns() // 1_000_000
    store.write_readings(
        "farm", [Reading(v=1, device="d1", kind="soil_probe", ts=now, seq=1, metrics={"moisture": 3.0})]
    )
    store.write_health(Health(v=1, site="farm", node="edge-farm", ts=now, status="online"))
    store.close()
    app = run_app(monkeypatch, url)
    assert not app.exception
    table = app.dataframe[0].value
    assert list(table["site"]) == ["farm"]
    assert list(table["edge"]) == ["online"]
