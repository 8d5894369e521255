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
