"""RELIABILITY.md S9: a compromised site's model deltas have a bounded weight.

The median rule of S8 leaves a site's first delta of a kind unbounded; here every delta is
bounded by what its site could have learned in the time (``rate_too_high``), and once two
sites contribute, no site holds more than ``cloud.model_max_site_share`` of a merged model
(``share_too_large``). Refused deltas are counted by reason and change nothing.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pipeline.cloud.models import ModelMerger
from pipeline.cloud.store import SQLiteStore
from pipeline.config import load_settings
from pipeline.edge.model_sync import ModelSync
from pipeline.errors import ProtocolError
from pipeline.protocol.model_codec import ModelDelta, encode_model, sign

NOW = 1_800_000_000_000
KEYS = {"edge1": "key-of-edge1", "edge2": "key-of-edge2"}


class Clock:
    def __init__(self) -> None:
        self.ms = NOW

    def __call__(self) -> int:
        return self.ms


def honest(site: str, seq: int, created_ms: int, readings: int = 300) -> ModelDelta:
    sync = ModelSync(site, f"edge-{site}", key=KEYS[site].encode(), cloud_key=b"", interval_ms=1)
    for i in range(readings):
        sync.learn_one(f"f{i % 3}", "fridge", "temp", 4.0 + (i % 7) / 10, created_ms - 60_000 + i * 10)
    return sync.delta("fridge", sync.take_deltas(created_ms)["fridge"], seq, created_ms)


def claiming(site: str, seq: int, created_ms: int, readings: int) -> ModelDelta:
    """A well-formed delta, signed with the site's own key, that claims ``readings`` readings."""
    delta = honest(site, seq, created_ms)
    stats = delta.metrics["temp"]
    extra = readings - stats.n
    busy = max(range(len(stats.day_n)), key=lambda i: stats.day_n[i])
    day_n = [n + extra if i == busy else n for i, n in enumerate(stats.day_n)]
    stats = msgspec.structs.replace(stats, n=readings, day_n=day_n)
    return sign(msgspec.structs.replace(delta, metrics={"temp": stats}), KEYS[site].encode())


def merger_at(tmp_path: Path, clock: Clock, **overrides: object) -> ModelMerger:
    settings = load_settings(
        overrides={"cloud.model_keys": KEYS, "cloud.model_key": "cloud", **overrides}
    )
    return ModelMerger(settings, SQLiteStore(tmp_path / "c.db"), lambda t, p: None, now_ms=clock)


def weight(merger: ModelMerger, site: str) -> int:
    return merger.site_weights.get("fridge", {}).get(site, 0)


def test_a_first_delta_claiming_a_billion_readings_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    merger = merger_at(tmp_path, clock)

    with pytest.raises(ProtocolError, match="rate_too_high"):
        merger.handle("edge1", encode_model(claiming("edge1", 1, NOW, 10**9)))

    print(f"\nfirst delta of 10^9 readings: rejected {dict(merger.counters.rejected)}, "
          f"applied {merger.counters.accepted}, kinds {sorted(merger.kinds)}")  # fmt: skip
    assert merger.counters.rejected == {"rate_too_high": 1}
    assert merger.counters.accepted == 0 and merger.kinds == {}


def test_a_delta_may_weigh_what_its_site_could_learn_since_the_previous_one(tmp_path: Path) -> None:
    clock = Clock()
    merger = merger_at(tmp_path, clock, **{"cloud.model_max_readings_per_s": 100.0,
                                           "cloud.model_norm_floor": 1000,
                                           "cloud.model_norm_factor": 100.0})  # fmt: skip
    assert merger.handle("edge1", encode_model(honest("edge1", 1, NOW))) == 1
    clock.ms += 60_000  # 60 s later: at most 1000 + 100 x 60 = 7000 readings
    created = clock.ms

    outcomes = []
    for seq, readings in [(2, 7001), (3, 7000)]:
        try:
            merger.handle("edge1", encode_model(claiming("edge1", seq, created, readings)))
            outcomes.append((readings, "applied"))
        except ProtocolError as exc:
            outcomes.append((readings, exc.reason.value))

    print(f"\n60 s after a delta, limit 7000: {outcomes}; weight {weight(merger, 'edge1')}")
    assert outcomes == [(7001, "rate_too_high"), (7000, "applied")]
    assert weight(merger, "edge1") == 7300


def test_one_site_cannot_push_its_share_above_the_cap(tmp_path: Path) -> None:
    clock = Clock()
    merger = merger_at(tmp_path, clock, **{"cloud.model_norm_floor": 300})  # slack: 300 readings
    for seq in (1, 2):
        clock.ms += 1000
        merger.handle("edge2", encode_model(honest("edge2", seq, clock.ms)))

    outcomes = []
    for seq in range(1, 7):  # 300 each: edge1 may hold 300 + 600 x 0.5 / 0.5 = 900
        clock.ms += 1000
        try:
            merger.handle("edge1", encode_model(honest("edge1", seq, clock.ms)))
            outcomes.append("applied")
        except ProtocolError as exc:
            outcomes.append(exc.reason.value)
    mine, others = weight(merger, "edge1"), weight(merger, "edge2")

    print(f"\nedge1, 6 deltas of 300 against edge2's 600 (cap 0.5, floor 300): {outcomes}, "
          f"edge1 holds {mine} of {mine + others} ({mine / (mine + others):.2f}), "
          f"rejected {dict(merger.counters.rejected)}")  # fmt: skip
    assert outcomes == ["applied"] * 3 + ["share_too_large"] * 3
    assert mine == 900 and mine / (mine + others) <= 0.5 + 300 / (mine + others)
    assert merger.counters.rejected == {"share_too_large": 3}


def test_a_compromised_site_cannot_outweigh_a_large_honest_model(tmp_path: Path) -> None:
    clock = Clock()
    merger = merger_at(tmp_path, clock, **{"cloud.model_norm_factor": 1000.0})
    for seq in range(1, 11):  # edge2: 10 x 9000 = 90,000 honest readings, one a minute
        clock.ms += 60_000
        merger.handle("edge2", encode_model(claiming("edge2", seq, clock.ms, 9000)))

    refused = []
    for seq in range(1, 31):  # edge1, compromised: as heavy as the rate bound lets it, each minute
        clock.ms += 60_000
        try:
            merger.handle("edge1", encode_model(claiming("edge1", seq, clock.ms, 70_000)))
        except ProtocolError as exc:
            refused.append(exc.reason.value)
    mine, others = weight(merger, "edge1"), weight(merger, "edge2")
    share = mine / (mine + others)

    print(f"\ncompromised edge1, 30 deltas of 70,000 against 90,000 honest: applied "
          f"{30 - len(refused)}, refused {len(refused)}, edge1's share {share:.3f}")
    assert share <= 0.5 + merger.norm_floor / (mine + others)
    assert refused[0] == "rate_too_high"  # its first delta: at most the floor
    assert set(refused[1:]) == {"share_too_large"}


def test_honest_sites_taking_turns_all_merge(tmp_path: Path) -> None:
    clock = Clock()
    merger = merger_at(tmp_path, clock)

    for seq in range(1, 11):
        for site in ("edge1", "edge2"):
            clock.ms += 500
            assert merger.handle(site, encode_model(honest(site, seq, clock.ms))) == seq

    state = merger.kinds["fridge"]
    print(f"\n2 honest sites x 10 deltas: applied {merger.counters.accepted}, version "
          f"{state.version}, readings {state.metrics['temp'].n}, rejected {dict(merger.counters.rejected)}")  # fmt: skip
    assert merger.counters.accepted == 20 and not merger.counters.rejected
    assert state.metrics["temp"].n == 6000 and state.sites == {"edge1", "edge2"}


def test_a_restarted_merger_still_caps_a_sites_share(tmp_path: Path) -> None:
    clock = Clock()
    merger = merger_at(tmp_path, clock, **{"cloud.model_norm_floor": 300})
    merger.handle("edge2", encode_model(honest("edge2", 1, NOW)))
    for seq in (1, 2):  # edge1 reaches 600 = 300 + 300: the most it may hold
        clock.ms += 1000
        merger.handle("edge1", encode_model(honest("edge1", seq, clock.ms)))

    again = merger_at(tmp_path, clock, **{"cloud.model_norm_floor": 300})
    clock.ms += 1000
    with pytest.raises(ProtocolError, match="share_too_large"):
        again.handle("edge1", encode_model(honest("edge1", 3, clock.ms)))

    print(f"\nrestarted merger: site weights {again.site_weights}, rejected {dict(again.counters.rejected)}")
    assert again.site_weights == {"fridge": {"edge1": 600, "edge2": 300}}
