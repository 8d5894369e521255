"""The Store contract for model records (model sync), on SQLite and on the real InfluxDB 1.6.7."""

from __future__ import annotations

import pytest

from pipeline.cloud.store import MergedModelRecord, ModelDeltaRecord, Store

T0 = 1_700_000_000_000


@pytest.fixture
def model_store(any_store: Store) -> Store:
    return any_store


def test_latest_model_delta_per_kind_and_site_is_the_highest_seq(model_store: Store) -> None:
    for seq, site, kind in [(3, "farm", "soil_probe"), (9, "farm", "soil_probe"),
                            (4, "farm-2", "soil_probe"), (5, "farm", "weather_station")]:  # fmt: skip
        model_store.write_model_delta(
            ModelDeltaRecord(kind, site, f"edge-{site}", seq, T0 + seq * 1000, 10 * seq)
        )

    assert model_store.latest_model_deltas() == [
        ModelDeltaRecord("soil_probe", "farm", "edge-farm", 9, T0 + 9000, 90),
        ModelDeltaRecord("soil_probe", "farm-2", "edge-farm-2", 4, T0 + 4000, 40),
        ModelDeltaRecord("weather_station", "farm", "edge-farm", 5, T0 + 5000, 50),
    ]


def test_latest_merged_model_per_kind_keeps_its_payload(model_store: Store) -> None:
    payload = '{"v":1,"kind":"fridge","metrics":{},"sig":"ab\\"c"}'
    model_store.write_merged_model(MergedModelRecord("fridge", 1, T0, 100, ("shop1",), "{}"))
    model_store.write_merged_model(
        MergedModelRecord("fridge", 2, T0 + 60_000, 250, ("shop1", "shop2"), payload)
    )

    assert model_store.latest_merged_models() == [
        MergedModelRecord("fridge", 2, T0 + 60_000, 250, ("shop1", "shop2"), payload)
    ]


def test_a_rewritten_model_delta_leaves_one_record(model_store: Store) -> None:
    record = ModelDeltaRecord("fridge", "shop1", "edge-shop1", 7, T0, 70)
    model_store.write_model_delta(record)
    model_store.write_model_delta(record)

    assert model_store.latest_model_deltas() == [record]


def test_a_model_record_with_an_invalid_id_is_refused(model_store: Store) -> None:
    with pytest.raises(ValueError):
        model_store.write_model_delta(ModelDeltaRecord("fridge", "a b", "edge", 1, T0, 1))
    assert model_store.latest_model_deltas() == []


def test_model_site_weights_sum_every_applied_delta_per_kind_and_site(model_store: Store) -> None:
    for seq, site, kind in [(3, "farm", "soil_probe"), (9, "farm", "soil_probe"),
                            (4, "farm-2", "soil_probe"), (5, "farm", "weather_station")]:  # fmt: skip
        model_store.write_model_delta(
            ModelDeltaRecord(kind, site, f"edge-{site}", seq, T0 + seq * 1000, 10 * seq)
        )

    weights = model_store.model_site_weights()
    print(f"model site weights: {weights}")
    assert weights == {
        ("soil_probe", "farm"): 120, ("soil_probe", "farm-2"): 40, ("weather_station", "farm"): 50,
    }  # fmt: skip
