"""Settings: strict, typed, loaded once; a bad value names its dotted key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings, sample_config, section_names, settings_as_toml
from pipeline.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgepipe.toml"
    path.write_text(text)
    return path


def test_defaults_load_without_a_file() -> None:
    settings = load_settings()
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"
    assert settings.store.url.startswith("sqlite:///")


def test_the_file_sets_values(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[edge]\nsite = "retail-2"\n'))
    assert settings.edge.site == "retail-2"


def test_the_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPIPE_EDGE__SITE", "city-9")
    assert load_settings(write(tmp_path, '[edge]\nsite = "retail-2"\n')).edge.site == "city-9"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPIPE_MQTT__URL", "mqtt://10.0.0.1:1883")
    settings = load_settings(overrides={"mqtt.url": "mqtt://127.0.0.1:1999"})
    assert settings.mqtt.url == "mqtt://127.0.0.1:1999"


def test_edgepipe_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPIPE_CONFIG", str(write(tmp_path, '[sim]\nseed = 42\n')))
    assert load_settings().sim.seed == 42


def test_an_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "[mqtt]\nkeep_alive = 30\n"))
    assert info.value.key == "mqtt.keep_alive"
    assert "unknown key" in str(info.value)


def test_an_unknown_section_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "[mqt]\nurl = 'mqtt://x:1'\n"))
    assert info.value.key == "mqt"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param('[mqtt]\nurl = "http://broker"\n', "mqtt.url", id="broker-scheme"),
        pytest.param("[mqtt]\nkeepalive = 1\n", "mqtt.keepalive", id="keepalive-too-small"),
        pytest.param('[mqtt]\nprotocol = "4"\n', "mqtt.protocol", id="protocol"),
        pytest.param('[store]\nurl = "postgres://x"\n', "store.url", id="store-scheme"),
        pytest.param('[edge]\nsite = "a/b"\n', "edge.site", id="site-with-slash"),
        pytest.param('[edge]\nsite = "cloud"\n', "edge.site", id="site-reserved"),
        pytest.param("[sim]\nqos = 2\n", "sim.qos", id="qos-2"),
        pytest.param('[sim]\nrate = "fast"\n', "sim.rate", id="rate-not-number"),
        pytest.param('[[ingest]]\nformat = "mqtt-sn"\n', "ingest.0.format", id="ingest-unknown-format"),
        pytest.param('[[ingest]]\nformat = "json"\ntopic = "a/#/b"\n', "ingest.0.topic", id="ingest-bad-topic"),
        pytest.param(
            '[[ingest]]\nformat = "ttn"\nkind = "fridge"\ntimestamp_field = "/t~x"\n',
            "ingest.0.timestamp_field",
            id="ingest-bad-pointer",
        ),
        pytest.param("[kinds.k.metrics.m]\nresolution = -1\nlow = 0\nhigh = 1\n", "kinds.k.metrics.m.resolution", id="kind-resolution"),
        pytest.param(
            '[detect.kinds.fridge]\ndetector = "river.anomaly.HalfSpaceTree"\n', "detect.kinds.fridge", id="river-class-missing"
        ),
        pytest.param(
            '[detect.kinds.fridge]\ndetector = "river.anomaly.HalfSpaceTrees"\nparams = { trees = 3 }\n',
            "detect.kinds.fridge",
            id="river-bad-param",
        ),
        pytest.param(
            '[detect.kinds.fridge]\ndetector = "river.preprocessing.StandardScaler"\n', "detect.kinds.fridge", id="not-a-detector"
        ),
        pytest.param('[detect.kinds.fridgee]\ndetector = "edge"\n', "detect.kinds", id="unknown-kind"),
        pytest.param('[detect.kinds."fridge.pwr"]\ndetector = "edge"\n', "detect.kinds", id="unknown-metric"),
        pytest.param('[detect]\nbuiltin_priors = "maybe"\n', "detect.builtin_priors", id="builtin-priors-not-bool"),
        pytest.param('[sim]\ninject = ["spike12:soil_probe-0001"]\n', "sim.inject", id="inject-form"),
    ],
)
def test_a_bad_value_names_the_key_and_the_value(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.key == key
    assert str(info.value).startswith(f"config error: {key} = ")


def test_a_kind_may_run_a_river_detector_and_a_metric_another(tmp_path: Path) -> None:
    text = (
        '[detect.kinds.fridge]\ndetector = "river.anomaly.HalfSpaceTrees"\nparams = { n_trees = 5 }\n'
        'preprocess = "river.preprocessing.StandardScaler"\n'
        '[detect.kinds."fridge.power"]\ndetector = "zscore"\n'
    )
    kinds = load_settings(write(tmp_path, text)).detect.kinds
    assert kinds["fridge"].params == {"n_trees": 5}
    assert kinds["fridge.power"].detector == "zscore"


def test_a_configured_kind_may_choose_its_detector(tmp_path: Path) -> None:
    text = (
        '[kinds.cold_room.metrics.temp]\nresolution = 0.1\nlow = -40.0\nhigh = 30.0\n'
        '[detect.kinds."cold_room.temp"]\ndetector = "river_hst"\n'
    )
    assert load_settings(write(tmp_path, text)).detect.kinds["cold_room.temp"].detector == "river_hst"


def test_a_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPIPE_MQTT__KEEPALIVE", "often")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == "mqtt.keepalive"


def test_a_file_that_is_not_toml_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "[mqtt\n"))
    assert info.value.key == "--config"


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml")


def test_the_sample_parses_to_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, sample_config())) == Settings()


def test_the_sample_lists_every_key() -> None:
    sample = tomllib.loads(sample_config())
    for section in section_names():
        model = Settings.model_fields[section].annotation
        assert model is not None
        documented = set(sample[section]) | _commented_keys(section)
        assert set(model.model_fields) == documented, section  # type: ignore[union-attr]


def _commented_keys(section: str) -> set[str]:
    keys, current = set(), ""
    for line in sample_config().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith("# ") and line.rstrip().endswith(" ="):
            keys.add(line[2:].split(" =")[0])
    return keys


def test_show_round_trips(tmp_path: Path) -> None:
    settings = load_settings(overrides={"edge.site": "farm-3"})
    assert load_settings(write(tmp_path, settings_as_toml(settings))) == settings


# -- strictness: nothing misspelled passes silently, and errors stay one short line ----------


def test_a_misspelled_environment_variable_is_an_error_naming_it_and_the_right_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEPIPE_EDGE_SITE", "retail")  # one underscore: names no setting
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == "EDGEPIPE_EDGE_SITE"
    assert "did you mean EDGEPIPE_EDGE__SITE?" in str(info.value)
    assert "retail" not in str(info.value)  # values of unknown variables may be secrets


@pytest.mark.parametrize(
    "name", ["EDGEPIPE_FOO", "EDGEPIPE_EDGE__SITEE", "EDGEPIPE_MQT__URL", "EDGEPIPE_EDGE__SITE__X"]
)
def test_an_environment_variable_that_names_no_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == name


def test_environment_names_of_settings_sections_tables_and_options_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEPIPE_CLOUD__MODEL_KEYS__FARM", "k1")  # one entry of a table
    monkeypatch.setenv("edgepipe_edge__site", "retail-3")  # read case-insensitively
    monkeypatch.setenv("EDGEPIPE_SIM", '{"seed": 7}')  # a whole section as JSON
    monkeypatch.setenv("EDGEPIPE_LOG_FORMAT", "json")  # a command-line option's variable
    settings = load_settings(other_env={"EDGEPIPE_LOG_FORMAT"})
    assert settings.cloud.model_keys == {"farm": "k1"}
    assert (settings.edge.site, settings.sim.seed) == ("retail-3", 7)


def test_a_misspelled_section_is_named_without_dumping_its_content(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, '[egde]\nsite = "farm"\nstate_dir = "/var/lib/x"\n'))
    assert str(info.value) == "config error: egde: unknown key"


def test_a_sqlite_url_with_two_slashes_is_refused_when_the_settings_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEPIPE_STORE__URL", "sqlite://x.db")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == "store.url"
    assert "three slashes" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "sites",
    [
        pytest.param(["orchard"], id="no-domain"),
        pytest.param(["farm/1"], id="not-an-id"),
        pytest.param(["farm", "farm"], id="twice"),
        pytest.param([], id="none"),
    ],
)
def test_simulated_sites_are_checked_when_the_settings_load(sites: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"sim.sites": sites})
    assert info.value.key == "sim.sites"
