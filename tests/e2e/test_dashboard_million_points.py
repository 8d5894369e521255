"""Pages over 1,000,000 stored points render from database-side downsampling (issue 7).

Speed is measured by `edgepipe bench`, not here; this checks what makes it fast: the explorer asks the database for at most ~600 buckets (``GROUP BY`` an
integer bucket in SQLite, ``GROUP BY time`` in InfluxDB), and the data-reduction figures
are counted in the database; no page moves the points themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.bench.dashboard import fill as fill_store
from pipeline.cloud.store import open_store
from pipeline.services import Influxd

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
POINTS = 1_000_000


def fill(url: str) -> None:
    fill_store(url, POINTS)
    store = open_store(url)
    try:
        assert store.count_readings() == POINTS
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "influx"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty SQLite file, or a fresh database on the session's InfluxDB 1.6."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'million.db'}"
    influxdb: Influxd = request.getfixturevalue("influxdb")
    database: str = request.getfixturevalue("influx_db")
    return f"influxdb://127.0.0.1:{influxdb.port}/{database}"


def test_pages_over_a_million_points_render_downsampled(
    monkeypatch: pytest.MonkeyPatch, store_url: str
) -> None:
    url = store_url
    fill(url)
    monkeypatch.setattr(sys, "argv", ["app.py", "--store", url])
    app = AppTest.from_file(APP, default_timeout=30)
    app.run()

    for page in (
        "views/overview.py",
        "views/alerts.py",
        "views/health.py",
        "views/reduction.py",
        "views/explorer.py",
    ):
        app.switch_page(page).run()
        assert not app.exception, [e.value for e in app.exception]
    time_range = next(box for box in app.selectbox if box.label == "Time range")
    time_range.set_value("7 days").run()

    assert not app.exception, [e.value for e in app.exception]
    assert "per 30 min bucket" in " ".join(c.value for c in app.caption)
    assert app.get("vega_lite_chart")
