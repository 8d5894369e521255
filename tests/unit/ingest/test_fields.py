"""Topic patterns, JSON pointers, id mapping and timestamps shared by the adapters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.fields import (
    _ISO,
    Refusal,
    TopicPattern,
    _ts_from_iso_match,
    check_path,
    compile_path,
    map_id,
    resolve,
    ts_from_iso,
    ts_from_value,
)
from pipeline.protocol.reasons import Reason


@pytest.mark.parametrize(
    ("pattern", "topic", "captured"),
    [
        pytest.param("a/{device}/b", "a/d1/b", {"device": "d1"}, id="placeholder"),
        pytest.param("a/+/b", "a/x/b", {}, id="plus"),
        pytest.param("a/#", "a/x/y/z", {"#": "x/y/z"}, id="hash-captures-the-rest"),
        pytest.param("a/{device}/b", "a/d1/c", None, id="literal-differs"),
        pytest.param("a/{device}", "a/d1/extra", None, id="too-many-levels"),
        pytest.param("a/{device}/b", "a/d1", None, id="too-few-levels"),
        pytest.param("#", "$SYS/broker/uptime", None, id="hash-skips-dollar-topics"),
    ],
)
def test_patterns_match_like_mqtt_filters_and_capture(pattern: str, topic: str, captured: dict[str, str] | None) -> None:
    assert TopicPattern.parse(pattern).match(topic) == captured


@pytest.mark.parametrize(
    "pattern",
    ["", "a/#/b", "a/x{device}", "a/{device}/{device}", "a/b+", "a/{nope}"],
)
def test_bad_patterns_are_refused_with_a_reason(pattern: str) -> None:
    with pytest.raises(ValueError):
        TopicPattern.parse(pattern)


def test_the_subscription_narrows_site_to_the_nodes_own() -> None:
    assert TopicPattern.parse("s/{site}/{device}/{kind}").subscription("farm") == "s/farm/+/+"


def test_pointers_follow_rfc_6901_escapes_and_array_indices() -> None:
    doc = {"a/b": {"m~n": [10, 20]}, "top": 1}
    assert resolve(doc, "/a~1b/m~0n/1") == 20
    assert resolve(doc, "top") == 1
    assert resolve(doc, "/a~1b/m~0n/7") is None
    assert resolve(doc, "/top/x") is None


@pytest.mark.parametrize("path", ["", "/a/~2", "/a~"])
def test_bad_pointers_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        check_path(path)


def test_valid_ids_are_kept_and_others_mapped_without_collisions() -> None:
    assert map_id("dev-1_A", strict=False) == "dev-1_A"
    a, b = map_id("a b", strict=False), map_id("a_b", strict=False)
    assert a != b and a.startswith("a_b-") and b == "a_b"
    assert map_id("x" * 200, strict=False) == map_id("x" * 200, strict=False)
    assert len(map_id("é" * 100, strict=False)) <= 64


@pytest.mark.parametrize("raw", ["a b", "", None, 1.5, True])
def test_strict_ids_or_non_strings_are_bad_id(raw: object) -> None:
    with pytest.raises(Refusal) as info:
        map_id(raw, strict=True)
    assert info.value.reason is Reason.BAD_ID


def test_integer_ids_become_strings() -> None:
    assert map_id(42, strict=True) == "42"


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-03-05T10:15:42Z", 1_709_633_742_000),
        ("2024-03-05T10:15:42.338766154Z", 1_709_633_742_338),
        ("2024-03-05T11:15:42.5+01:00", 1_709_633_742_500),
        ("2024-03-05 10:15:42", 1_709_633_742_000),
    ],
)
def test_iso_8601_times(text: str, ms: int) -> None:
    assert ts_from_iso(text) == ms


@pytest.mark.parametrize("value", ["yesterday", "2024-13-05T10:15:42Z", "0000-01-10T00:00:00Z", True, None, -1, 1e30, float("nan")])
def test_bad_times_are_bad_timestamp(value: object) -> None:
    with pytest.raises(Refusal) as info:
        ts_from_value(value, "ms")
    assert info.value.reason is Reason.BAD_TIMESTAMP


@pytest.mark.parametrize(("value", "unit"), [(1_709_633_742, "s"), (1_709_633_742_000, "ms"), (1_709_633_742_000_000_000, "ns")])
def test_numeric_times_in_each_unit(value: int, unit: str) -> None:
    assert ts_from_value(value, unit) == 1_709_633_742_000


# -- the fast paths agree with the step-by-step ones --------------------------------------

ISO_SHAPED = st.from_regex(
    r"\A[0-9]{4}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-6][0-9]:[0-6][0-9]"
    r"([.,][0-9]{1,12})?(Z|z|[+-][0-2][0-9]:?[0-6][0-9])?\Z",
)


def _field_by_field(text: str) -> int | Reason:
    m = _ISO.fullmatch(text.strip())
    assert m is not None
    try:
        return _ts_from_iso_match(text, m)
    except Refusal as r:
        return r.reason


def _fast(text: str) -> int | Reason:
    try:
        return ts_from_iso(text)
    except Refusal as r:
        return r.reason


@settings(max_examples=2000, deadline=None)
@given(text=ISO_SHAPED)
def test_iso_times_read_by_fromisoformat_equal_the_field_by_field_reading(text: str) -> None:
    """Leap seconds, lower-case z, offsets past 23:59, impossible dates: every shape the
    pattern admits gives the same ms (or the same refusal) on the fast path."""
    assert _fast(text) == _field_by_field(text)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2016-12-31T23:59:60Z", 1_483_228_800_000),  # a leap second: fromisoformat refuses it
        ("2024-03-05T10:15:42.338z", 1_709_633_742_338),
        ("1969-12-31T23:59:59.9995Z", -1),  # cut towards the past, as before 1970 too
        ("2024-03-05T10:15:42.9999999999Z", 1_709_633_742_999),  # cut, never rounded up
    ],
)
def test_iso_times_outside_fromisoformat_still_read(text: str, ms: int) -> None:
    assert ts_from_iso(text) == ms


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text("ab/~01", max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)
pointers = st.lists(st.text("ab/~01", max_size=3), min_size=1, max_size=3).map(
    lambda tokens: "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens)
)


@settings(max_examples=1000, deadline=None)
@given(doc=json_values, path=pointers | st.text("ab01", min_size=1, max_size=3))
def test_a_compiled_path_reads_what_resolve_reads(doc: object, path: str) -> None:
    assert compile_path(path)(doc) == resolve(doc, path)
