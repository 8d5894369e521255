"""Every dashboard page over an empty store and over an unreachable InfluxDB: a message, no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.services import free_port

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
PAGES = [
    "views/overview.py",
    "views/alerts.py",
    "views/explorer.py",
    "views/reduction.py",
    "views/models.py",
    "views/health.py",
]


def run_page(monkeypatch: pytest.MonkeyPatch, store_url: str, page: str) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["app.py", "--store", store_url])
    app = AppTest.from_file(APP, default_timeout=30)
    app.run()
    app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.title, "the page has no title"
    return app


@pytest.mark.parametrize("page", PAGES)
def test_an_empty_store_gives_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, page: str
) -> None:
    app = run_page(monkeypatch, f"sqlite:///{tmp_path / 'empty.db'}", page)

    assert any("The store is empty" in info.value for info in app.info)
    assert not app.dataframe and not app.get("vega_lite_chart")


@pytest.mark.parametrize("page", PAGES)
def test_an_unreachable_influxdb_gives_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    app = run_page(monkeypatch, f"influxdb://127.0.0.1:{free_port()}/nothing?timeout=1", page)

    assert any("not reachable" in error.value for error in app.error)
    assert not app.dataframe and not app.get("vega_lite_chart")


def test_a_secret_in_the_store_url_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"influxdb://admin:hunter2@127.0.0.1:{free_port()}/nothing?timeout=1"
    app = run_page(monkeypatch, url, "views/overview.py")

    shown = " ".join(e.value for e in [*app.error, *app.caption, *app.sidebar.caption])
    assert "hunter2" not in shown
    assert "admin:***@" in shown
