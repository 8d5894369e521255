"""The edgepipe command: every role is there, helps with an example, and exits 0, 1 or 2."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

COMMANDS = ["sim", "edge", "cloud", "analyst", "dashboard", "alerts", "deadletters", "detect", "bench", "demo", "config", "priors", "discover"]


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
    [*(c for c in COMMANDS if c != "config"), "config show", "config check", "config sample", "priors learn"],
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


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param('[[ingest]]\nformat = "zigbee"\n', "ingest.0.format", id="unknown-format"),
        pytest.param('[[ingest]]\nformat = "json"\ntopic = "x/{dev}"\nkind = "fridge"\n', "ingest.0.topic", id="bad-placeholder"),
        pytest.param('[[ingest]]\nformat = "ttn"\nkind = "fridge"\nmetrics = { temp = "/a/~" }\n', "ingest.0.metrics", id="bad-pointer"),
        pytest.param("[kinds.k.metrics.m]\nresolution = 1\nlow = 2\nhigh = 1\n", "kinds.k.metrics.m", id="low-above-high"),
    ],
)
def test_config_check_of_a_bad_ingest_or_kind_exits_2_in_one_line_naming_it(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = edgepipe("config", "check", "--config", str(config))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"edgepipe: config error: {key} = ")
    assert "Traceback" not in result.stderr


def test_a_bad_broker_url_exits_2_naming_the_flag_without_a_traceback() -> None:
    result = edgepipe("edge", "--site", "farm", "--broker", "http://127.0.0.1:1883")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "'--broker'" in result.stderr
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


# -- hostile flags: every command, exit 2 and one line naming the flag ---------------------

# (flag named in the error, command line). Commands that would connect get a broker where
# nothing listens (see `unreachable_broker`): a check that came after connecting would end
# in exit 1 after the connect time-out, not exit 2.
HOSTILE = [
    ("--broker", ["sim", "--broker", "http://x"]),
    ("--broker", ["sim", "--broker", "mqtt://host:99999"]),
    ("--broker", ["sim", "--broker", "mqtt://"]),
    ("--sites", ["sim", "--sites", "orchard"]),
    ("--sites", ["sim", "--sites", "farm/1"]),
    ("--sites", ["sim", "--sites", "farm,#"]),
    ("--sites", ["sim", "--sites", "+"]),
    ("--inject", ["sim", "--inject", "spike@99:soil_probe-0001", "--duration", "5"]),
    ("--inject", ["sim", "--inject", "door_open@1:fridge-0001", "--duration", "5"]),
    ("--inject", ["sim", "--inject", "spike", "--duration", "5"]),
    ("--sites", ["sim", "--sites", "farm x"]),
    ("--sites", ["sim", "--sites", ""]),
    ("--sites", ["sim", "--sites", "farm,farm"]),
    ("--devices-per-site", ["sim", "--devices-per-site", "0"]),
    ("--devices-per-site", ["sim", "--devices-per-site", "99999999999"]),
    ("--rate", ["sim", "--rate", "-1"]),
    ("--rate", ["sim", "--rate", "1e9"]),
    ("--rate", ["sim", "--rate", "nan"]),
    ("--duration", ["sim", "--duration", "0"]),
    ("--duration", ["sim", "--duration", "1e12"]),
    ("--duration", ["sim", "--duration", "inf"]),
    ("--speed", ["sim", "--speed", "-1"]),
    ("--speed", ["sim", "--speed", "1e300"]),
    ("--seed", ["sim", "--seed", "-1"]),
    ("--qos", ["sim", "--qos", "2"]),
    ("--bad-rate", ["sim", "--bad-rate", "1.5"]),
    ("--start", ["sim", "--start", "-1"]),
    ("--start", ["sim", "--start", "99999999999999999"]),
    ("--replay", ["sim", "--replay", "/no/such.csv"]),
    ("--replay", ["sim", "--replay", "{not_csv}"]),
    ("--replay", ["sim", "--replay", "{binary}"]),
    ("--site", ["sim", "--replay", "{csv}", "--site", "a/b"]),
    ("--device", ["sim", "--replay", "{csv}", "--device", "x#"]),
    ("--kind", ["sim", "--replay", "{csv}", "--kind", "no_such_kind"]),
    ("--kind", ["sim", "--kind", "fridge"]),
    ("--format", ["sim", "--replay", "{csv}", "--format", "ttn"]),
    ("--replay", ["sim", "--replay", "{csv}", "--kind", "fridge"]),
    ("--replay", ["sim", "--replay", "{fridge_csv}", "--kind", "fridge"]),
    ("--replay", ["sim", "--replay", "{fridge_csv}"]),
    ("--replay", ["sim", "--replay", "{header_only_csv}"]),
    ("--sites", ["sim", "--replay", "{csv}", "--sites", "farm"]),
    ("--devices-per-site", ["sim", "--replay", "{csv}", "--devices-per-site", "3"]),
    ("--bad-rate", ["sim", "--replay", "{csv}", "--bad-rate", "0.1"]),
    ("--inject", ["sim", "--replay", "{csv}", "--inject", "spike@1:replay-1"]),
    ("--duration", ["sim", "--replay", "{csv}", "--duration", "5"]),
    ("--site", ["sim", "--site", "farm", "--duration", "5"]),
    ("--device", ["sim", "--device", "pump-1", "--duration", "5"]),
    ("--out", ["sim", "--out", "/no/such/dir/out.txt"]),
    ("--labels-out", ["sim", "--labels-out", "/no/such/dir/labels.jsonl"]),
    ("--config", ["sim", "--config", "/no/such.toml"]),
    ("--config", ["config", "check", "--config", "{not_csv}"]),
    ("--config", ["config", "show", "--config", "/no/such.toml"]),
    ("--site", ["edge", "--site", "farm/1"]),
    ("--site", ["edge", "--site", "#"]),
    ("--site", ["edge", "--site", "+"]),
    ("--site", ["edge", "--site", "a b"]),
    ("--site", ["edge", "--site", ""]),
    ("--site", ["edge", "--site", "cloud"]),
    ("--broker", ["edge", "--broker", "mqtt://host:99999"]),
    ("--store", ["cloud", "--store", "sqlite://x.db"]),
    ("--store", ["cloud", "--store", "foo://"]),
    ("--store", ["cloud", "--store", ""]),
    ("--store", ["cloud", "--store", "influxdb://host:99999/db"]),
    ("--broker", ["cloud", "--broker", "http://x"]),
    ("--site", ["alerts", "--site", "farm/#"]),
    ("--site", ["alerts", "--site", "#"]),
    ("--site", ["alerts", "--site", ""]),
    ("--site", ["alerts", "--site", "a b"]),
    ("--count", ["alerts", "--count", "0"]),
    ("--count", ["alerts", "--count", "-5"]),
    ("--timeout", ["alerts", "--timeout", "-1"]),
    ("--timeout", ["alerts", "--timeout", "nan"]),
    ("--severity", ["alerts", "--severity", "loud"]),
    ("--source", ["alerts", "--source", "analyst"]),
    ("--site", ["deadletters", "--site", "farm/#"]),
    ("--reason", ["deadletters", "--reason", "no_such_reason"]),
    ("--count", ["deadletters", "--count", "0"]),
    ("--timeout", ["deadletters", "--timeout", "nan"]),
    ("--log-format", ["edge", "--log-format", "xml"]),
    ("--log-format", ["cloud", "--log-format", "yaml"]),
    ("--shard", ["analyst", "--shard", "2/2"]),
    ("--shard", ["analyst", "--shard", "1"]),
    ("--shard", ["analyst", "--shard", "-1/2"]),
    ("--shard", ["analyst", "--shard", "0/0"]),
    ("--shard", ["analyst", "--shard", ""]),
    ("--client-id", ["analyst", "--client-id", "a/b"]),
    ("--store", ["analyst", "--store", "foo://"]),
    ("--broker", ["analyst", "--broker", "http://x"]),
    ("--log-format", ["analyst", "--log-format", "yaml"]),
    ("--broker", ["alerts", "--broker", "mqtt://host:99999"]),
    ("--store", ["dashboard", "--store", "sqlite://x.db"]),
    ("--store", ["dashboard", "--store", "foo://"]),
    ("--port", ["dashboard", "--port", "0"]),
    ("--port", ["dashboard", "--port", "70000"]),
    ("--site", ["demo", "--site", "farm/1"]),
    ("--site", ["demo", "--site", "orchard"]),
    ("--site", ["demo", "--site", ""]),
    ("--store", ["demo", "--store", "sqlite://x.db"]),
    ("--broker", ["demo", "--broker", "http://x"]),
    ("--duration", ["demo", "--duration", "0"]),
    ("--duration", ["demo", "--duration", "1e9"]),
    ("--devices", ["demo", "--devices", "0"]),
    ("--csv", ["detect", "--csv", "/no/such.csv", "--out", "x.csv"]),
    ("--nab-dir", ["detect", "--nab-dir", "/no/such", "--out", "x"]),
    ("--out", ["detect", "--csv", "{csv}", "--out", "{tmp}"]),
    ("--nab-dir", ["bench", "--nab-dir", "/no/such"]),
    ("--json", ["bench", "--json", "/no/such/dir/bench.json"]),
    ("--out", ["priors", "learn", "--out", "{tmp}"]),
    ("--topic", ["discover", "--topic", "a/#/b"]),
    ("--topic", ["discover", "--topic", "a/b+"]),
    ("--seconds", ["discover", "--seconds", "0"]),
    ("--seconds", ["discover", "--seconds", "nan"]),
    ("--max-messages", ["discover", "--max-messages", "0"]),
    ("--out", ["discover", "--out", "{csv}"]),
    ("--out", ["discover", "--out", "/no/such/dir/proposal.toml"]),
    ("--broker", ["discover", "--broker", "http://x"]),
]


@pytest.fixture
def unreachable_broker(monkeypatch: pytest.MonkeyPatch) -> str:
    from pipeline.services import free_port

    url = f"mqtt://127.0.0.1:{free_port()}"
    monkeypatch.setenv("EDGEPIPE_MQTT__URL", url)
    return url


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``edgepipe ARGS`` in this process: (exit code, stderr). A traceback would raise here.

    The signal handlers a command installs are put back, so that pytest still stops on one.
    """
    import signal

    from pipeline.cli import main

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as ended:
            main(args)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    code = ended.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.mark.parametrize(("flag", "args"), [pytest.param(f, a, id=" ".join(a)) for f, a in HOSTILE])
def test_a_hostile_flag_value_exits_2_with_one_line_naming_the_flag(
    flag: str,
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unreachable_broker: str,
) -> None:
    csv = tmp_path / "series.csv"
    csv.write_text("timestamp,value\n2020-01-01 00:00:00,1\n")
    not_csv = tmp_path / "notes.toml"
    not_csv.write_text("[edge\nsite = 'x'\n")
    binary = tmp_path / "series.bin"
    binary.write_bytes(b"timestamp,value\n\xff\xfe,1\n")
    fridge_csv = tmp_path / "fridge.csv"  # row 3 has a value that is not a number
    fridge_csv.write_text("time;temp;door;power\n1700000000;4,5;0;120\n1700000001;warm;0;120\n")
    header_only_csv = tmp_path / "header.csv"
    header_only_csv.write_text("timestamp,value\n")
    monkeypatch.chdir(tmp_path)
    paths = {
        "csv": str(csv),
        "not_csv": str(not_csv),
        "binary": str(binary),
        "fridge_csv": str(fridge_csv),
        "header_only_csv": str(header_only_csv),
        "tmp": str(tmp_path),
    }
    code, err = run_main([a.format(**paths) for a in args], capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert flag in err


def test_sim_says_which_broker_and_fails_in_one_line_when_it_cannot_connect(
    capsys: pytest.CaptureFixture[str], unreachable_broker: str
) -> None:
    code, err = run_main(["sim", "--duration", "1", "--sites", "farm"], capsys)
    lines = err.splitlines()
    assert code == 1
    assert f"publishing to {unreachable_broker}" in lines[-2]
    assert lines[-1].startswith(f"edgepipe: cannot connect to {unreachable_broker}")
    assert "connection refused" in lines[-1].lower()  # why: nothing listens there (not "no answer")
    assert "--out" in lines[-1]  # how to run without a broker


def test_sim_help_describes_every_option_with_its_default() -> None:
    from pipeline.config import SimSettings

    result = edgepipe("sim", "--help")
    text = " ".join(result.stdout.split())
    for flag, key in [
        ("--devices-per-site", "devices_per_site"),
        ("--rate", "rate"),
        ("--speed", "speed"),
        ("--seed", "seed"),
        ("--qos", "qos"),
    ]:
        default = SimSettings.model_fields[key].default
        assert f"[default: ({default}, setting sim.{key})" in text, flag
    assert "starts (speed - 1) x duration seconds in the past" in text


def test_the_start_line_shows_the_simulated_span_when_it_starts_in_the_past(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "stream.txt"
    code, err = run_main(
        ["sim", "--out", str(out), "--sites", "farm", "--devices-per-site", "1",
         "--duration", "1", "--speed", "7200"],
        capsys,
    )
    assert code == 0, err
    start_line = err.splitlines()[0]
    assert start_line.startswith("sim: simulated time ")
    assert "7200 s in 1 wall s at --speed 7200" in start_line
    assert "2.0 h before now" in start_line


@pytest.mark.parametrize(("fmt", "said"), [("ttn", True), ("edgepipe", False)])
def test_sim_says_its_malformed_payloads_are_edgepipes_when_another_format_is_published(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str, said: bool
) -> None:
    out = tmp_path / "stream.txt"
    args = ["sim", "--out", str(out), "--sites", "farm", "--devices-per-site", "1"]
    code, err = run_main([*args, "--duration", "1", "--format", fmt, "--bad-rate", "0.2"], capsys)
    assert code == 0, err
    assert ("malformed payloads go out in edgepipe's format on the ttn topics" in err) == said


def test_a_misspelled_environment_variable_stops_every_command_in_one_line() -> None:
    import os

    env = {**os.environ, "EDGEPIPE_EDGE_SITE": "retail"}
    result = edgepipe("config", "check", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "edgepipe: config error: EDGEPIPE_EDGE_SITE: unknown environment variable; settings are"
        " EDGEPIPE_<SECTION>__<KEY>: did you mean EDGEPIPE_EDGE__SITE?"
    ]


def test_a_flag_error_names_the_flag_and_a_file_error_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "sim.toml"
    config.write_text('[sim]\nsites = ["orchard"]\n')
    from_flag = edgepipe("sim", "--sites", "orchard", "--out", str(tmp_path / "o.txt"))
    from_file = edgepipe("sim", "--config", str(config), "--out", str(tmp_path / "o.txt"))
    assert (from_flag.returncode, from_file.returncode) == (2, 2)
    assert "'--sites'" in from_flag.stderr and "sim.sites" not in from_flag.stderr
    assert "sim.sites = ['orchard']" in from_file.stderr


# -- --labels-out: a file to follow during a run ---------------------------------------------

LABELS_TIMEOUT_S = 90.0  # the first label is due about 4 wall seconds into the run below


def test_labels_out_is_created_at_start_even_when_no_label_is_published(tmp_path: Path) -> None:
    import os

    labels = tmp_path / "labels.jsonl"
    env = {**os.environ, "EDGEPIPE_SIM__ANOMALY_RATE": "0"}
    result = edgepipe(
        "sim", "--out", str(tmp_path / "stream.txt"), "--labels-out", str(labels),
        "--sites", "farm", "--devices-per-site", "1", "--duration", "1", "--json", env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["labels"] == 0
    assert labels.is_file() and labels.read_text() == ""


def test_each_label_is_in_labels_out_as_soon_as_it_is_published(tmp_path: Path) -> None:
    """Followed while the run goes on: a buffered file would show nothing until the end."""
    import os
    import signal
    import time

    labels = tmp_path / "labels.jsonl"
    env = {**os.environ, "EDGEPIPE_SIM__ANOMALY_RATE": "4"}
    command = [
        sys.executable, "-m", "pipeline", "sim", "--out", os.devnull, "--labels-out", str(labels),
        "--sites", "farm", "--devices-per-site", "2", "--speed", "240", "--duration", "600",
        "--seed", "1", "--start", "1795737600000", "--json",
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + LABELS_TIMEOUT_S
        first: list[str] = []
        while not first and proc.poll() is None and time.monotonic() < deadline:
            text = labels.read_text() if labels.exists() else ""
            first = [line for line in text.splitlines(keepends=True) if line.endswith("\n")]
            time.sleep(0.2)
        running = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert running, f"the run ended before a label was seen in the file: {err}"
    assert first, f"no complete label line within {LABELS_TIMEOUT_S} s"
    label = json.loads(first[0])
    assert label["site"] == "farm" and label["end"] >= label["start"]
    report = json.loads(out)
    assert report["stopped"] and report["labels"] == len(labels.read_text().splitlines())


# -- hostile settings: a bad path in the settings is one line, never a traceback -------------

HOSTILE_SETTINGS = [
    # (environment, command line, exit code, text of the one line)
    ({"EDGEPIPE_EDGE__STATE_DIR": "{file}/state"}, ["edge"], 1, "{file}/state"),
    ({"EDGEPIPE_CLOUD__BUFFER_DIR": "{file}/buffer"}, ["cloud", "--store", "sqlite:///{tmp}/s.db"], 1, "{file}/buffer"),
    ({"EDGEPIPE_MQTT__TLS_CA": "/no/such/ca.pem"}, ["alerts", "--broker", "mqtts://127.0.0.1:1"], 2, "mqtt.tls_ca"),
    ({"EDGEPIPE_MQTT__TLS_CA": "{file}"}, ["sim", "--broker", "mqtts://127.0.0.1:1"], 2, "mqtt.tls_ca"),
]


@pytest.mark.parametrize(
    ("env", "args", "code", "text"),
    [pytest.param(*case, id=" ".join(case[1][:1] + list(case[0]))) for case in HOSTILE_SETTINGS],
)
def test_a_bad_path_in_the_settings_ends_in_one_line(
    env: dict[str, str],
    args: list[str],
    code: int,
    text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unreachable_broker: str,
) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    paths = {"file": str(a_file), "tmp": str(tmp_path)}
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**paths))
    got, err = run_main([a.format(**paths) for a in args], capsys)
    lines = [line for line in err.splitlines() if line.startswith("edgepipe: ")]
    assert (got, len(lines)) == (code, 1), err
    assert text.format(**paths) in lines[0]
    assert "Traceback" not in err


def test_every_command_is_in_the_hostile_flag_table() -> None:
    """A new command joins the audit: add a HOSTILE case for it (a bad value of one of its flags)."""
    from pipeline.cli import cli

    commands = {
        f"{name} {sub}" if isinstance(command, click.Group) else name
        for name, command in cli.commands.items()
        for sub in (getattr(command, "commands", None) or [""])
    }
    audited = {" ".join(args[:2]) if args[0] in ("config", "priors") else args[0] for _, args in HOSTILE}
    assert commands - {"config sample"} <= audited  # config sample takes no value to spoil


def test_discover_says_to_edit_todo_lines_only_when_the_proposal_has_some() -> None:
    from pipeline.cli import _discover_next_step

    guessed = '[kinds.k.metrics.a]\ntodo = "guess"\n[kinds.k.metrics.b]\ntodo = "guess"\n'
    assert _discover_next_step(guessed, "d.toml").startswith("next: edit its 2 todo lines, then")
    known_only = '[[ingest]]\nformat = "ttn"\n\n# [kinds.soil_probe]: known to the catalogue\n'
    step = _discover_next_step(known_only, "d.toml")
    assert step.startswith("nothing to review (no todo line)")
    assert "edgepipe config check --config d.toml" in step
