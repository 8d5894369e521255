"""RELIABILITY.md S8: forged model deltas are never applied, and each is counted by its reason.

8 forgery kinds x 25 = 200 forged deltas against a ModelMerger that has already applied 25
legitimate ones: 0 applied (the merged statistics' hash is unchanged, nothing more is
published), 200 counted, 25 per reason.
"""

from __future__ import annotations

from collections import Counter
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


def legitimate(seq: int, readings: int = 300, site: str = "edge1") -> ModelDelta:
    sync = ModelSync(site, f"edge-{site}", key=KEYS[site].encode(), cloud_key=b"", interval_ms=1)
    for i in range(readings):
        sync.learn_one(f"f{i % 3}", "fridge", "temp", 4.0 + (i % 7) / 10, NOW - 60_000 + i * 100)
    metrics = sync.take_deltas(NOW)["fridge"]
    return sync.delta("fridge", metrics, seq, NOW)


def payload(delta: ModelDelta) -> bytes:
    return encode_model(delta)


def forgeries(seq0: int, accepted: ModelDelta) -> dict[str, list[bytes]]:
    """Kind of forgery -> 25 payloads, each claiming to come from edge1."""
    edge1 = KEYS["edge1"].encode()
    out: dict[str, list[bytes]] = {}
    seqs = [seq0 + i for i in range(25)]
    out["no signature"] = [payload(msgspec.structs.replace(legitimate(s), sig="")) for s in seqs]
    out["bad signature"] = [
        payload(msgspec.structs.replace(legitimate(s), sig="00" * 32)) for s in seqs
    ]
    out["edge2's key claiming edge1"] = [
        payload(sign(legitimate(s), KEYS["edge2"].encode())) for s in seqs
    ]
    out["replay of an accepted delta"] = [payload(accepted)] * 25
    out["stale"] = [
        payload(sign(msgspec.structs.replace(legitimate(s), created_ms=NOW - 11 * 60_000), edge1))
        for s in seqs
    ]
    nan = payload(legitimate(seq0)).replace(b'"mean":', b'"mean":1e999,"_":', 1)
    out["NaN inside"] = [nan.replace(b'"seq":', b'"seq":%d,"_s":' % s, 1) for s in seqs]
    def short(s: int) -> bytes:
        d = legitimate(s)
        stats = msgspec.structs.replace(d.metrics["temp"], res=d.metrics["temp"].res[:-1])
        return payload(sign(msgspec.structs.replace(d, metrics={"temp": stats}), edge1))
    out["wrong shape"] = [short(s) for s in seqs]
    out["100x norm from a compromised edge"] = [
        payload(legitimate(s, readings=30_000)) for s in seqs
    ]
    return out


@pytest.fixture
def merger(tmp_path: Path) -> ModelMerger:
    settings = load_settings(overrides={"cloud.model_keys": KEYS, "cloud.model_key": "cloud"})
    published: list[tuple[str, bytes]] = []
    m = ModelMerger(settings, SQLiteStore(tmp_path / "c.db"), lambda t, p: published.append((t, p)),
                    now_ms=lambda: NOW)  # fmt: skip
    m.published = published  # type: ignore[attr-defined]
    return m


def test_200_forged_deltas_are_refused_counted_by_reason_and_none_applied(merger: ModelMerger) -> None:
    legit = [legitimate(seq) for seq in range(1, 26)]
    for delta in legit:
        assert merger.handle("edge1", payload(delta)) == delta.seq
    before = merger.parameter_hash()
    published = len(merger.published)  # type: ignore[attr-defined]

    refused: Counter[str] = Counter()
    for kind, payloads in forgeries(100, legit[-1]).items():
        for p in payloads:
            try:
                merger.handle("edge1", p)
            except ProtocolError as exc:
                refused[f"{kind}: {exc.reason.value}"] += 1
            else:
                refused[f"{kind}: replayed (acknowledged, not applied)"] += 1
    print("\nforged deltas refused by kind:", dict(refused), "total", sum(refused.values()))

    assert dict(merger.counters.rejected) == {
        "unsigned": 25, "bad_signature": 50, "replayed": 25, "stale_ts": 25,
        "non_finite": 25, "bad_shape": 25, "norm_too_large": 25,
    }  # fmt: skip
    assert merger.parameter_hash() == before
    assert len(merger.published) == published == 25  # type: ignore[attr-defined]
    assert merger.counters.accepted == 25


def test_a_delta_from_a_site_without_a_key_is_refused(merger: ModelMerger) -> None:
    with pytest.raises(ProtocolError, match="unknown_site"):
        merger.handle("edge3", payload(legitimate(1)).replace(b'"edge1"', b'"edge3"'))


def test_a_delta_on_another_sites_topic_is_refused(merger: ModelMerger) -> None:
    with pytest.raises(ProtocolError, match="topic_mismatch"):
        merger.handle("edge2", payload(legitimate(1)))


def test_a_restarted_merger_still_refuses_a_replay(merger: ModelMerger, tmp_path: Path) -> None:
    delta = legitimate(7)
    merger.handle("edge1", payload(delta))
    settings = load_settings(overrides={"cloud.model_keys": KEYS})
    again = ModelMerger(settings, SQLiteStore(tmp_path / "c.db"), lambda t, p: None,
                        now_ms=lambda: NOW)  # fmt: skip

    assert again.handle("edge1", payload(delta)) == 7  # acknowledged, not applied
    assert again.counters.rejected == {"replayed": 1}
    assert again.kinds["fridge"].version == 1


# -- poisoning: RELIABILITY.md S9: a compromised site's model deltas have a bounded weight.
# 
# The median rule of S8 leaves a site's first delta of a kind unbounded; here every delta is
# bounded by what its site could have learned in the time (``rate_too_high``), and once two
# sites contribute, no site holds more than ``cloud.model_max_site_share`` of a merged model
# (``share_too_large``). Refused deltas are counted by reason and change nothing.

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
