"""Model deltas on the edge: quantisation bound, canonical signing, size, priors, warm start."""

from __future__ import annotations

import json
import random

import msgspec
import pytest

from pipeline.detect.seasonal import SeasonalResidualDetector
from pipeline.edge.model_sync import ModelSync
from pipeline.learn.sync_stats import PRIOR_WARMUP, prior_from_stats
from pipeline.protocol.model_codec import (
    MAX_MODEL_BYTES,
    MergedModel,
    decode_delta,
    encode_model,
    quantise,
    sign,
    verify,
)

T0 = 1_800_000_000_000


def farm_sync(readings: int = 2000) -> ModelSync:
    sync = ModelSync("farm", "edge-farm", key=b"farm-key", cloud_key=b"cloud-key", interval_ms=1)
    rng = random.Random(3)
    for i in range(readings):
        ts = T0 + i * 60_000
        for metric, base in (("air_temp", 12.0), ("humidity", 70.0), ("light", 40_000.0), ("wind", 3.0)):
            sync.learn_one(f"ws-{i % 5}", "weather_station", metric, base + rng.gauss(0, 1), ts)
    return sync


def test_quantised_values_are_within_float16_relative_precision() -> None:
    rng = random.Random(1)
    xs = [rng.uniform(-1, 1) * 10 ** rng.uniform(-30, 30) for _ in range(100_000)]
    worst = max(abs(quantise(x) - x) / abs(x) for x in xs)
    print(f"\nworst relative quantisation error {worst:.3e} (bound 2**-11 = {2**-11:.3e})")
    assert worst <= 2**-11


def test_a_signed_delta_verifies_whatever_the_json_spelling() -> None:
    sync = farm_sync(300)
    delta = sync.delta("weather_station", sync.take_deltas(T0)["weather_station"], 5, T0)
    obj = json.loads(encode_model(delta))
    respelled = json.dumps(dict(reversed(list(obj.items()))), indent=2)  # other order, spaces

    decoded = decode_delta(respelled.encode())
    assert decoded == delta
    assert verify(decoded, b"farm-key") and not verify(decoded, b"city-key")


def test_a_four_metric_delta_fits_the_48_kib_limit() -> None:
    sync = farm_sync()
    delta = sync.delta("weather_station", sync.take_deltas(T0)["weather_station"], 1, T0)
    size = len(encode_model(delta))
    print(f"\nweather_station delta, 4 metrics, 2000 readings each: {size} bytes")
    assert size <= MAX_MODEL_BYTES


def test_a_merged_model_needs_the_clouds_signature_and_a_newer_version() -> None:
    sync = farm_sync(300)
    metrics = sync.take_deltas(T0)["weather_station"]
    model = MergedModel(v=1, kind="weather_station", version=2, created_ms=T0, sites=["farm"], metrics=metrics)
    good = encode_model(sign(model, b"cloud-key"))

    assert sync.on_merged("weather_station", encode_model(model)) is None
    assert sync.on_merged("weather_station", encode_model(sign(model, b"wrong"))) is None
    assert sync.on_merged("weather_station", good) is not None
    assert sync.on_merged("weather_station", good) is None  # not newer
    assert sync.refused == {"unsigned": 1, "bad_signature": 1, "replayed": 1}


def test_a_prior_needs_enough_readings() -> None:
    sync = farm_sync(100)
    stats = sync.take_deltas(T0)["weather_station"]["wind"]
    assert prior_from_stats(stats, 1) is None


def test_a_warm_started_detector_scores_after_the_short_warmup() -> None:
    sync = farm_sync()
    prior = prior_from_stats(sync.take_deltas(T0)["weather_station"]["air_temp"], 1)
    assert prior is not None
    warm, cold = SeasonalResidualDetector(), SeasonalResidualDetector()
    warm.warm_start(prior)
    for i in range(PRIOR_WARMUP):
        for d in (warm, cold):
            d.learn_value(12.0 + 0.1 * (i % 3), T0 + i * 60_000)

    spike = T0 + PRIOR_WARMUP * 60_000
    assert warm.score_value(30.0, spike) > 0.99
    assert cold.score_value(30.0, spike) == 0.0
    assert warm.score_value(12.1, spike) < 0.5


def test_without_a_prior_the_detector_is_unchanged() -> None:
    rng = random.Random(2)
    xs = [10 + rng.gauss(0, 1) for _ in range(500)]
    plain, template_clone = SeasonalResidualDetector(), SeasonalResidualDetector().clone()
    scores = []
    for i, x in enumerate(xs):
        ts = T0 + i * 300_000
        scores.append((plain.score_value(x, ts), template_clone.score_value(x, ts)))
        plain.learn_value(x, ts)
        template_clone.learn_value(x, ts)
    assert all(a == b for a, b in scores)


def test_an_unknown_field_type_in_a_delta_is_refused() -> None:
    from pipeline.errors import ProtocolError

    sync = farm_sync(300)
    delta = sync.delta("weather_station", sync.take_deltas(T0)["weather_station"], 5, T0)
    raw = msgspec.json.decode(encode_model(delta))
    raw["seq"] = "five"
    with pytest.raises(ProtocolError, match="wrong_type"):
        decode_delta(msgspec.json.encode(raw))
