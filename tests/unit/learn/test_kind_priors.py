"""The built-in priors shipped in the package: what they cover, how big, how a rate is chosen."""

from __future__ import annotations

from importlib import resources

import pytest

from pipeline.edge.model_sync import BUILTIN_PRIORS, ModelSync, builtin_priors, builtin_priors_for
from pipeline.learn.kind_priors import RatePriors, decode_priors, encode_priors
from pipeline.protocol.catalog import BUILTIN, Catalog, DeviceKind, Metric

MAX_BYTES = 32 * 1024  # small: a package file, read once per node


def test_the_shipped_file_covers_every_built_in_kind_metric_at_three_rates() -> None:
    priors = builtin_priors()
    wanted = {(k, m) for k, kind in BUILTIN.kinds.items() if k != "replay" for m in kind.metrics}
    assert set(priors) == wanted
    for key, p in priors.items():
        assert sorted(p.rates) == [1.0, 60.0, 900.0], key
        assert len(p.day_profile) == 96 and p.low <= p.high, key


def test_the_shipped_file_is_small_and_says_how_it_was_learned() -> None:
    package, name = BUILTIN_PRIORS
    data = resources.files(package).joinpath(name).read_bytes()
    assert len(data) < MAX_BYTES
    learned = decode_priors(data)[1]
    assert learned["command"].startswith("edgepipe priors learn")
    assert learned["seed"] != 11 and learned["seed"] != 1011  # the quality bench's fleets


@pytest.mark.parametrize(("interval_s", "learned"), [(0.5, 1.0), (5.0, 1.0), (10.0, 60.0), (120.0, 60.0), (600.0, 900.0), (3600.0, 900.0)])
def test_the_nearest_learned_rate_is_chosen_by_ratio(interval_s: float, learned: float) -> None:
    p = RatePriors([0.0] * 96, None, 0.0, 1.0, {r: (r, [r] * 8) for r in (1.0, 60.0, 900.0)})
    assert p.at(interval_s).residual_top[0] == learned


def test_encoding_keeps_four_significant_digits_and_missing_bins() -> None:
    p = RatePriors([float("nan")] + [1.234567] * 95, 0.123456, -1.0, 2.0, {1.0: (0.00123456, [98765.4] * 8)})
    back = decode_priors(encode_priors({("k", "m"): p}, {}))[0][("k", "m")]
    assert back.day_profile[0] != back.day_profile[0] and back.day_profile[1] == 1.235
    assert back.rates[1.0] == (0.001235, [98770.0] * 8)


def test_a_kind_redefined_by_the_user_gets_no_built_in_prior() -> None:
    fridge = DeviceKind("fridge", "retail", {"temp": Metric("temp", "C", 0.5, -50.0, 50.0)})
    priors = builtin_priors_for(BUILTIN.with_kinds({"fridge": fridge}))
    assert ("fridge", "temp") not in priors and ("freezer", "temp") in priors
    assert builtin_priors_for(Catalog.builtin()) == builtin_priors()


def test_model_sync_without_a_merged_model_falls_back_to_the_built_in_prior() -> None:
    sync = ModelSync("farm", "edge-farm", b"", b"", 60_000, builtin=builtin_priors())
    prior = sync.prior_at("soil_probe", "moisture", 1.0)
    assert prior is not None and prior.residual_top == builtin_priors()[("soil_probe", "moisture")].rates[1.0][1]
    assert sync.builtin_used == 1
    assert ModelSync("farm", "edge-farm", b"", b"", 60_000).prior_at("soil_probe", "moisture", 1.0) is None
