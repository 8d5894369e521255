"""The edge node's receive path with [[ingest]] entries (no broker: ``handle`` is called directly).

The integration test (tests/integration/test_edge_ingest.py) runs the same formats over a real
Mosquitto; here each accounting rule is checked on its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from ingestkit import fixture

from pipeline.config import catalog_of, load_settings
from pipeline.edge.node import EdgeNode
from pipeline.protocol import encode
from pipeline.protocol.messages import Reading

ENTRIES = [
    {"format": "edgepipe"},
    {"format": "zigbee2mqtt", "kind": "fridge", "metrics": {"temp": "temperature", "door": "contact"}},
    {"format": "influx-line", "kind": "fridge", "ignore": ["power"]},
    {"format": "ttn", "kind": "fridge", "metrics": {"temp": "t"}},
]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[EdgeNode]:
    settings = load_settings(
        overrides={"edge.site": "retail", "edge.state_dir": str(tmp_path), "edge.detect": False}
    )
    settings = settings.model_copy(update={"ingest": settings.model_validate({"ingest": ENTRIES}).ingest})
    edge = EdgeNode(settings)
    yield edge
    edge.queue.close()


def _now_ns() -> int:
    return time.time_ns()


def test_foreign_readings_are_validated_journaled_and_counted_by_format(node: EdgeNode) -> None:
    node.handle("zigbee2mqtt/fridge-1", fixture("zigbee2mqtt_state.json"))
    node.handle("telegraf/gw/fridge", b"fridge,device=fridge-2 temp=4.1,door=1i %d" % _now_ns())
    c = node.counters
    assert (c.received, c.accepted, c.dead_lettered) == (2, 2, 0)
    assert dict(c.ingest_readings) == {"zigbee2mqtt": 1, "influx-line": 1}
    assert set(node.validator.kinds) == {"fridge-1", "fridge-2"}
    node.queue.commit()
    journaled = [msgspec.json.decode(payload, type=Reading) for _, _, payload in node.queue.journal_since(0)]
    assert [(r.device, r.kind) for r in journaled] == [("fridge-1", "fridge"), ("fridge-2", "fridge")]
    assert c.ingest_extra_fields == 5  # z2m: battery, humidity, linkquality, voltage, device_temperature


def test_adapted_readings_are_validated_like_native_ones(node: EdgeNode) -> None:
    node.handle("telegraf/gw/fridge", b"fridge,device=f temp=400 %d" % _now_ns())  # > 50 °C
    assert dict(node.counters.dead_letters) == {"out_of_range": 1}
    assert node.counters.accepted == 0


def test_ignored_messages_are_dropped_by_reason_and_keep_the_accounting(node: EdgeNode) -> None:
    node.handle("zigbee2mqtt/bridge/state", b'{"state":"online"}')
    node.handle("zigbee2mqtt/fridge-1", fixture("zigbee2mqtt_state.json"), retained=True)
    c = node.counters
    assert dict(c.dropped) == {"ingest_bridge": 1, "ingest_retained": 1}
    assert c.unaccounted == 0 and c.received == 2


def test_each_bad_line_is_its_own_dead_letter_and_the_good_ones_go_on(node: EdgeNode) -> None:
    ns = _now_ns()
    node.handle("telegraf/gw/fridge", b"fridge,device=a temp=4 %d\nfridge,device=b temp=oops\nfridge,device=c temp=5 %d" % (ns, ns))
    c = node.counters
    assert (c.received, c.accepted, dict(c.dead_letters)) == (3, 2, {"bad_line": 1})
    assert c.unaccounted == 0


def test_a_redelivered_uplink_is_a_duplicate(node: EdgeNode) -> None:
    body = b'{"end_device_ids":{"device_id":"f1"},"received_at":"%s","uplink_message":{"decoded_payload":{"t":4.0}}}'
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
    node.handle("v3/app@ttn/devices/f1/up", body % stamp)
    node.handle("v3/app@ttn/devices/f1/up", body % stamp)
    assert (node.counters.accepted, node.counters.duplicates) == (1, 1)


def test_native_readings_keep_their_path(node: EdgeNode) -> None:
    reading = Reading(v=1, device="f9", kind="fridge", ts=int(time.time() * 1000), seq=1, metrics={"temp": 3.0})
    node.handle("edgepipe/v1/retail/dev/f9", encode(reading))
    assert node.counters.accepted == 1 and not node.counters.ingest_readings


def test_a_subscribed_topic_no_entry_maps_is_dead_lettered(node: EdgeNode) -> None:
    node.handle("somewhere/else", b"{}")
    assert dict(node.counters.dead_letters) == {"no_ingest_route": 1}


def test_health_reports_ingest_counters(node: EdgeNode) -> None:
    node.handle("zigbee2mqtt/fridge-1", fixture("zigbee2mqtt_state.json"))
    counters = node.health().counters
    assert counters["ingest_readings.zigbee2mqtt"] == 1
    assert counters["ingest_extra_fields"] == 5
    assert counters["unaccounted"] == 0


def test_a_configured_kind_is_quantised_with_its_own_resolution(tmp_path: Path) -> None:
    """The delta codec's error bound follows the catalogue: a coarse configured step is used."""
    from pipeline.protocol import decode_batch
    from pipeline.protocol.batch_codec import codec_for

    settings = load_settings(overrides={"edge.site": "retail", "edge.state_dir": str(tmp_path)})
    settings = settings.model_validate(
        {**settings.model_dump(), "kinds": {"vat": {"metrics": {"level": {"resolution": 0.5, "low": 0, "high": 100}}}}}
    )
    catalog = catalog_of(settings)
    reading = Reading(v=1, device="v1", kind="vat", ts=1, seq=1, metrics={"level": 10.26})
    from pipeline.protocol import Batch, encode_batch

    frame = encode_batch(Batch(1, "retail", 1, [reading]), codec_for("delta-zstd", catalog.resolutions))
    (decoded,) = decode_batch(frame).readings
    assert decoded.metrics["level"] == 10.5  # quantised to 0.5, within half a step
    raw = encode_batch(Batch(1, "retail", 1, [reading]), codec_for("delta-zstd"))
    assert decode_batch(raw).readings[0].metrics["level"] == 10.26  # unknown to the built-ins: raw


def test_a_line_refused_at_validation_is_dead_lettered_with_its_own_hash(node: EdgeNode) -> None:
    import hashlib

    from pipeline.protocol import DeadLetter

    letters: list[DeadLetter] = []
    refuse = node.refuse

    def seen(letter: DeadLetter) -> None:  # what the node publishes, still counted by the node
        letters.append(letter)
        refuse(letter)

    node.refuse = seen  # type: ignore[method-assign]
    hot = b"fridge,device=f2 temp=400 %d" % _now_ns()
    node.handle("telegraf/gw/fridge", b"fridge,device=f1 temp=4 %d\n" % _now_ns() + hot)
    (letter,) = letters
    assert (letter.reason, letter.sha256) == ("out_of_range", hashlib.sha256(hot).hexdigest())
    assert (node.counters.accepted, dict(node.counters.dead_letters)) == (1, {"out_of_range": 1})


def test_a_fixed_device_id_outside_the_id_rules_is_bad_id(tmp_path: Path) -> None:
    """The entry's ``device`` is taken as configured (influx-line): the node names the id as
    what is wrong, not a reading topic it built for it (``bad_topic`` until issue 17's speed-up)."""
    settings = load_settings(overrides={"edge.site": "farm", "edge.state_dir": str(tmp_path), "edge.detect": False})
    entry = {"format": "influx-line", "device": "a b", "kind": "soil_probe"}
    settings = settings.model_copy(update={"ingest": settings.model_validate({"ingest": [entry]}).ingest})
    edge = EdgeNode(settings)
    try:
        edge.handle("telegraf/gw/cpu", b"soil_probe moisture=30.0 %d" % _now_ns())
        assert (edge.counters.accepted, dict(edge.counters.dead_letters)) == (0, {"bad_id": 1})
    finally:
        edge.queue.close()
