"""`edgepipe discover`'s inference: what it proposes for real samples of each format.

The samples are the adapters' fixtures (tests/fixtures/ingest), a few devices each, and the
simulator's own messages in every format; every proposal is checked the way a user would:
`config check` refuses it while a `todo` line is left, accepts it once they are gone, and the
real adapters turn the messages heard into readings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ingestkit import ARRIVAL_MS, fixture

from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.ingest.discover import (
    Discovery,
    Sample,
    discover,
    render,
    resolution_of,
    verify,
    widened,
    without_todos,
)
from pipeline.protocol import Topics, encode
from pipeline.protocol.messages import Reading
from simulators.formats import foreign_message


def _json_fixture(name: str) -> dict:
    return json.loads(fixture(name))


def _samples(messages: list[tuple[str, object]], step_ms: int = 1000) -> list[Sample]:
    out = []
    for i, (topic, payload) in enumerate(messages):
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        out.append(Sample(topic, raw, ARRIVAL_MS + i * step_ms))
    return out


def _accepted(tmp_path: Path, text: str) -> None:
    path = tmp_path / "proposal.toml"
    path.write_text(text)
    load_settings(path)


def _entry(found: Discovery) -> dict:
    assert len(found.entries) == 1, [e.keys for e in found.entries]
    return found.entries[0].keys


def _ttn_uplinks() -> list[Sample]:
    messages = []
    for i in range(12):
        up = _json_fixture("ttn_uplink.json")
        device = f"soil-probe-0{i % 3 + 1}"
        up["end_device_ids"]["device_id"] = device
        up["uplink_message"]["decoded_payload"] = {
            "soil_moisture": round(30 + i * 0.3, 1),
            "soil_temperature": round(12 + (i % 4) * 0.1, 1),
            "battery": round(3.6 - i * 0.01, 2),
        }
        messages.append((f"v3/orchard-sensors@ttn/devices/{device}/up", up))
    messages.append(("v3/orchard-sensors@ttn/devices/soil-probe-01/join", {"end_device_ids": {}}))
    return _samples(messages)


# -- each format, from its fixture -------------------------------------------------------------


def test_ttn_uplinks_become_one_entry_whose_kind_is_the_application() -> None:
    samples = _ttn_uplinks()
    found = discover(samples)
    assert _entry(found) == {
        "format": "ttn",
        "topic": "v3/orchard-sensors@ttn/devices/+/up",  # the one application heard
        "kind_field": "/end_device_ids/application_ids/application_id",
    }
    (kind,) = found.entries[0].kinds
    assert kind.name == "orchard-sensors" and kind.devices == [
        "soil-probe-01",
        "soil-probe-02",
        "soil-probe-03",
    ]
    assert set(kind.metrics) == {"soil_moisture", "soil_temperature", "battery"}
    moisture = kind.metrics["soil_moisture"]
    assert moisture.resolution == 0.3 and moisture.low <= 30.0 and moisture.high >= 33.3
    assert found.ignored == {"The Things Stack message that is not an uplink": 1}
    assert verify(render(found, "test"), samples).readings == 12


def test_chirpstack_events_take_their_kind_from_the_device_profile() -> None:
    messages = []
    for i in range(8):
        event = _json_fixture("chirpstack_up.json")
        eui = f"010101010101010{i % 2}"
        event["deviceInfo"]["devEui"] = eui
        event["object"] = {"pm25": 18.4 + i, "no2": 41.2 - i, "temperature": 9.5 + i / 2}
        messages.append((f"application/17c82e96/device/{eui}/event/up", event))
    messages.append(("application/17c82e96/device/0101010101010100/event/status", {"margin": 7}))
    samples = _samples(messages)
    found = discover(samples)
    assert _entry(found) == {
        "format": "chirpstack",
        "topic": "application/17c82e96/device/+/event/up",
        "kind_field": "/deviceInfo/deviceProfileName",
    }
    (kind,) = found.entries[0].kinds
    # air_quality is a built-in kind without temperature: the proposal replaces it, saying so
    assert (
        kind.name == "air_quality" and not kind.known and "no metric temperature" in kind.replaces
    )
    assert "replaces the catalogue's kind air_quality" in render(found, "test")
    assert verify(render(found, "test"), samples).readings == 8


def test_zigbee2mqtt_states_skip_the_bridge_availability_and_link_quality() -> None:
    state = _json_fixture("zigbee2mqtt_state.json")
    messages: list[tuple[str, object]] = [
        ("zigbee2mqtt/bridge/state", {"state": "online"}),
        ("zigbee2mqtt/shop/fridge 1/availability", {"state": "online"}),
    ]
    for i in range(6):
        name = ("fridge 1", "freezer 2")[i % 2]
        messages.append(
            (
                f"zigbee2mqtt/shop/{name}",
                {**state, "temperature": 4.3 + i / 10, "contact": i % 3 == 0},
            )
        )
    samples = _samples(messages)
    found = discover(samples)
    keys = _entry(found)
    assert keys["format"] == "zigbee2mqtt" and keys["topic"] == "zigbee2mqtt/shop/{device}"
    assert "linkquality" in keys["ignore"]
    (kind,) = found.entries[0].kinds
    assert "linkquality" not in kind.metrics and kind.metrics["contact"].boolean
    assert sum(found.ignored.values()) == 2
    assert verify(render(found, "test"), samples).readings == 6


def test_one_zigbee2mqtt_device_is_named_by_its_whole_friendly_name() -> None:
    samples = _samples(
        [("zigbee2mqtt/shop/fridge 1", {"temperature": 4.0 + i / 10}) for i in range(3)]
    )
    keys = _entry(discover(samples))
    assert keys["topic"] == "zigbee2mqtt/#" and keys["kind"] == "zigbee2mqtt"
    assert verify(render(discover(samples), "test"), samples).readings == 3


def test_line_protocol_kinds_are_the_measurements_and_known_ones_get_no_table() -> None:
    batch = fixture("telegraf_batch.lp")
    samples = _samples([("telegraf/shop-gw/fridge", batch)] * 3)
    found = discover(samples)
    assert _entry(found) == {"format": "influx-line", "topic": "telegraf/shop-gw/fridge"}
    (kind,) = found.entries[0].kinds
    assert kind.name == "fridge" and kind.known and len(kind.devices) == 2
    text = render(found, "test")
    assert "\n[kinds.fridge]\n" not in text and "known to the catalogue" in text
    assert "\n[kinds.fridge]\n" in render(found, "test", all_kinds=True)
    assert verify(text, samples).readings == 6


def test_line_protocol_timestamps_in_seconds_get_their_unit() -> None:
    lines = [f"fridge,device=f{i % 2} temp=4.{i} {ARRIVAL_MS // 1000 + i}" for i in range(6)]
    samples = _samples([("telegraf/shop/fridge", line.encode()) for line in lines])
    found = discover(samples)
    assert _entry(found)["timestamp_unit"] == "s"
    assert verify(render(found, "test"), samples).readings == 6


def test_a_vendors_own_json_gets_pointers_for_nested_metrics_and_its_timestamp() -> None:
    air = _json_fixture("custom_air.json")
    messages = []
    for i in range(6):
        box = f"aq-box-1{i % 3}"
        body = {
            **air,
            "id": box,
            "no2_ppb": 20.1 + i,
            "meta": {"time": f"2024-03-05T10:1{i}:42Z", "fw": "2.3.1"},
        }
        messages.append((f"sensors/city/{box}/state", body))
    samples = _samples(messages)
    found = discover(samples)
    keys = _entry(found)
    assert keys["topic"] == "sensors/city/{device}/state"
    assert keys["timestamp_field"] == "/meta/time" and "timestamp_unit" not in keys
    assert keys["metrics"] == {
        "no2_ppb": "no2_ppb",
        "pm_10": "/pm/10",
        "pm_2_5": "/pm/2_5",
        "rssi": "rssi",
    }
    assert keys["kind"] == "sensors_city_state" and keys["ignore"] == ["id"]
    assert verify(render(found, "test"), samples).readings == 6


# -- kinds, robustness, what is set aside ------------------------------------------------------


STEPS = {"temp": 0.1, "door": 0.0, "power": 1.0, "stock": 1.0}


def _sim(fmt: str, site: str = "retail-1", bad: int = 0) -> list[Sample]:
    """The simulator's messages for fridges, freezers (same metrics) and shelves, plus ``bad``
    native payloads on the same topics, as its --bad-rate sends them."""
    messages: list[tuple[str, object]] = []
    kinds = {
        "fridge": {"temp": 4.1, "door": 0.0, "power": 80.0},
        "freezer": {"temp": -18.2, "door": 0.0, "power": 120.0},
    }
    kinds["smart_shelf"] = {"stock": 40.0}
    for i in range(10):
        for kind, metrics in kinds.items():
            for n in (1, 2):
                values = {m: round(v + (i % 5) * STEPS[m], 1) for m, v in metrics.items()}
                r = Reading(
                    v=1,
                    device=f"{kind}-000{n}",
                    kind=kind,
                    ts=ARRIVAL_MS + i * 1000,
                    seq=i,
                    metrics=values,
                )
                if fmt == "edgepipe":
                    messages.append((Topics().reading(site, r.device), encode(r)))
                else:
                    messages.append(foreign_message(fmt, site, r))
    native = json.dumps(
        {
            "v": 1,
            "device": "fridge-0001",
            "kind": "toaster",
            "ts": 1,
            "seq": 0,
            "metrics": {"temp": 1},
        }
    )
    messages[: bad * 7 : 7] = [(t, native.encode()) for t, _ in messages[: bad * 7 : 7]]
    return _samples(messages, step_ms=10)


@pytest.mark.parametrize("fmt", ["json", "ttn", "chirpstack", "zigbee2mqtt", "influx-line"])
def test_kinds_with_the_same_metrics_stay_apart_when_the_messages_name_them(fmt: str) -> None:
    found = discover(_sim(fmt))
    assert [k.name for k in found.entries[0].kinds] == ["freezer", "fridge", "smart_shelf"]
    assert all(k.known for k in found.entries[0].kinds)


@pytest.mark.parametrize("fmt", ["json", "ttn", "chirpstack", "zigbee2mqtt", "influx-line"])
def test_a_few_malformed_payloads_change_nothing_but_are_counted(fmt: str) -> None:
    clean, noisy = discover(_sim(fmt)), discover(_sim(fmt, bad=8))
    assert _entry(noisy) == _entry(clean)
    assert [(k.name, sorted(k.metrics)) for k in noisy.entries[0].kinds] == [
        (k.name, sorted(k.metrics)) for k in clean.entries[0].kinds
    ]
    assert sum(noisy.unclassified.values()) >= 8


def test_a_line_without_the_device_tag_is_set_aside_not_a_device_of_its_own() -> None:
    # a device's malformed payload that happens to parse as line protocol
    samples = _sim("influx-line") + _samples(
        [("telegraf/retail-1/fridge", b"moisture=26.3 soil_temp=2.2")]
    )
    found = discover(samples)
    assert _entry(found) == _entry(discover(_sim("influx-line")))
    assert found.unclassified["no device id (device) in the message"] == 1


def test_messages_unlike_their_devices_are_counted_in_every_entry() -> None:
    messages: list[tuple[str, object]] = []
    for prefix in ("north", "south"):
        messages += [(f"{prefix}/p{i % 2}/state", {"t": 20.0 + i}) for i in range(6)]
        messages.append((f"{prefix}/p0/state", {"status": "rebooting", "uptime_s": 3}))
    found = discover(_samples(messages))
    assert len(found.entries) == 2
    assert found.unclassified["message unlike the rest of its device's"] == 2


def test_retained_messages_are_said_to_be_perhaps_old() -> None:
    samples = [
        Sample(f"zigbee2mqtt/room/{n}", b'{"temperature": 4.5}', ARRIVAL_MS, retained=True)
        for n in "ab"
    ]
    (entry,) = discover(samples).entries
    assert any("2 of the messages were retained" in note for note in entry.notes)


def test_devices_of_different_metrics_with_nothing_naming_them_share_one_kind() -> None:
    messages = [
        (f"home/{d}/state", {"t": 20.0 + i} if d.startswith("th") else {"lux": 10.0 * i})
        for i in range(5)
        for d in ("th1", "th2", "lx1")
    ]
    found = discover(_samples(messages))
    keys = _entry(found)
    assert keys["kind"] == "home_state" and keys["topic"] == "home/{device}/state"
    assert set(found.entries[0].kinds[0].metrics) == {"t", "lux"}
    assert any("2 different metric sets" in note for note in found.entries[0].notes)


def test_what_is_not_a_reading_is_counted_with_the_reason_never_proposed() -> None:
    samples = _samples(
        [
            ("edgepipe/v1/farm/alerts/p1", {"data": {}}),
            ("raw/bytes", b"\xff\xfe\x00\x01"),
            ("homie/p1/temperature", b"21.5"),
            ("notes/p1", {"text": "hello"}),
        ]
    )
    samples.append(
        Sample("sensors/p1/state", b'{"t": 1, "pad": "' + b"x" * 70_000 + b'"}', ARRIVAL_MS)
    )
    found = discover(samples)
    assert found.entries == []
    assert found.ignored == {"edgepipe's own traffic (alerts, health, batches)": 1}
    reasons = set(found.unclassified)
    assert {"JSON without a number in it"} <= reasons
    assert any(r.startswith("payload over 65536 bytes") for r in reasons)
    assert any(r.startswith("binary payload") for r in reasons) and any(
        r.startswith("a bare value") for r in reasons
    )


# -- the proposal as a settings file ------------------------------------------------------------


def test_config_check_refuses_the_proposal_only_for_its_todo_lines(tmp_path: Path) -> None:
    text = render(discover(_ttn_uplinks()), "test")
    with pytest.raises(ConfigError) as refused:
        _accepted(tmp_path, text)
    assert refused.value.key.endswith(".todo")
    _accepted(tmp_path, without_todos(text))


@pytest.mark.parametrize(
    "fmt", ["edgepipe", "json", "ttn", "chirpstack", "zigbee2mqtt", "influx-line"]
)
def test_every_simulated_format_gives_a_proposal_the_adapters_take_whole(
    tmp_path: Path, fmt: str
) -> None:
    samples = _sim(fmt)
    text = render(discover(samples), "test", all_kinds=True)
    _accepted(tmp_path, without_todos(text))
    check = verify(text, samples)
    assert check.readings == len(samples) and not check.refused


def test_resolution_is_the_grid_of_the_values_and_bounds_are_widened_around_what_was_seen() -> None:
    assert resolution_of([0.30000000000000004, 0.1, 0.2]) == 0.1
    assert resolution_of([1000.0, 3000.0, 5000.0]) == 2000.0
    assert resolution_of([0.0, 2.5, 7.0]) == 0.5  # 7.0 is off a 2.5 grid


def test_two_distinct_values_are_no_grid_the_decimals_decide() -> None:
    # two shelves holding still at 33 and 214 items: a step of 181 would quantise the counts
    assert resolution_of([33.0, 214.0, 33.0]) == 1.0
    assert resolution_of([4.5, 4.6]) == 0.1
    low, high = widened(-18.2, 4.5, 0.1)
    assert low < -18.2 and high > 4.5
    assert widened(3.0, 5.0, 1.0)[0] == 0.0  # nothing negative seen: the guess stays at 0


def test_a_ttn_application_level_that_names_the_kinds_is_not_taken_for_a_site() -> None:
    # v3/{application}@{tenant}/...: the applications are the kinds (kind_field), so the level
    # varies with the kind and writing {site} there would be wrong advice
    (entry,) = discover(_sim("ttn")).entries
    assert not any("varies" in note for note in entry.notes), entry.notes


def test_a_proposal_without_guesses_says_so_in_its_header() -> None:
    # the fleet's kinds are all built in: known kinds are commented, nothing is left to review
    text = render(discover(_sim("ttn")), "test")
    assert "todo = " not in text
    assert "# Nothing to review: no `todo` line" in text
    assert "every `todo = ...` line marks a guess" not in text
    guessed = render(discover(_sim("ttn")), "test", all_kinds=True)
    assert "every `todo = ...` line marks a guess" in guessed
