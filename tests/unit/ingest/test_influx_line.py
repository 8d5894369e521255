"""InfluxDB line protocol as Telegraf's MQTT output writes it."""

from __future__ import annotations

import pytest
from ingestkit import ARRIVAL_MS, entry, fixture

from pipeline.ingest.fields import Refusal
from pipeline.ingest.influx_line import InfluxLineAdapter, parse_line
from pipeline.protocol.reasons import Reason


def test_a_batch_of_two_points_is_two_readings_with_escaped_ids_mapped() -> None:
    adapter = InfluxLineAdapter(entry("influx-line", ignore=["power"]), site="retail")
    out = adapter.decode_one("telegraf/shop-gw/fridge", fixture("telegraf_batch.lp"), ARRIVAL_MS)
    assert [r.device for r in out.readings][0] == "fridge-02"
    assert out.readings[1].device.startswith("fridge_back-")
    assert [r.metrics for r in out.readings] == [{"temp": 4.3, "door": 0.0}, {"temp": 5.1, "door": 1.0}]
    assert {r.ts for r in out.readings} == {1_709_633_742_000}
    assert {r.kind for r in out.readings} == {"fridge"}


def test_one_bad_line_is_refused_alone_with_its_own_bytes() -> None:
    adapter = InfluxLineAdapter(entry("influx-line", kind="fridge"), site="retail")
    payload = b"fridge,device=a temp=4.1\nfridge,device=b temp=\nfridge,device=c temp=4.2 17\n"
    out = adapter.decode_one("telegraf/x/fridge", payload, ARRIVAL_MS)
    assert [r.device for r in out.readings] == ["a", "c"]
    assert [(r.reason, r.raw) for r in out.refused] == [(Reason.BAD_LINE, b"fridge,device=b temp=")]
    assert out.readings[0].ts == ARRIVAL_MS  # no timestamp: arrival


def test_a_line_without_the_device_tag_is_missing_field() -> None:
    adapter = InfluxLineAdapter(entry("influx-line", kind="fridge"), site="retail")
    out = adapter.decode_one("telegraf/x/fridge", b"fridge temp=4.1", ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.MISSING_FIELD]


def test_a_string_metric_is_wrong_type_and_string_extras_are_fine() -> None:
    adapter = InfluxLineAdapter(entry("influx-line", kind="fridge", device_field="host"), site="retail")
    out = adapter.decode_one("t", b'fridge,host=h temp=4.1,note="a \\"b\\", c"', ARRIVAL_MS)
    assert out.readings[0].metrics == {"temp": 4.1} and out.extra_fields == 1
    out = adapter.decode_one("t", b'fridge,host=h temp="cold"', ARRIVAL_MS)
    assert [r.reason for r in out.refused] == [Reason.WRONG_TYPE]


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        ("m,t=1 a=1i", {"a": 1}),
        ("m,t=1 a=1u", {"a": 1}),
        ("m,t=1 a=-1.5e3", {"a": -1500.0}),
        ("m,t=1 a=T,b=false", {"a": True, "b": False}),
        ('m,t=1 a="x y=z,w"', {"a": "x y=z,w"}),
        ("m,t=1 a\\ b\\=c=2", {"a b=c": 2.0}),
    ],
)
def test_field_value_types_and_escapes(line: str, fields: dict[str, object]) -> None:
    assert parse_line(line).fields == fields


def test_escaped_measurement_and_tags() -> None:
    point = parse_line("my\\ meas\\,ure,tag\\ key=tag\\,value f=1 5")
    assert (point.measurement, point.tags, point.timestamp) == ("my meas,ure", {"tag key": "tag,value"}, 5)


@pytest.mark.parametrize("line", ["m", "m,t a=1", "m a=", "m a=1 b c", "m a=1 12x", 'm a="open', "m a=-1u", ",t=1 a=1"])
def test_malformed_lines_are_bad_line(line: str) -> None:
    with pytest.raises(Refusal) as info:
        parse_line(line)
    assert info.value.reason is Reason.BAD_LINE
