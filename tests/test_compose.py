"""compose.yaml: the stack the README promises, each role an `edgepipe` command that parses."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from pipeline.cli import cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
ROLES = {name: s for name, s in COMPOSE["services"].items() if s.get("image") == "edgepipe:latest"}


def test_the_stack_has_every_role() -> None:
    assert set(COMPOSE["services"]) == {
        "mosquitto",
        "influxdb",
        "cloud",
        "edge-farm",
        "edge-retail",
        "edge-city",
        "simulators",
        "dashboard",
    }


@pytest.mark.parametrize("name", sorted(ROLES))
def test_each_role_command_is_a_valid_edgepipe_command(name: str) -> None:
    args = ROLES[name]["command"]
    command = cli.commands[args[0]]
    assert isinstance(command, click.Command)
    command.make_context(f"edgepipe {args[0]}", list(args[1:]))


def test_the_broker_config_raises_the_queue_limit() -> None:
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text()
    assert "max_queued_messages 100000" in conf
    assert "autosave_on_changes true" in conf


def test_services_publish_ports_on_loopback_only() -> None:
    for service in COMPOSE["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")
