"""Malformed payloads: each kind is produced, counted, and refused by the validator for its reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from simstream import MONDAY, Stream, simulate

from pipeline.errors import ProtocolError
from pipeline.protocol.json_codec import ReadingLimits, decode_reading, encode
from pipeline.protocol.messages import Reading
from simulators import BAD_KINDS, EXPECTED_REASONS
from simulators.bad import malformed

DAY_MS = 86_400_000
LIMITS = ReadingLimits(future_skew_ms=DAY_MS, max_age_ms=DAY_MS)  # the run spans 6 hours

GOOD = {
    "v": 1,
    "device": "fridge-0001",
    "kind": "fridge",
    "ts": MONDAY,
    "seq": 7,
    "metrics": {"temp": 4.2, "door": 0.0, "power": 212.0},
}


@pytest.fixture(scope="module")
def faulty() -> Stream:
    return simulate(devices_per_site=10, rate=1 / 60, duration=6 * 3600, bad_rate=0.2)


def reasons_of_rejected(stream: Stream) -> Counter[str]:
    reasons: Counter[str] = Counter()
    for topic, payload in stream.publications:
        if "/dev/" not in topic:
            continue  # labels
        _, _, site, _, device = topic.split("/")
        try:
            decode_reading(payload, site=site, device=device, now_ms=MONDAY, limits=LIMITS)
        except ProtocolError as refused:
            reasons[refused.reason.value] += 1
    return reasons


@pytest.mark.parametrize("bad_kind", BAD_KINDS)
def test_each_malformed_payload_is_refused_for_its_reason(bad_kind: str) -> None:
    rng = np.random.Generator(np.random.PCG64(1))
    for _ in range(20):  # every variant of the kind
        payload = malformed(bad_kind, rng, GOOD, other_device="fridge-0002")
        with pytest.raises(ProtocolError) as refused:
            decode_reading(payload, site="retail", device="fridge-0001", now_ms=MONDAY)
        assert refused.value.reason == EXPECTED_REASONS[bad_kind]


def test_the_good_reading_used_above_is_accepted() -> None:
    payload = encode(Reading(**GOOD))  # type: ignore[arg-type]
    decode_reading(payload, site="retail", device="fridge-0001", now_ms=MONDAY)


def test_a_bad_rate_produces_every_kind(faulty: Stream) -> None:
    assert set(faulty.report.bad_by_kind) == set(BAD_KINDS)
    assert sum(faulty.report.bad_by_kind.values()) == faulty.report.bad_published


def test_the_validator_refuses_exactly_the_bad_payloads_counted(faulty: Stream) -> None:
    expected = Counter({EXPECTED_REASONS[k].value: n for k, n in faulty.report.bad_by_kind.items()})
    assert reasons_of_rejected(faulty) == expected


def test_bad_payloads_replace_that_fraction_of_readings(faulty: Stream) -> None:
    report = faulty.report
    share = report.bad_published / (report.bad_published + report.readings_published)
    assert share == pytest.approx(0.2, abs=0.03)


def test_bad_payloads_keep_the_out_file_one_publication_per_line(faulty: Stream) -> None:
    lines = faulty.out.splitlines()
    assert len(lines) == len(faulty.publications)
    assert all(line.isascii() and line.count("\t") == 1 for line in lines)


def test_no_bad_rate_means_no_bad_payloads(sim: Callable[..., Stream]) -> None:
    stream = sim(devices_per_site=10, rate=1 / 60, duration=3600)
    assert stream.report.bad_published == 0
    assert reasons_of_rejected(stream) == Counter()
