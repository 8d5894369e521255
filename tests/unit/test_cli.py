"""The edgepipe command: every role is there, helps with an example, and exits 0, 1 or 2."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

COMMANDS = ["sim", "edge", "cloud", "dashboard", "alerts", "detect", "bench", "demo", "config"]


def edgepipe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_help_lists_every_subcommand() -> None:
    result = edgepipe("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert f"  {command} " in result.stdout


@pytest.mark.parametrize(
    "command",
    [*(c for c in COMMANDS if c != "config"), "config show", "config check", "config sample"],
)
def test_every_subcommand_help_has_an_example(command: str) -> None:
    result = edgepipe(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert "Example: edgepipe " in result.stdout


def test_config_sample_prints_valid_toml() -> None:
    result = edgepipe("config", "sample")
    assert result.returncode == 0
    assert "mqtt" in tomllib.loads(result.stdout)


def test_config_check_with_an_unknown_key_exits_2_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[edge]\nsitee = 'farm'\n")
    result = edgepipe("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == "edgepipe: config error: edge.sitee = 'farm': unknown key"


def test_config_check_of_a_good_file_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text("[edge]\nsite = 'farm-2'\n")
    result = edgepipe("config", "check", "--config", str(config))
    assert (result.returncode, result.stdout.strip()) == (0, "config ok")


def test_a_bad_broker_url_exits_2_without_a_traceback() -> None:
    result = edgepipe("edge", "--site", "farm", "--broker", "http://127.0.0.1:1883")
    assert result.returncode == 2
    assert "mqtt.url" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_environment_value_exits_2() -> None:
    import os

    env = {**os.environ, "EDGEPIPE_EDGE__SITE": "no/slashes"}
    result = edgepipe("config", "show", env=env)
    assert result.returncode == 2
    assert "edge.site" in result.stderr


def test_an_unknown_option_is_a_usage_error() -> None:
    assert edgepipe("sim", "--no-such-flag").returncode == 2


def test_config_show_reflects_the_environment() -> None:
    import os

    env = {**os.environ, "EDGEPIPE_EDGE__SITE": "retail-7"}
    result = edgepipe("config", "show", env=env)
    assert result.returncode == 0
    assert tomllib.loads(result.stdout)["edge"]["site"] == "retail-7"
