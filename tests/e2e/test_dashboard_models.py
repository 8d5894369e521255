"""The Model sync page over a store holding model records: merged versions and each site's last delta."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.cloud.store import MergedModelRecord, ModelDeltaRecord, open_store
from pipeline.protocol.messages import Reading

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")


def test_model_sync_shows_versions_ages_and_each_sites_last_delta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'models.db'}"
    now = time.time_ns() // 1_000_000
    store = open_store(url)
    store.write_readings("shop1", [Reading(v=1, device="f1", kind="fridge", ts=now, seq=1,
                                           metrics={"temp": 4.0})])  # fmt: skip
    store.write_model_delta(ModelDeltaRecord("fridge", "shop1", "edge-shop1", 12, now - 30_000, 600))
    store.write_model_delta(ModelDeltaRecord("fridge", "shop2", "edge-shop2", 7, now - 90_000, 300))
    store.write_merged_model(MergedModelRecord("fridge", 5, now - 30_000, 4200, ("shop1", "shop2"), "{}"))
    store.close()
    monkeypatch.setattr(sys, "argv", ["app.py", "--store", url])
    app = AppTest.from_file(APP, default_timeout=30)
    app.run()
    app.switch_page("views/models.py")
    app.run()

    assert not app.exception
    merged, deltas = (frame.value for frame in app.dataframe)
    assert merged.to_dict("records")[0] | {"age_s": 0} == {
        "kind": "fridge", "version": 5, "age_s": 0, "readings": 4200, "sites": "shop1, shop2"}  # fmt: skip
    assert 25 < merged["age_s"][0] < 120
    assert list(zip(deltas["site"], deltas["seq"], deltas["delta_readings"], strict=True)) == [
        ("shop1", 12, 600), ("shop2", 7, 300)]  # fmt: skip
