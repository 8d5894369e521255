"""A device keeps the kind it was first accepted with; a reading naming another is refused."""

from __future__ import annotations

import msgspec

from pipeline.edge.validate import Validator
from pipeline.protocol import DeadLetter, Reading

NOW = 1_800_000_000_000
DEVICE = "weather_station-0001"
TOPIC = f"edgepipe/v1/farm/dev/{DEVICE}"
WEATHER = {"air_temp": 12.0}
SOIL = {"moisture": 30.0}


def _send(v: Validator, ts: int, kind: str = "weather_station", metrics: dict[str, float] = WEATHER) -> str:
    payload = msgspec.json.encode(Reading(1, DEVICE, kind, ts, ts % 10_000, metrics))
    verdict = v.validate_one(TOPIC, payload, NOW)
    return verdict.reason if isinstance(verdict, DeadLetter) else "accepted"


def test_a_reading_naming_another_kind_is_refused_as_kind_changed() -> None:
    v = Validator("farm")
    assert _send(v, NOW - 2000) == "accepted"
    assert _send(v, NOW - 1000, "soil_probe", SOIL) == "kind_changed"
    assert v.kinds == {DEVICE: "weather_station"}


def test_a_refused_kind_change_leaves_the_devices_timestamps_alone() -> None:
    """Its ts is not remembered: the real reading with that ts is still new, not a duplicate."""
    v = Validator("farm")
    _send(v, NOW - 2000)
    assert _send(v, NOW - 1000, "soil_probe", SOIL) == "kind_changed"
    assert _send(v, NOW - 1000) == "accepted"
    assert _send(v, NOW - 1500) == "accepted"  # out of order, still within memory


def test_the_dead_letter_names_the_known_kind_and_the_claimed_one() -> None:
    v = Validator("farm")
    _send(v, NOW - 2000)
    payload = msgspec.json.encode(Reading(1, DEVICE, "soil_probe", NOW, 1, SOIL))
    letter = v.validate_one(TOPIC, payload, NOW)
    assert isinstance(letter, DeadLetter)
    assert "weather_station" in letter.detail and "soil_probe" in letter.detail


def test_known_kinds_seed_the_memory_across_a_restart() -> None:
    v = Validator("farm", known_kinds={DEVICE: "weather_station"})
    assert _send(v, NOW - 1000, "soil_probe", SOIL) == "kind_changed"
    assert _send(v, NOW - 500) == "accepted"


def test_a_device_seen_first_is_reported_once_with_its_kind() -> None:
    seen: list[tuple[str, str]] = []
    v = Validator("farm", on_new_device=lambda device, kind: seen.append((device, kind)))
    for ts in (NOW - 3000, NOW - 2000, NOW - 1000):
        _send(v, ts)
    _send(v, NOW - 500, "soil_probe", SOIL)
    assert seen == [(DEVICE, "weather_station")]


def test_a_journal_replay_rebuilds_the_kind_and_reports_it() -> None:
    seen: list[tuple[str, str]] = []
    v = Validator("farm", on_new_device=lambda device, kind: seen.append((device, kind)))
    v.remember(Reading(1, DEVICE, "weather_station", NOW - 5000, 1, WEATHER))
    assert seen == [(DEVICE, "weather_station")]
    assert _send(v, NOW - 1000, "soil_probe", SOIL) == "kind_changed"


def test_a_refused_reading_does_not_claim_a_kind_for_a_new_device() -> None:
    """A reading refused for another reason (here out of range) leaves the device unknown."""
    v = Validator("farm")
    assert _send(v, NOW - 1000, "soil_probe", {"moisture": 500.0}) == "out_of_range"
    assert _send(v, NOW - 900) == "accepted"
