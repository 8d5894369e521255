"""What every mapped adapter shares: its memories of topics and ids stay bounded and never
change a result, and the paths it compiles read what the entry names."""

from __future__ import annotations

from ingestkit import ARRIVAL_MS, entry

from pipeline.ingest.base import MAX_REMEMBERED
from pipeline.ingest.custom_json import JsonAdapter
from pipeline.ingest.fields import map_id
from pipeline.protocol.reasons import Reason


def probes(**keys: object) -> JsonAdapter:
    base: dict[str, object] = {
        "topic": "s/{site}/{device}",
        "kind": "soil_probe",
        "timestamp_field": "/m/ts",
    }
    return JsonAdapter(entry("json", **{**base, **keys}), site="farm")


def test_more_topics_and_ids_than_remembered_still_map_each_message_alike() -> None:
    adapter = probes()
    payload = b'{"m": {"ts": %d}, "moisture": 31.5}' % ARRIVAL_MS
    for round_ in range(2):  # the second round finds some in memory, the rest anew
        for i in range(MAX_REMEMBERED + 10):
            device = f"p{i}" if i % 2 else f"p {i}"  # every other one needs mapping
            (reading,) = adapter.decode_one(f"s/farm/{device}", payload, ARRIVAL_MS).readings
            assert reading.device == map_id(device, strict=False), round_
            assert reading.metrics == {"moisture": 31.5}
    assert len(adapter._captures) <= MAX_REMEMBERED and len(adapter._ids) <= MAX_REMEMBERED


def test_a_remembered_topic_that_does_not_match_is_still_no_match() -> None:
    adapter = probes()
    assert adapter.captured("s/farm/a/extra") is None
    assert adapter.captured("s/farm/a/extra") is None
    assert adapter.captured("s/farm/a") == {"site": "farm", "device": "a"}


def test_a_refused_id_is_refused_every_time_not_remembered() -> None:
    adapter = probes(strict_ids=True)
    for _ in range(2):
        out = adapter.decode_one(
            "s/farm/a b", b'{"m": {"ts": %d}, "moisture": 1}' % ARRIVAL_MS, ARRIVAL_MS
        )
        assert [r.reason for r in out.refused] == [Reason.BAD_ID]
    assert adapter._ids == {}


def test_mapped_metrics_are_scaled_and_non_finite_results_refused() -> None:
    adapter = probes(metrics={"moisture": "/v/m"}, scale={"moisture": 1e308})
    ok = adapter.decode_one(
        "s/farm/a", b'{"m": {"ts": %d}, "v": {"m": 0.5}}' % ARRIVAL_MS, ARRIVAL_MS
    )
    assert ok.readings[0].metrics == {"moisture": 0.5e308}
    big = adapter.decode_one(
        "s/farm/a", b'{"m": {"ts": %d}, "v": {"m": 10}}' % ARRIVAL_MS, ARRIVAL_MS
    )
    assert [r.reason for r in big.refused] == [Reason.NON_FINITE]
