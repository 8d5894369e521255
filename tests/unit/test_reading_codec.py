"""Decoding a device reading: every defect becomes one typed reason, never an exception."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import ProtocolError
from pipeline.protocol import Reading, ReadingLimits, Reason, decode_reading, encode

NOW = 1_800_000_000_000


def payload(**changes: object) -> bytes:
    body: dict[str, object] = {
        "v": 1,
        "device": "soil_probe-0001",
        "kind": "soil_probe",
        "ts": NOW,
        "seq": 7,
        "metrics": {"moisture": 31.2, "soil_temp": 14.0},
    }
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body).encode()


def reason_of(raw: bytes, device: str = "soil_probe-0001") -> Reason:
    with pytest.raises(ProtocolError) as info:
        decode_reading(raw, site="farm", device=device, now_ms=NOW)
    return info.value.reason


def test_a_valid_reading_decodes_to_its_fields() -> None:
    reading = decode_reading(payload(), site="farm", device="soil_probe-0001", now_ms=NOW)
    assert reading == Reading(
        v=1,
        device="soil_probe-0001",
        kind="soil_probe",
        ts=NOW,
        seq=7,
        metrics={"moisture": 31.2, "soil_temp": 14.0},
    )


def test_encode_then_decode_is_the_identity() -> None:
    reading = decode_reading(payload(), site="farm", device="soil_probe-0001", now_ms=NOW)
    again = decode_reading(encode(reading), site="farm", device="soil_probe-0001", now_ms=NOW)
    assert again == reading


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"", Reason.EMPTY, id="empty"),
        pytest.param(b"\xff\xfe{}", Reason.NOT_UTF8, id="not-utf8"),
        pytest.param(b"{oops", Reason.BAD_JSON, id="invalid-json"),
        pytest.param(b"[1, 2]", Reason.NOT_OBJECT, id="json-array"),
        pytest.param(b"[" * 20 + b"]" * 20, Reason.TOO_DEEP, id="deep-nesting"),
        pytest.param(payload(v=2), Reason.UNKNOWN_VERSION, id="unknown-version"),
        pytest.param(payload(ts=...), Reason.MISSING_FIELD, id="missing-ts"),
        pytest.param(payload(metrics={"moisture": "wet"}), Reason.WRONG_TYPE, id="string-value"),
        pytest.param(payload(seq=1.5), Reason.WRONG_TYPE, id="float-seq"),
        pytest.param(
            payload().replace(b"31.2", b"NaN"), Reason.NON_FINITE, id="nan-literal"
        ),
        pytest.param(
            payload().replace(b"31.2", b"1e999"), Reason.NON_FINITE, id="overflowing-number"
        ),
        pytest.param(payload(kind="toaster"), Reason.UNKNOWN_KIND, id="unknown-kind"),
        pytest.param(payload(metrics={"colour": 1.0}), Reason.UNKNOWN_METRIC, id="unknown-metric"),
        pytest.param(payload(metrics={"moisture": 140.0}), Reason.OUT_OF_RANGE, id="out-of-range"),
        pytest.param(payload(metrics={}), Reason.NO_METRICS, id="no-metrics"),
        pytest.param(payload(ts=NOW + 301_000), Reason.FUTURE_TS, id="future-ts"),
        pytest.param(payload(ts=NOW - 8 * 86_400_000), Reason.STALE_TS, id="stale-ts"),
        pytest.param(payload(device="soil_probe-0002"), Reason.TOPIC_MISMATCH, id="other-device"),
        pytest.param(payload(site="city"), Reason.TOPIC_MISMATCH, id="other-site"),
        pytest.param(payload(device="a b"), Reason.BAD_ID, id="id-with-space"),
        pytest.param(b"{" + b" " * 2000 + b"}", Reason.TOO_LARGE, id="oversized"),
    ],
)
def test_a_bad_payload_is_refused_with_its_reason(raw: bytes, reason: Reason) -> None:
    assert reason_of(raw) is reason


def test_size_limit_is_configurable() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reading(
            payload(), site="farm", device="soil_probe-0001", now_ms=NOW, limits=ReadingLimits(max_bytes=128)
        )
    assert info.value.reason is Reason.TOO_LARGE
