"""[[ingest]] entries and [kinds.NAME] tables: accepted when sound, one dotted key when not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import (
    INGEST_EXAMPLES,
    KINDS_EXAMPLE,
    catalog_of,
    load_settings,
    settings_as_toml,
)
from pipeline.errors import ConfigError
from pipeline.protocol.catalog import Catalog

EVERY_FORMAT = "\n".join(INGEST_EXAMPLES.values()) + KINDS_EXAMPLE


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgepipe.toml"
    path.write_text(text)
    return path


def test_the_documented_examples_load_together(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, EVERY_FORMAT))
    assert [e.format for e in settings.ingest] == list(INGEST_EXAMPLES)
    catalog = catalog_of(settings)
    assert catalog.metric("cold_room", "temp") is not None
    assert catalog.metric("fridge", "temp") is not None  # built-ins stay


def test_show_round_trips_ingest_and_kinds(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, EVERY_FORMAT))
    again = load_settings(write(tmp_path, settings_as_toml(settings)))
    assert again == settings


def test_a_configured_kind_replaces_the_built_in_of_its_name(tmp_path: Path) -> None:
    text = '[kinds.fridge]\ndomain = "retail"\n[kinds.fridge.metrics.temp]\nresolution = 0.5\nlow = -5\nhigh = 15\n'
    catalog = catalog_of(load_settings(write(tmp_path, text)))
    assert list(catalog.kinds["fridge"].metrics) == ["temp"]
    assert catalog.conflicts_with(Catalog.builtin()) == ["fridge"]


BAD = [
    pytest.param('[[ingest]]\nformat = "protobuf"\n', "ingest.0.format", id="unknown-format"),
    pytest.param('[[ingest]]\nformat = "json"\ntopic = "a/#/b"\nkind = "fridge"\n', "ingest.0.topic", id="hash-not-last"),
    pytest.param('[[ingest]]\nformat = "json"\ntopic = "a/x{device}"\nkind = "fridge"\n', "ingest.0.topic", id="partial-placeholder"),
    pytest.param('[[ingest]]\nformat = "ttn"\nkind = "fridge"\nmetrics = { temp = "/a/~2" }\n', "ingest.0.metrics", id="bad-pointer"),
    pytest.param('[[ingest]]\nformat = "ttn"\nkind = "fridge"\ndevice_field = "/x~"\n', "ingest.0.device_field", id="bad-device-pointer"),
    pytest.param('[[ingest]]\nformat = "ttn"\n', "ingest.0", id="no-kind"),
    pytest.param('[[ingest]]\nformat = "json"\nkind = "fridge"\n', "ingest.0", id="json-without-topic"),
    pytest.param('[[ingest]]\nformat = "ttn"\nkind = "toaster"\n', "ingest.0.kind", id="unknown-kind"),
    pytest.param('[[ingest]]\nformat = "ttn"\nkind = "fridge"\nmetrics = { volume = "v" }\n', "ingest.0.metrics", id="metric-not-of-kind"),
    pytest.param('[[ingest]]\nformat = "ttn"\nkind = "fridge"\nscale = { temp = 0 }\n', "ingest.0.scale", id="zero-scale"),
    pytest.param('[[ingest]]\nformat = "edgepipe"\nkind = "fridge"\n', "ingest.0", id="edgepipe-takes-no-keys"),
    pytest.param('[[ingest]]\nformat = "ttn"\nkind = "fridge"\ncolour = "red"\n', "ingest.0.colour", id="unknown-key"),
    pytest.param("[kinds.k.metrics.m]\nresolution = 0\nlow = 0\nhigh = 1\n", "kinds.k.metrics.m.resolution", id="resolution-zero"),
    pytest.param("[kinds.k.metrics.m]\nresolution = 1\nlow = 5\nhigh = 1\n", "kinds.k.metrics.m", id="low-above-high"),
    pytest.param("[kinds.k.metrics.m]\nresolution = 1\nlow = 0\n", "kinds.k.metrics.m.high", id="high-missing"),
    pytest.param('[kinds."a b".metrics.m]\nresolution = 1\nlow = 0\nhigh = 1\n', "kinds", id="bad-kind-id"),
    pytest.param('[kinds.k.metrics."m/x"]\nresolution = 1\nlow = 0\nhigh = 1\n', "kinds.k.metrics", id="bad-metric-id"),
    pytest.param("[kinds.k]\ndomain = 'farm'\n", "kinds.k.metrics", id="no-metrics"),
    pytest.param('[select]\ntolerances = { "cold_room.temp" = 0.2 }\n', "select.tolerances", id="tolerance-of-unknown-kind"),
]


@pytest.mark.parametrize(("text", "key"), BAD)
def test_a_bad_entry_names_its_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.key == key, str(info.value)
    assert "\n" not in str(info.value)


def test_a_tolerance_of_a_configured_kind_is_accepted(tmp_path: Path) -> None:
    text = KINDS_EXAMPLE + '\n[select]\ntolerances = { "cold_room.temp" = 0.2 }\n'
    assert load_settings(write(tmp_path, text)).select.tolerances == {"cold_room.temp": 0.2}


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_check_accepts_a_new_kind_and_one_entry_of_each_format(tmp_path: Path) -> None:
    result = _check(write(tmp_path, EVERY_FORMAT))
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "config ok", "")


def test_config_check_of_a_bad_entry_exits_2_in_one_line(tmp_path: Path) -> None:
    result = _check(write(tmp_path, '[[ingest]]\nformat = "zigbee"\nkind = "fridge"\n'))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("edgepipe: config error: ingest.0.format = 'zigbee': ")


# -- hostile files: whatever is in [[ingest]] or [kinds], a ConfigError or settings ------------


INGEST_KEYS = ["format", "topic", "kind", "kind_field", "device", "device_field", "timestamp_field",
               "timestamp_unit", "metrics", "scale", "ignore", "strict_ids", "max_bytes", "x"]  # fmt: skip
METRIC_KEYS = ["unit", "resolution", "low", "high", "tolerance", "x"]
scalars = (
    st.integers(-(2**70), 2**70).map(str)
    | st.floats().map(repr)
    | st.text(max_size=12).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')
    | st.sampled_from(
        ['"json"', '"ttn"', '"a/{device}/#"', '"/a/~1b"', '"fridge"', "{ temp = 2.0 }", '{ temp = "/t" }',
         '["battery"]', "true", "[]", "{}", "inf", "-inf", "nan", "0", "1e-320", '"ms"']
    )  # fmt: skip
)
ingest_tables = st.lists(st.tuples(st.sampled_from(INGEST_KEYS), scalars), max_size=5).map(
    lambda kv: "[[ingest]]\n" + "\n".join(f"{k} = {v}" for k, v in dict(kv).items())
)
kind_tables = st.tuples(
    st.sampled_from(["k", "fridge", "a-b", '"x y"']),
    st.sampled_from(["m", "temp", '"m/x"']),
    st.lists(st.tuples(st.sampled_from(METRIC_KEYS), scalars), max_size=5),
).map(lambda t: f"[kinds.{t[0]}.metrics.{t[1]}]\n" + "\n".join(f"{k} = {v}" for k, v in dict(t[2]).items()))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(docs=st.lists(ingest_tables | kind_tables, max_size=3))
def test_any_ingest_or_kind_table_is_settings_or_a_config_error(tmp_path: Path, docs: list[str]) -> None:
    path = write(tmp_path, "\n\n".join(docs) + "\n")
    try:
        load_settings(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
