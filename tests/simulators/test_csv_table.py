"""Reading a recorded CSV for ``sim --replay``: delimiter, timestamp column and format, label
column, the kind's metric columns, and one clear error naming file, row and column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.protocol.catalog import DeviceKind, Metric
from simulators.csv_table import CsvTable, parse_label, parse_timestamp

FRIDGE = DeviceKind(
    "fridge",
    "retail",
    {
        "temp": Metric("temp", "°C", 0.1, -40.0, 50.0),
        "door": Metric("door", "open", 1.0, 0.0, 1.0),
        "power": Metric("power", "W", 1.0, 0.0, 5000.0),
    },
)
T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows(path: Path, kind: DeviceKind | None = FRIDGE) -> list[tuple[int, dict[str, float], bool]]:
    return [(r.ts, r.metrics, r.labelled) for r in CsvTable.open(path, kind).rows()]


def error_of(path: Path, kind: DeviceKind | None = FRIDGE) -> str:
    with pytest.raises(ConfigError) as caught:
        CsvTable.open(path, kind).span()
    assert caught.value.key == "sim.replay"
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# -- delimiters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("timestamp,temp,door,power\n1700000000,4.5,0,120\n", id="comma"),
        pytest.param("timestamp;temp;door;power\n1700000000;4.5;0;120\n", id="semicolon"),
        pytest.param(
            "timestamp;temp;door;power\n1700000000;4,5;0;120\n", id="semicolon-decimal-comma"
        ),
        pytest.param(
            '"timestamp","temp","door","power"\n"1700000000","4.5","0","120"\n', id="quoted"
        ),
        pytest.param("\ufefftimestamp,temp,door,power\r\n1700000000,4.5,0,120\r\n", id="bom-crlf"),
        pytest.param("\n\ntimestamp,temp,door,power\n\n1700000000,4.5,0,120\n\n", id="blank-lines"),
    ],
)
def test_the_delimiter_is_comma_or_semicolon_whichever_the_file_uses(
    tmp_path: Path, text: str
) -> None:
    assert rows(write(tmp_path, text)) == [
        (T0_MS, {"temp": 4.5, "door": 0.0, "power": 120.0}, False)
    ]


def test_a_file_with_neither_delimiter_is_refused(tmp_path: Path) -> None:
    assert "neither comma nor semicolon" in error_of(
        write(tmp_path, "timestamp\ttemp\n1700000000\t4.5\n")
    )


# -- timestamps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "ms"),
    [
        pytest.param("1700000000", T0_MS, id="unix-s"),
        pytest.param("1700000000.25", T0_MS + 250, id="unix-s-fraction"),
        pytest.param("1700000000000", T0_MS, id="unix-ms"),
        pytest.param("1700000000000000", T0_MS, id="unix-us"),
        pytest.param("1700000000000000000", T0_MS, id="unix-ns"),
        pytest.param("2023-11-14T22:13:20Z", T0_MS, id="iso-z"),
        pytest.param("2023-11-14 22:13:20", T0_MS, id="iso-naive-is-utc"),
        pytest.param("2023-11-15T00:13:20.000+02:00", T0_MS, id="iso-offset"),
        pytest.param("2023-11-14T22:13:20.123456789Z", T0_MS + 123, id="iso-nanoseconds"),
        pytest.param("2023-11-14", T0_MS - (22 * 3600 + 13 * 60 + 20) * 1000, id="date-only"),
    ],
)
def test_timestamps_are_iso_8601_or_unix_numbers_whose_magnitude_gives_the_unit(
    cell: str, ms: int
) -> None:
    assert parse_timestamp(cell) == ms


@pytest.mark.parametrize("name", ["timestamp", "Time", "TS", "date", "DateTime"])
def test_the_timestamp_column_is_found_by_name_anywhere(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"temp,{name},door,power\n4.5,1700000000,0,120\n")
    assert rows(path)[0][0] == T0_MS


def test_without_a_named_timestamp_column_the_first_column_is_the_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path, "when,temp,door,power\n2023-11-14T22:13:20Z,4.5,0,120\n")
    assert rows(path)[0][0] == T0_MS


# -- labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["anomaly", "Anomaly", "LABEL", "label"])
def test_a_label_column_marks_rows_and_is_never_a_metric(tmp_path: Path, name: str) -> None:
    path = write(
        tmp_path, f"ts,temp,door,power,{name}\n1700000000,4.5,0,120,0\n1700000001,9.5,1,900,yes\n"
    )
    assert rows(path) == [
        (T0_MS, {"temp": 4.5, "door": 0.0, "power": 120.0}, False),
        (T0_MS + 1000, {"temp": 9.5, "door": 1.0, "power": 900.0}, True),
    ]


@pytest.mark.parametrize(
    ("cell", "labelled"),
    [("1", True), ("true", True), ("YES", True), ("anomaly", True), ("2", True), ("0", False), ("", False), ("False", False), ("normal", False), ("no", False)],
)  # fmt: skip
def test_label_values_are_truthy_or_falsy(cell: str, labelled: bool) -> None:
    assert parse_label(cell) is labelled


def test_a_label_that_is_neither_names_its_row_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path, "ts,temp,door,power,anomaly\n1700000000,4.5,0,120,0\n1700000001,4.5,0,120,maybe\n"
    )
    message = error_of(path)
    assert "row 3, column 'anomaly'" in message and "'maybe'" in message


# -- the kind's metrics ------------------------------------------------------------------------


def test_columns_in_any_order_map_to_the_kinds_metrics(tmp_path: Path) -> None:
    path = write(tmp_path, "power,door,ts,temp\n120,0,1700000000,4.5\n")
    assert rows(path) == [(T0_MS, {"power": 120.0, "door": 0.0, "temp": 4.5}, False)]


def test_missing_and_extra_columns_are_named(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "ts,temp,humidity\n1700000000,4.5,40\n"))
    assert "missing column(s) door, power" in message
    assert "humidity not metrics of the kind" in message


def test_without_a_kind_one_metric_column_is_the_value_of_kind_replay(tmp_path: Path) -> None:
    table = CsvTable.open(write(tmp_path, "time,speed\n1700000000,73\n"), None)
    assert table.kind.name == "replay"
    assert [(r.ts, r.metrics) for r in table.rows()] == [(T0_MS, {"value": 73.0})]


def test_without_a_kind_a_nab_file_without_header_still_replays(tmp_path: Path) -> None:
    path = write(tmp_path, "2023-11-14 22:13:20,73\n2023-11-14 22:18:20,62\n")
    assert rows(path, None) == [
        (T0_MS, {"value": 73.0}, False),
        (T0_MS + 300_000, {"value": 62.0}, False),
    ]


def test_without_a_kind_several_metric_columns_ask_for_one(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "ts,temp,door,power\n1700000000,4.5,0,120\n"), None)
    assert "3 metric columns (temp, door, power)" in message and "--kind" in message


# -- bad files: one line naming file, row and column --------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "empty file", id="empty"),
        pytest.param("1700000000,4.5,0,120\n", "row 1 is data, not a header", id="no-header"),
        pytest.param("ts,temp,door,power\n1700000000,4.5,0,120\nyesterday,4.5,0,120\n", "row 3, column 'ts': 'yesterday' is not a timestamp", id="bad-timestamp"),
        pytest.param("ts,temp,door,power\n1700000000,4.5,0,120\n1700000001,4.5,open,120\n", "row 3, column 'door': 'open' is not a finite number", id="non-numeric"),
        pytest.param("ts,temp,door,power\n1700000000,nan,0,120\n", "row 2, column 'temp': 'nan' is not a finite number", id="nan"),
        pytest.param("ts,temp,door,power\n1700000000,,0,120\n", "row 2, column 'temp': '' is not a finite number", id="empty-cell"),
        pytest.param("ts,temp,door,power\n1700000000,4.5,0,120\n1700000001,4.5,0\n", "row 3: 3 fields, the header has 4", id="short-row"),
        pytest.param("ts,temp,temp,power\n1700000000,4.5,0,120\n", "column 'temp' appears twice", id="duplicate-column"),
        pytest.param("ts,temp,door,power,label,anomaly\n1700000000,4.5,0,120,0,0\n", "two label columns", id="two-label-columns"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path, text))


# -- any well-formed file round-trips -----------------------------------------------------------

METRIC_NAMES = st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(
        lambda n: n not in ("timestamp", "time", "ts", "date", "datetime", "anomaly", "label")
    ),
    min_size=1,
    max_size=8,
    unique=True,
)
VALUES = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
TIMESTAMP_FORMATS = ["iso", "iso-naive", "s", "ms", "ns"]


def _format_ts(ms: int, fmt: str) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    if fmt == "iso":
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if fmt == "iso-naive":
        return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds")
    if fmt == "s":
        return f"{ms / 1000:.3f}"
    return str(ms if fmt == "ms" else ms * 1_000_000)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=METRIC_NAMES,
    data=st.data(),
    delimiter=st.sampled_from([",", ";"]),
    decimal_comma=st.booleans(),
    ts_format=st.sampled_from(TIMESTAMP_FORMATS),
    ts_column=st.integers(min_value=0, max_value=8),
    with_labels=st.booleans(),
)
def test_any_well_formed_csv_round_trips(
    tmp_path: Path,
    names: list[str],
    data: st.DataObject,
    delimiter: str,
    decimal_comma: bool,
    ts_format: str,
    ts_column: int,
    with_labels: bool,
) -> None:
    kind = DeviceKind("k", "any", {n: Metric(n, "u", 1e-6, -1e300, 1e300) for n in names})
    count = data.draw(st.integers(min_value=1, max_value=20))
    first_ms = data.draw(st.integers(min_value=100_000_000_000, max_value=4_000_000_000_000))
    stamps = [
        first_ms + i * data.draw(st.integers(min_value=1, max_value=3_600_000))
        for i in range(count)
    ]
    table = [[data.draw(VALUES) for _ in names] for _ in range(count)]
    labels = [data.draw(st.booleans()) for _ in range(count)]
    header = [*names, *(["anomaly"] if with_labels else [])]
    ts_column = min(ts_column, len(header))
    header.insert(ts_column, "timestamp")
    comma = delimiter == ";" and decimal_comma
    lines = [delimiter.join(header)]
    for ms, values, labelled in zip(stamps, table, labels, strict=True):
        cells = [repr(v).replace(".", ",") if comma else repr(v) for v in values]
        if with_labels:
            cells.append("1" if labelled else "0")
        cells.insert(ts_column, _format_ts(ms, ts_format))
        lines.append(delimiter.join(cells))
    path = tmp_path / "generated.csv"
    path.write_text("\n".join(lines) + "\n")

    read = list(CsvTable.open(path, kind).rows())

    assert [r.ts for r in read] == stamps
    assert [r.metrics for r in read] == [dict(zip(names, values, strict=True)) for values in table]
    assert [r.labelled for r in read] == (labels if with_labels else [False] * count)
