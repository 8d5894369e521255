"""A device keeps the kind it was first accepted with; a reading naming another is refused."""

from __future__ import annotations

import msgspec
import pytest

from pipeline.edge.validate import Validator
from pipeline.errors import ProtocolError
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


# -- readings an ingest adapter made: the same rules without a topic or bytes to decode ----


def _verdicts(reading: Reading) -> tuple[str, str]:
    """(validate_one on its encoding, validate_adapted on the object), each on a fresh validator
    that has already accepted the device's first reading."""
    out = []
    for by_bytes in (True, False):
        v = Validator("farm")
        v.validate_one(
            TOPIC,
            msgspec.json.encode(Reading(1, DEVICE, "weather_station", NOW - 5000, 0, WEATHER)),
            NOW,
        )
        payload = msgspec.json.encode(reading)
        if by_bytes:
            verdict = v.validate_one(f"edgepipe/v1/farm/dev/{reading.device}", payload, NOW)
            out.append(verdict.reason if isinstance(verdict, DeadLetter) else "accepted")
        else:
            adapted = v.validate_adapted(reading, len(payload), NOW)
            out.append(adapted.reason.value if isinstance(adapted, ProtocolError) else "accepted")
    return out[0], out[1]


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (Reading(1, DEVICE, "weather_station", NOW - 1000, NOW - 1000, WEATHER), "accepted"),
        (Reading(1, DEVICE, "weather_station", NOW - 5000, NOW - 5000, WEATHER), "duplicate"),
        (Reading(1, DEVICE, "soil_probe", NOW - 1000, NOW - 1000, SOIL), "kind_changed"),
        (Reading(1, DEVICE, "weather_station", NOW - 1000, 0, {"air_temp": 900.0}), "out_of_range"),
        (Reading(1, DEVICE, "weather_station", NOW - 1000, 0, {"nope": 1.0}), "unknown_metric"),
        (Reading(1, DEVICE, "no_such_kind", NOW - 1000, 0, WEATHER), "unknown_kind"),
        (Reading(1, DEVICE, "weather_station", NOW + 3_600_000, 0, WEATHER), "future_ts"),
        (Reading(1, DEVICE, "weather_station", NOW - 30 * 86_400_000, 0, WEATHER), "stale_ts"),
        (
            Reading(
                1,
                "other-device",
                "weather_station",
                NOW - 1000,
                0,
                {f"m{i:03d}": 1.0 for i in range(120)},
            ),
            "too_large",
        ),
    ],
)
def test_an_adapted_reading_gets_the_verdict_its_encoding_would_get(
    reading: Reading, reason: str
) -> None:
    assert _verdicts(reading) == (reason, reason)
