"""``[[links]]``: the built-in link by default, replaced by the file's, one dotted key when bad."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import (
    LINKS_EXAMPLE,
    Settings,
    links_of,
    load_settings,
    sample_config,
    settings_as_toml,
)
from pipeline.detect.detection import DEFAULT_LINKS, Link
from pipeline.errors import ConfigError

KINDS_V2 = """
[kinds.valve_v2.metrics.water_flow]
unit = "L/min"
resolution = 0.1
low = 0.0
high = 1000.0

[kinds.probe_v2.metrics.vwc]
unit = "%"
resolution = 0.1
low = 0.0
high = 100.0
"""
V2 = Link("waters", ("valve_v2", "water_flow"), ("probe_v2", "vwc"))


def link(source: str, target: str, relation: str = "waters") -> str:
    return f'[[links]]\nrelation = "{relation}"\nsource = "{source}"\ntarget = "{target}"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgepipe.toml"
    path.write_text(text)
    return path


def test_without_links_the_built_in_valves_water_the_built_in_probes() -> None:
    assert links_of(load_settings()) == list(DEFAULT_LINKS)
    assert DEFAULT_LINKS == (
        Link("waters", ("irrigation_valve", "flow"), ("soil_probe", "moisture")),
    )


def test_links_in_the_file_replace_the_built_in_one(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, link("valve_v2.water_flow", "probe_v2.vwc") + KINDS_V2)
    )
    assert links_of(settings) == [V2]


def test_an_empty_list_turns_cross_device_links_off(tmp_path: Path) -> None:
    assert links_of(load_settings(write(tmp_path, "links = []\n"))) == []


def test_several_links_are_kept_in_order(tmp_path: Path) -> None:
    text = (
        link("valve_v2.water_flow", "probe_v2.vwc")
        + link("irrigation_valve.flow", "probe_v2.vwc")
        + KINDS_V2
    )
    settings = load_settings(write(tmp_path, text))
    assert links_of(settings) == [
        V2,
        Link("waters", ("irrigation_valve", "flow"), ("probe_v2", "vwc")),
    ]


def test_the_documented_example_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, LINKS_EXAMPLE + KINDS_V2))
    assert links_of(settings) == [*DEFAULT_LINKS, V2]


def test_links_come_whole_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "EDGEPIPE_LINKS",
        json.dumps(
            [{"relation": "waters", "source": "valve_v2.water_flow", "target": "probe_v2.vwc"}]
        ),
    )
    assert links_of(load_settings(write(tmp_path, KINDS_V2))) == [V2]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(link("valve_v2.water_flow", "probe_v2.vwc") + KINDS_V2, id="configured"),
        pytest.param("links = []\n", id="none"),
        pytest.param("", id="default"),
    ],
)
def test_show_round_trips_links(tmp_path: Path, text: str) -> None:
    settings = load_settings(write(tmp_path, text))
    assert load_settings(write(tmp_path, settings_as_toml(settings))) == settings


def test_the_sample_lists_the_built_in_link(tmp_path: Path) -> None:
    assert "[[links]]" in sample_config()
    assert load_settings(write(tmp_path, sample_config())) == Settings()


BAD = [
    pytest.param(
        link("irrigation_valve.flow", "soil_probe.moisture", "floods"),
        "links.0.relation",
        id="unknown-relation",
    ),
    pytest.param(
        link("irrigation_valve", "soil_probe.moisture"),
        "links.0.source",
        id="source-not-kind-dot-metric",
    ),
    pytest.param(
        link("irrigation_valve.flow", "soil probe.moisture"), "links.0.target", id="target-bad-id"
    ),
    pytest.param(
        link("valve_v2.water_flow", "soil_probe.moisture"),
        "links.0.source",
        id="unknown-source-kind",
    ),
    pytest.param(
        link("irrigation_valve.flow", "soil_probe.vwc"), "links.0.target", id="metric-not-of-kind"
    ),
    pytest.param(
        link("soil_probe.soil_temp", "soil_probe.moisture"),
        "links.0.target",
        id="source-is-target-kind",
    ),
    pytest.param(
        link("irrigation_valve.flow", "soil_probe.moisture") * 2,
        "links.1",
        id="the-same-link-twice",
    ),
    pytest.param(
        '[[links]]\nrelation = "waters"\nsource = "irrigation_valve.flow"\n',
        "links.0.target",
        id="no-target",
    ),
    pytest.param(
        link("irrigation_valve.flow", "soil_probe.moisture") + "colour = 1\n",
        "links.0.colour",
        id="unknown-key",
    ),
    pytest.param(
        link("irrigation_valve.flow", "weather_station.humidity") + link("x.y", "a.b"),
        "links.1.source",
        id="second-entry",
    ),
]


@pytest.mark.parametrize(("text", "key"), BAD)
def test_a_bad_link_names_its_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.key == key, str(info.value)
    assert "\n" not in str(info.value)


def test_a_link_between_configured_kinds_is_checked_against_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, link("valve_v2.flow", "probe_v2.vwc") + KINDS_V2))
    assert info.value.key == "links.0.source"
    assert "its metrics: water_flow" in str(info.value)


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_check_accepts_a_link_of_configured_kinds(tmp_path: Path) -> None:
    result = _check(write(tmp_path, link("valve_v2.water_flow", "probe_v2.vwc") + KINDS_V2))
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "config ok", "")


def test_config_check_of_a_bad_link_exits_2_naming_its_key_in_one_line(tmp_path: Path) -> None:
    result = _check(write(tmp_path, link("valve_v2.water_flow", "soil_probe.moisture")))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "edgepipe: config error: links.0.source = 'valve_v2.water_flow': unknown kind"
    )


LINK_KEYS = ["relation", "source", "target", "x"]
link_values = st.sampled_from(
    ['"waters"', '"floods"', '"irrigation_valve.flow"', '"soil_probe.moisture"', '"valve_v2.water_flow"',
     '"probe_v2.vwc"', '"soil_probe"', '"a.b.c"', '"."', '""', "1", "[]", "{}", '"soil_probe.soil_temp"']
)  # fmt: skip
link_tables = st.lists(st.tuples(st.sampled_from(LINK_KEYS), link_values), max_size=4).map(
    lambda kv: "[[links]]\n" + "\n".join(f"{k} = {v}" for k, v in dict(kv).items())
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tables=st.lists(link_tables, max_size=3), kinds=st.booleans())
def test_any_links_table_is_settings_or_a_config_error(
    tmp_path: Path, tables: list[str], kinds: bool
) -> None:
    path = write(tmp_path, "\n\n".join(tables) + "\n" + (KINDS_V2 if kinds else ""))
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc.key).startswith("links")
    else:
        assert len(links_of(settings)) == (len(tables) or 1)
