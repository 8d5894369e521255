"""Snapshots of learned state: round trip, atomicity, incremental shards, every refusal."""

from __future__ import annotations

import json
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.detect.alerts import AlertPolicy
from pipeline.detect.silence import SilenceWatch
from pipeline.edge import snapshot as snap
from pipeline.edge.snapshot import (
    MANIFEST,
    PerDevice,
    SnapshotRefused,
    SnapshotStore,
    Stage,
    apply,
    shard_of,
)
from pipeline.edge.stages import Point


class Learner:
    """A stand-in stage: configuration from its constructor, state learned from points."""

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = threshold
        self.seen = 0
        self.per_device: dict[tuple[str, str], float] = {}
        self.callback = print  # a callable: never pickled

    def learn_one(self, device: str, value: float) -> None:
        self.seen += 1
        self.per_device[(device, "temp")] = value


class Gone:
    """Pickled, then made to vanish: an upgrade that moved a class."""


def parts_of(learner: Learner, sums: dict[str, int]) -> dict[str, object]:
    return {"learner.per_device": PerDevice(learner.per_device), "learner": learner, "sums": PerDevice(sums)}


def fed(n_devices: int = 50) -> tuple[Learner, dict[str, int]]:
    learner, sums = Learner(threshold=2.0), {}
    for i in range(n_devices):
        learner.learn_one(f"dev-{i}", float(i))
        sums[f"dev-{i}"] = i * i
    return learner, sums


def test_round_trip_restores_state_and_keeps_live_configuration(tmp_path: Path) -> None:
    learner, sums = fed()
    store = SnapshotStore(tmp_path, "farm", shards=8)
    stats = store.write(parts_of(learner, sums), watermark=123)
    assert (stats.generation, stats.watermark, stats.parts_written) == (1, 123, 1 + 8)
    fresh, fresh_sums = Learner(threshold=5.0), dict[str, int]()
    per_device = fresh.per_device
    loaded = SnapshotStore(tmp_path, "farm", shards=8).load()
    assert loaded is not None and loaded.watermark == 123 and loaded.bytes_total == stats.bytes_total
    apply(parts_of(fresh, fresh_sums), loaded.parts)
    assert fresh.per_device is per_device, "refilled in place: other holders of the dict see it"
    assert fresh.per_device == learner.per_device and fresh_sums == sums
    assert fresh.seen == 50
    assert fresh.threshold == 5.0, "configuration comes from the running node, not the snapshot"


def test_real_stages_round_trip(tmp_path: Path) -> None:
    policy = AlertPolicy("farm", raise_after=1)
    silence = SilenceWatch()
    for ts in range(0, 20_000, 1000):
        policy.update_one(Point("dev-1", "fridge", "temp", ts, ts, 4.0, 0.999))
        silence.learn_one("dev-1", ts, "fridge")
    live = {"alerts.series": PerDevice(policy._series), "alerts": policy, "silence": silence}
    store = SnapshotStore(tmp_path, "farm", shards=4)
    store.write(live, 1)
    again, silent_again = AlertPolicy("farm", raise_after=1), SilenceWatch()
    loaded = store.load()
    assert loaded is not None
    apply({"alerts.series": PerDevice(again._series), "alerts": again, "silence": silent_again}, loaded.parts)
    assert again.open_alerts == policy.open_alerts == 1
    assert pickle.dumps(again._series) == pickle.dumps(policy._series)
    assert silent_again.latest == silence.latest == 19_000


def test_no_snapshot_is_none_not_a_refusal(tmp_path: Path) -> None:
    assert SnapshotStore(tmp_path, "farm").load() is None


def test_incremental_write_rewrites_only_dirty_shards(tmp_path: Path) -> None:
    learner, sums = fed(200)
    store = SnapshotStore(tmp_path, "farm", shards=64)
    first = store.write(parts_of(learner, sums), watermark=1, dirty_devices=set())  # no previous: full
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-*")}
    assert first.parts_written == 1 + len(before)
    learner.learn_one("dev-7", 700.0)
    sums["dev-7"] = -1
    second = store.write(parts_of(learner, sums), watermark=2, dirty_devices={"dev-7"})
    assert second.parts_written == 2, "the whole part and the one shard of dev-7"
    shards = sorted(p.name for p in tmp_path.glob("shard-*"))
    rewritten = [n for n in shards if n not in before]
    assert rewritten == [f"shard-{shard_of('dev-7', 64):04d}.g2.part"]
    assert len(shards) == len(before), "the old file of the rewritten shard is gone"
    loaded = SnapshotStore(tmp_path, "farm", shards=64).load()
    assert loaded is not None
    assert loaded.parts["sums"] == sums and loaded.parts["learner.per_device"] == learner.per_device


def test_a_deleted_entry_is_gone_after_its_shard_is_rewritten(tmp_path: Path) -> None:
    learner, sums = fed(20)
    store = SnapshotStore(tmp_path, "farm", shards=4)
    store.write(parts_of(learner, sums), 1)
    del sums["dev-3"]
    store.write(parts_of(learner, sums), 2, dirty_devices={"dev-3"})
    loaded = store.load()
    assert loaded is not None and "dev-3" not in dict(loaded.parts["sums"])  # type: ignore[call-overload]


def test_crash_between_parts_and_manifest_leaves_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    learner, sums = fed()
    store = SnapshotStore(tmp_path, "farm", shards=8)
    store.write(parts_of(learner, sums), watermark=10)
    learner.learn_one("dev-1", 99.0)
    real = snap._write_durably

    def crash_at_manifest(path: Path, data: bytes) -> None:
        if path.name == MANIFEST:
            raise KeyboardInterrupt("killed before the manifest")  # what SIGKILL leaves: no manifest
        real(path, data)

    monkeypatch.setattr(snap, "_write_durably", crash_at_manifest)
    with pytest.raises(KeyboardInterrupt):
        store.write(parts_of(learner, sums), watermark=20, dirty_devices={"dev-1"})
    monkeypatch.setattr(snap, "_write_durably", real)
    loaded = SnapshotStore(tmp_path, "farm", shards=8).load()
    assert loaded is not None and loaded.watermark == 10 and loaded.generation == 1
    assert loaded.parts["learner.per_device"] == {**learner.per_device, ("dev-1", "temp"): 1.0}
    # The next write works over the leftovers and removes them.
    again = SnapshotStore(tmp_path, "farm", shards=8)
    again.write(parts_of(learner, sums), watermark=30, dirty_devices={"dev-1"})
    assert not list(tmp_path.glob("*.tmp"))
    assert len(list(tmp_path.glob("*.part"))) == 1 + 8


def _written(tmp_path: Path) -> SnapshotStore:
    learner, sums = fed()
    store = SnapshotStore(tmp_path, "farm", shards=4)
    store.write(parts_of(learner, sums), watermark=5)
    return store


def _some_part(tmp_path: Path) -> Path:
    return sorted(tmp_path.glob("shard-*.part"))[0]


def _refusal(tmp_path: Path, site: str = "farm") -> str:
    with pytest.raises(SnapshotRefused) as refused:
        SnapshotStore(tmp_path, site, shards=4).load()
    return refused.value.reason


def test_a_truncated_part_is_refused(tmp_path: Path) -> None:
    _written(tmp_path)
    part = _some_part(tmp_path)
    part.write_bytes(part.read_bytes()[:-10])
    assert _refusal(tmp_path) == "corrupt"


def test_a_truncated_manifest_is_refused(tmp_path: Path) -> None:
    _written(tmp_path)
    manifest = tmp_path / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:30])
    assert _refusal(tmp_path) == "corrupt"


@pytest.mark.parametrize("where", [-1, -200, 40], ids=["last-byte", "body", "header"])
def test_a_bit_flip_is_refused(tmp_path: Path, where: int) -> None:
    _written(tmp_path)
    part = _some_part(tmp_path)
    data = bytearray(part.read_bytes())
    data[where] ^= 0x10
    part.write_bytes(bytes(data))
    assert _refusal(tmp_path) == "corrupt"


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    _written(tmp_path)
    manifest = tmp_path / MANIFEST
    data = bytearray(manifest.read_bytes())
    struct.pack_into(">H", data, len(snap.MAGIC), snap.FORMAT_VERSION + 1)
    manifest.write_bytes(bytes(data))
    assert _refusal(tmp_path) == "format_version"


def test_another_sites_snapshot_is_refused(tmp_path: Path) -> None:
    _written(tmp_path)
    assert _refusal(tmp_path, site="retail") == "other_site"


def test_a_file_that_is_not_a_snapshot_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_bytes(pickle.dumps({"watermark": 1}))
    assert _refusal(tmp_path) == "corrupt"


def test_a_class_that_no_longer_exists_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(tmp_path, "farm", shards=2)
    store.write({"things": PerDevice({"dev-1": Gone()})}, watermark=1)
    monkeypatch.delattr(sys.modules[__name__], "Gone")
    assert _refusal(tmp_path) == "unknown_class"


def test_a_module_outside_the_allowed_ones_is_refused(tmp_path: Path) -> None:
    """A valid frame around a pickle naming os.system: never unpickled."""
    store = SnapshotStore(tmp_path, "farm", shards=1)
    store.write({"things": PerDevice({"dev-1": 1})}, watermark=1)
    part = next(tmp_path.glob("shard-*.part"))
    body = b"cos\nsystem\n(S'true'\ntR."  # protocol 0: os.system('true')
    part.write_bytes(snap._frame({"site": "farm", "shard": 0}, body))
    manifest = json.loads(snap._unframe((tmp_path / MANIFEST).read_bytes(), MANIFEST)[1])
    entry = manifest["shards"]["0"]
    entry.update(size=part.stat().st_size, digest=snap._digest(body))
    raw = json.dumps(manifest, sort_keys=True).encode()
    (tmp_path / MANIFEST).write_bytes(snap._frame({"site": "farm"}, raw))
    assert _refusal(tmp_path).startswith("unknown_class")


def test_changing_the_shard_count_forces_a_full_write(tmp_path: Path) -> None:
    learner, sums = fed()
    SnapshotStore(tmp_path, "farm", shards=4).write(parts_of(learner, sums), 1)
    stats = SnapshotStore(tmp_path, "farm", shards=8).write(parts_of(learner, sums), 2, dirty_devices=set())
    assert stats.parts_written == 1 + 8
    loaded = SnapshotStore(tmp_path, "farm", shards=8).load()
    assert loaded is not None and loaded.parts["sums"] == sums


def test_a_stage_skips_named_caches(tmp_path: Path) -> None:
    learner, sums = fed(3)
    store = SnapshotStore(tmp_path, "farm", shards=2)
    store.write({"learner": Stage(learner, skip=("seen",))}, 1)
    loaded = store.load()
    assert loaded is not None
    assert "seen" not in loaded.parts["learner"] and "callback" not in loaded.parts["learner"]  # type: ignore[operator]


# -- the node: a refused snapshot is logged once, counted, and the node starts cold ------------


def _node_settings(tmp_path: Path) -> Any:
    from pipeline.config import load_settings

    return load_settings(
        overrides={
            "edge.site": "retail-snap",
            "edge.state_dir": str(tmp_path),
            "edge.max_age_s": 1e10,
            "mqtt.url": "mqtt://127.0.0.1:1",  # never connected: the node is fed in-process
        }
    )


def _fed_node(tmp_path: Path) -> Any:
    from pipeline.edge.node import EdgeNode
    from pipeline.protocol import Reading, Topics, encode

    node = EdgeNode(_node_settings(tmp_path))
    node.recover()
    topics = Topics()
    for i in range(50):
        for d in range(4):
            reading = Reading(v=1, device=f"fridge-{d}", kind="fridge", ts=1_793_577_600_000 + i * 60_000, seq=i, metrics={"temp": 4.0 + (i % 3) / 10})
            node.handle(topics.reading("retail-snap", f"fridge-{d}"), encode(reading))
    node.write_snapshot()
    node.queue.close()
    return node


def test_the_node_restores_its_snapshot(tmp_path: Path) -> None:
    from pipeline.edge.node import EdgeNode

    before = _fed_node(tmp_path)
    node = EdgeNode(_node_settings(tmp_path))
    assert node.recover() == 0, "the snapshot's watermark is the journal's end: nothing to replay"
    health = node.health()
    assert health.gauges["snapshot_restored"] == 1.0 and health.gauges["snapshot_restore.restored"] == 1.0
    assert sorted(node.detectors) == sorted(before.detectors)
    assert node.alerts._series == before.alerts._series and node.alerts._series
    node.queue.close()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_the_node_refuses_a_damaged_snapshot_counts_it_and_starts_cold(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.edge.node import SNAPSHOT_DIR, EdgeNode

    _fed_node(tmp_path)
    part = sorted((tmp_path / "edge-retail-snap" / SNAPSHOT_DIR).glob("shard-*.part"))[0]
    data = bytearray(part.read_bytes())
    if damage == "truncate":
        del data[-7:]
    else:
        data[-3] ^= 0x01
    part.write_bytes(bytes(data))
    node = EdgeNode(_node_settings(tmp_path))
    with caplog.at_level("WARNING", logger="pipeline.edge.node"):
        node.recover()
    refusals = [r for r in caplog.records if r.getMessage().startswith("snapshot refused, starting cold")]
    assert len(refusals) == 1 and "reason=corrupt" in refusals[0].getMessage()
    health = node.health()
    assert health.counters["snapshots_refused.corrupt"] == 1
    assert health.gauges["snapshot_restored"] == 0.0 and health.gauges["snapshot_restore.corrupt"] == 1.0
    node.queue.close()


def test_a_reading_delivered_ahead_of_its_backlog_is_not_counted_twice_after_a_kill(tmp_path: Path) -> None:
    """The interleaving of the kill test's one reading counted twice, in-process, no timing.

    After a restart the broker resumed the node's session and delivered one live reading
    ahead of the queued backlog. The node accepted it, then the backlog (out of order, new),
    then newer live readings; a snapshot was written (its commit acknowledged them all) and
    the node was killed before the PUBACKs left. The restarted node restores the snapshot and
    the broker redelivers the reading: it must be a duplicate, its window counting it once.
    """
    from pipeline.edge.node import EdgeNode
    from pipeline.protocol import Reading, Topics, encode

    t0 = 1_793_577_600_000
    topic = Topics().reading("retail-snap", "fridge-1")

    def payload(ts: int) -> bytes:
        return encode(Reading(v=1, device="fridge-1", kind="fridge", ts=ts, seq=ts - t0, metrics={"temp": 4.0}))

    node = EdgeNode(_node_settings(tmp_path))
    node.recover()
    for i in range(5):
        node.handle(topic, payload(t0 + i * 20))
    jumped = payload(t0 + 3_000)  # the live reading, ahead of the backlog
    node.handle(topic, jumped)
    backlog = 25  # more than the validator remembers, all older than the live reading
    for i in range(5, 5 + backlog):
        node.handle(topic, payload(t0 + i * 20))
    node.handle(topic, payload(t0 + 3_020))  # live again
    node.write_snapshot()
    node.queue.close()  # the kill: the snapshot and the journal are durable, the PUBACKs are not

    node = EdgeNode(_node_settings(tmp_path))
    assert node.recover() == 0
    assert node.snapshot_health.restored
    node.handle(topic, jumped)  # redelivered by the broker
    assert node.counters.accepted == 0 and node.counters.duplicates == 1
    node.flush_windows(node.clock.now_ms(), everything=True)
    counts = {a.start: a.count for a in _outbox_aggregates(node)}
    assert counts[t0 + 3_000 - (t0 + 3_000) % 60_000] == 5 + backlog + 2
    node.queue.close()


def _outbox_aggregates(node: Any) -> list[Any]:
    from pipeline.edge.uplink import Priority
    from pipeline.protocol.agg_codec import decode_aggregate_message

    node.queue.commit()
    out = []
    for item in node.queue.next_batch(1000):
        if item.priority == Priority.AGGREGATE:
            out.extend(decode_aggregate_message(item.payload).aggregates)
    return out


def test_a_snapshot_of_other_learned_state_classes_is_refused_and_overwritten_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade that gave a stateful class a new slot: restoring would leave it unset."""
    _written(tmp_path)
    monkeypatch.setattr(snap, "state_schema", lambda: "another-release")
    assert _refusal(tmp_path) == "state_schema"
    learner, sums = fed()
    stats = SnapshotStore(tmp_path, "farm", shards=4).write(parts_of(learner, sums), watermark=6, dirty_devices=set())
    assert stats.parts_written > 1  # every shard again, not only the dirty ones
    assert SnapshotStore(tmp_path, "farm", shards=4).load() is not None


def test_the_state_schema_changes_when_a_stateful_class_gains_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.detect.stuck import StuckRun

    before = snap.state_schema()
    snap.state_schema.cache_clear()
    monkeypatch.setattr(StuckRun, "__slots__", (*StuckRun.__slots__, "_a_new_memory"))
    try:
        assert snap.state_schema() != before
    finally:
        snap.state_schema.cache_clear()
