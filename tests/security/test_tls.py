"""Transport security (RELIABILITY.md S5) on a real Mosquitto with openssl-made certificates.

The certificates come from ``deploy/make-certs.sh``, the script compose runs, and the last
test starts Mosquitto with ``deploy/mosquitto.conf`` itself (paths and ports moved into a
temporary folder), the password file of ``deploy/make-passwd.sh`` and ``deploy/acl``: what
compose deploys is what is tested here.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqttprobe import Outcome, Probe

from pipeline.errors import ServiceError
from pipeline.mqtt import MqttClient
from pipeline.services import Mosquitto, TlsFiles, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ACL = (DEPLOY / "acl").read_text()
ACCOUNTS = {  # account -> the variable make-passwd.sh reads its password from
    "sim.1": "MQTT_PASSWORD_SIM",
    "edge.farm": "MQTT_PASSWORD_EDGE_FARM",
    "edge.retail": "MQTT_PASSWORD_EDGE_RETAIL",
    "edge.city": "MQTT_PASSWORD_EDGE_CITY",
    "cloud.1": "MQTT_PASSWORD_CLOUD_1",
    "analyst.1": "MQTT_PASSWORD_ANALYST_1",
    "dashboard.1": "MQTT_PASSWORD_DASHBOARD",
    "monitor.1": "MQTT_PASSWORD_MONITOR",
}
# CONNACK refusals: 3.1.1 "not authorised"; 5 "bad user name or password", "not authorized"
NOT_AUTHORIZED = {5, 0x86, 0x87}


def _make_certs(out: Path) -> TlsFiles:
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found; install it with: apt-get install -y openssl", pytrace=False)
    done = subprocess.run(
        ["sh", str(DEPLOY / "make-certs.sh"), str(out), "mosquitto"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KEY_OWNER": ""},  # keep the test's files owned by the test
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return TlsFiles(out / "ca.crt", out / "server.crt", out / "server.key")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsFiles, TlsFiles]:
    """The broker's CA and certificate, and a second, unrelated CA."""
    base = tmp_path_factory.mktemp("certs")
    return _make_certs(base / "good"), _make_certs(base / "wrong")


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {account: secrets.token_hex(16) for account in ACCOUNTS}


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory,
    certs: tuple[TlsFiles, TlsFiles],
    passwords: dict[str, str],
) -> Iterator[Mosquitto]:
    try:
        server = Mosquitto(tmp_path_factory.mktemp("tls"), users=passwords, acl=ACL, tls=certs[0])
        server.start()
    except ServiceError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_only_the_right_ca_with_an_account_gets_in(
    broker: Mosquitto, certs: tuple[TlsFiles, TlsFiles], passwords: dict[str, str], protocol: str
) -> None:
    good, wrong = certs
    user, password = "edge.farm", passwords["edge.farm"]
    cells = {
        "plaintext to the TLS port": Probe(
            broker.port, username=user, password=password, protocol=protocol
        ),
        "right CA, account": Probe(
            broker.port, username=user, password=password, protocol=protocol, tls_ca=str(good.ca)
        ),
        "right CA, no account": Probe(broker.port, protocol=protocol, tls_ca=str(good.ca)),
        "right CA, wrong password": Probe(
            broker.port,
            username=user,
            password="x" + password,
            protocol=protocol,
            tls_ca=str(good.ca),
        ),
    }
    outcomes = {}
    for name, probe in cells.items():
        outcomes[name] = probe.connect()
        probe.close()
    # paho leaks the socket of a failed handshake, so this cell is a bare TLS client.
    outcomes["wrong CA"] = _handshake(broker.port, wrong.ca)
    assert _handshake(broker.port, good.ca).error == "", "control: the right CA must verify"
    print(
        f"\nS5 over MQTT {protocol}: "
        + "; ".join(f"{k}: {_describe(v)}" for k, v in outcomes.items())
    )
    assert not outcomes["plaintext to the TLS port"].connack
    assert not outcomes["wrong CA"].connack
    assert "CERTIFICATE_VERIFY_FAILED" in outcomes["wrong CA"].error
    assert outcomes["right CA, account"].accepted
    for name in ("right CA, no account", "right CA, wrong password"):
        assert outcomes[name].connack and outcomes[name].rc in NOT_AUTHORIZED, name


def test_edgepipe_processes_talk_over_tls(
    broker: Mosquitto, certs: tuple[TlsFiles, TlsFiles], passwords: dict[str, str]
) -> None:
    """The product's own client, as compose configures it: mqtts:// URL plus ``tls_ca``."""
    assert broker.url.startswith("mqtts://")
    _round_trip(broker.port, str(certs[0].ca), passwords)


def test_the_deployed_broker_config_runs_as_tested(
    tmp_path: Path, certs: tuple[TlsFiles, TlsFiles], passwords: dict[str, str]
) -> None:
    """deploy/mosquitto.conf + make-passwd.sh + deploy/acl, with only paths and ports moved."""
    env = {**os.environ, "FILE_OWNER": ""}
    env.update({var: passwords[account] for account, var in ACCOUNTS.items()})
    passwd = tmp_path / "passwd"
    done = subprocess.run(
        ["sh", str(DEPLOY / "make-passwd.sh"), str(passwd)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(passwd.read_text().splitlines()) == len(ACCOUNTS)
    health_port = free_port()
    broker = _DeployedMosquitto(tmp_path / "broker", certs[0], passwd, health_port)
    try:
        broker.start()
    except ServiceError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        # the compose health check: an account on the loopback listener reads $SYS
        monitor = Probe(health_port, username="monitor.1", password=passwords["monitor.1"])
        assert monitor.connect().accepted
        monitor.subscribe(["$SYS/broker/uptime"])
        anonymous = Probe(health_port)
        assert not anonymous.connect().accepted
        plaintext = Probe(broker.port, username="edge.farm", password=passwords["edge.farm"])
        assert not plaintext.connect().connack
        _round_trip(broker.port, str(certs[0].ca), passwords)
        assert monitor.total() >= 1
        monitor.close()
    finally:
        broker.stop()


class _DeployedMosquitto(Mosquitto):
    """Mosquitto running deploy/mosquitto.conf with its container paths and ports moved."""

    def __init__(self, workdir: Path, tls: TlsFiles, passwd: Path, health_port: int) -> None:
        super().__init__(workdir)
        self._tls_files, self._passwd, self._health_port = tls, passwd, health_port

    def _ready(self) -> bool:
        """Both listeners: Mosquitto binds the loopback health listener after the TLS one
        (a CI run once connected to it before it listened)."""
        if not super()._ready():
            return False
        try:
            with socket.create_connection(("127.0.0.1", self._health_port), timeout=0.5):
                return True
        except OSError:
            return False

    def config_text(self) -> str:
        text = (DEPLOY / "mosquitto.conf").read_text()
        moves = {
            "/mosquitto/secrets/passwd": str(self._passwd),
            "/mosquitto/config/acl": str(DEPLOY / "acl"),
            "/mosquitto/certs/ca.crt": str(self._tls_files.ca),
            "/mosquitto/certs/server.crt": str(self._tls_files.cert),
            "/mosquitto/certs/server.key": str(self._tls_files.key),
            "/mosquitto/data/": f"{self.data_dir}/",
        }
        for old, new in moves.items():
            assert old in text, old
            text = text.replace(old, new)
        text, n = re.subn(r"(?m)^listener 8883$", f"listener {self.port} 127.0.0.1", text)
        assert n == 1
        text, n = re.subn(
            r"(?m)^listener 1883 127\.0\.0\.1$", f"listener {self._health_port} 127.0.0.1", text
        )
        assert n == 1
        assert "/mosquitto/" not in text
        if os.geteuid() == 0:
            text += "user root\n"
        return text


def _round_trip(port: int, ca: str, passwords: dict[str, str]) -> None:
    """edge.farm publishes a batch; cloud.1 on its shared subscription receives it."""

    def url(account: str) -> str:
        return f"mqtts://{account}:{passwords[account]}@127.0.0.1:{port}"

    cloud = MqttClient(url("cloud.1"), client_id="edgepipe-cloud-1", tls_ca=ca)
    edge = MqttClient(url("edge.farm"), client_id="edgepipe-edge-farm", tls_ca=ca)
    cloud.connect(5)
    try:
        cloud.subscribe("$share/edgepipe-cloud/edgepipe/v1/+/edge/+", qos=1)
        edge.connect(5)
        try:
            for _ in range(50):  # the SUBACK has no waiter here: publish until one arrives
                edge.publish("edgepipe/v1/farm/edge/batch", b"over tls", qos=1)
                assert edge.flush(5)
                try:
                    message = cloud.messages.get(timeout=0.1)
                    break
                except queue.Empty:
                    continue
            else:
                pytest.fail("no message crossed the TLS broker")
            assert message.topic == "edgepipe/v1/farm/edge/batch"
            assert message.payload == b"over tls"
        finally:
            edge.close()
    finally:
        cloud.close()


def _handshake(port: int, ca: Path) -> Outcome:
    """A TLS handshake with the broker, trusting ``ca``: no CONNACK, and the TLS error if any."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                return Outcome(connack=False)
    except (OSError, ssl.SSLError) as exc:
        return Outcome(connack=False, error=f"{type(exc).__name__}: {exc}")


def _describe(outcome: Outcome) -> str:
    connack, rc, error = outcome.connack, outcome.rc, outcome.error
    if not connack:
        return f"no CONNACK ({error.split(':')[0]})"
    return "accepted" if rc == 0 else f"refused rc={rc}"
