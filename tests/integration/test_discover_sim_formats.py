"""`edgepipe discover` over a real Mosquitto: a simulated fleet in each format is heard, the
proposal is filled in as a user would, `edgepipe config check` accepts it, and an edge node
running with it takes the fleet's readings, none dead-lettered."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nodekit import new_site, running_node
from waiting import wait_for, wait_until

from pipeline.config import load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import Topics
from pipeline.protocol.catalog import BUILTIN
from pipeline.services import Mosquitto, free_port
from simulators.formats import FORMATS

WAIT_S = 60.0
SIM = ["--devices-per-site", "6", "--duration", "3", "--seed", "11"]
CLEAN = ["--rate", "2", "--bad-rate", "0"]
# while discover listens, a tenth of the payloads are malformed (as --bad-rate sends them):
# 12 messages a device, so that each device's own shape is still most of what it sends
NOISY = ["--rate", "4", "--bad-rate", "0.1"]


def _filter(fmt: str, site: str) -> str:
    """What discover listens to: this test's site only (the broker is shared by the session)."""
    return {
        "edgepipe": f"edgepipe/v1/{site}/#",
        "json": f"sensors/{site}/#",
        "ttn": "v3/+/devices/+/up",
        "chirpstack": f"application/{site}/#",
        "zigbee2mqtt": f"zigbee2mqtt-{site}/#",
        "influx-line": f"telegraf/{site}/#",
    }[fmt]


def _edgepipe(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPIPE_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _sim(url: str, fmt: str, site: str, rates: list[str]) -> dict[str, int]:
    done = _edgepipe(
        "sim", "--broker", url, "--format", fmt, "--sites", site, *SIM, *rates, "--json"
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _discover(url: str, fmt: str, site: str, out: Path, *flags: str) -> tuple[str, str]:
    """Run discover while the simulator publishes; stop it (SIGINT, as Ctrl-C) once the
    simulator is done: (its stderr, the proposal)."""
    err = out.with_suffix(".err")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPIPE_")}
    args = [
        "discover",
        "--broker",
        url,
        "--topic",
        _filter(fmt, site),
        "--seconds",
        "600",
        "--out",
        str(out),
        *flags,
    ]
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args], stderr=f, stdout=subprocess.DEVNULL, env=env
        )
    try:
        wait_for(
            lambda: "listening" in err.read_text() or proc.poll() is not None,
            "discover listening",
            WAIT_S,
        )
        assert proc.poll() is None, err.read_text()
        _sim(url, fmt, site, NOISY)
        proc.send_signal(signal.SIGINT)
        proc.wait(WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err.read_text()
    return err.read_text(), out.read_text()


def filled(proposal: str) -> str:
    """The proposal as a user leaves it: each guessed metric set from the sensor's datasheet
    (here the built-in kind's), its ``todo`` line deleted."""
    out, metric = [], None
    for line in proposal.splitlines():
        header = re.fullmatch(r"\[kinds\.([\w-]+)\.metrics\.([\w-]+)\]", line)
        if header:
            metric = BUILTIN.metric(header.group(1), header.group(2))
            assert metric is not None, line
        elif line.startswith("["):
            metric = None
        key = line.split(" = ", 1)[0]
        if metric is not None and key == "todo":
            continue
        if metric is not None and key in ("unit", "resolution", "low", "high"):
            value = getattr(metric, key)
            line = f"{key} = {json.dumps(value) if key == 'unit' else repr(float(value))}"
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_fleet_discovered_in_each_format_is_taken_by_an_edge_node(
    mosquitto: Mosquitto, tmp_path: Path, fmt: str
) -> None:
    site = new_site()
    proposal_file = tmp_path / "proposal.toml"
    summary, proposal = _discover(mosquitto.url, fmt, site, proposal_file, "--all-kinds")
    assert "check: the proposal turns the messages heard into" in summary
    assert f'format = "{fmt}"' in proposal and "\ntodo = " in proposal

    refused = _edgepipe("config", "check", "--config", str(proposal_file))
    assert refused.returncode == 2 and ".todo" in refused.stderr, refused.stderr
    config = tmp_path / "edgepipe.toml"
    config.write_text(filled(proposal))
    checked = _edgepipe("config", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr + config.read_text()

    settings = load_settings(
        config,
        {
            "mqtt.url": mosquitto.url,
            "edge.site": site,
            "edge.state_dir": str(tmp_path / "state"),
            "edge.detect": False,
        },
    )
    watcher = MqttClient(mosquitto.url)
    watcher.connect(timeout=10)
    watcher.subscribe(Topics().edge(site, "catalog"), qos=1)
    with running_node(settings) as node:
        watcher.messages.get(timeout=WAIT_S)  # the node's subscriptions are in place
        watcher.close(1)
        report = _sim(mosquitto.url, fmt, site, CLEAN)
        assert wait_until(lambda: node.counters.received >= report["payloads_published"], WAIT_S), (
            node.summary()
        )
        c = node.counters
        assert c.accepted == report["readings_published"] > 0, node.summary()
        assert c.dead_lettered == 0, dict(c.dead_letters)


def test_a_fleet_of_known_kinds_needs_no_edit_to_pass_config_check(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = new_site()
    proposal_file = tmp_path / "proposal.toml"
    _, proposal = _discover(mosquitto.url, "chirpstack", site, proposal_file)
    assert "\ntodo = " not in proposal and "known to the catalogue" in proposal
    checked = _edgepipe("config", "check", "--config", str(proposal_file))
    assert checked.returncode == 0, checked.stderr


def test_nothing_heard_is_said_in_one_line_and_writes_no_file(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    out = tmp_path / "proposal.toml"
    quiet = f"quiet/{new_site()}/#"
    url = mosquitto.url.replace("mqtt://", "mqtt://onboarder:s3cret@")  # anonymous broker: any user
    done = _edgepipe(
        "discover", "--broker", url, "--topic", quiet, "--seconds", "1", "--out", str(out)
    )
    assert done.returncode == 1 and not out.exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("edgepipe: ")]
    assert len(errors) == 1 and "nothing heard" in errors[0] and "Traceback" not in done.stderr
    assert (
        "onboarder@" in done.stderr and "s3cret" not in done.stderr
    )  # the broker, not its password


def test_an_unreachable_broker_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    done = _edgepipe("discover", "--broker", url, "--seconds", "1")
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and url in done.stderr and "Traceback" not in done.stderr
