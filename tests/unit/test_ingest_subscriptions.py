"""Which topics a cloud worker takes: the load shared, the model deltas whole to one merger."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cloud.ingest import IngestWorker
from pipeline.cloud.store import open_store
from pipeline.config import load_settings


def _subscriptions(tmp_path: Path, **overrides: object) -> list[str]:
    settings = load_settings(
        overrides={"cloud.buffer_dir": str(tmp_path), "mqtt.url": "mqtt://127.0.0.1:1", **overrides}
    )
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        return IngestWorker(settings, store).subscriptions()
    finally:
        store.close()


def test_over_mqtt5_the_data_topics_are_shared_and_model_deltas_are_not(tmp_path: Path) -> None:
    filters = _subscriptions(tmp_path)
    assert "edgepipe/v1/+/edge/model" in filters
    assert "$share/edgepipe-cloud/edgepipe/v1/+/edge/batch" in filters
    assert not any(f.startswith("$share/") and f.endswith("/model") for f in filters)


def test_a_worker_that_does_not_merge_never_sees_model_deltas(tmp_path: Path) -> None:
    filters = _subscriptions(tmp_path, **{"cloud.merge_models": False})
    assert not any(f.endswith("/edge/model") or f.endswith("/edge/+") for f in filters)


@pytest.mark.parametrize("what", ["batch", "agg", "health"])
def test_over_mqtt311_one_worker_takes_everything_unshared(tmp_path: Path, what: str) -> None:
    filters = _subscriptions(tmp_path, **{"mqtt.protocol": "3.1.1"})
    assert f"edgepipe/v1/+/edge/{what}" in filters
    assert not any(f.startswith("$share/") for f in filters)


def test_every_worker_takes_every_sites_catalogue_unshared(tmp_path: Path) -> None:
    filters = _subscriptions(tmp_path)
    assert "edgepipe/v1/+/edge/catalog" in filters
