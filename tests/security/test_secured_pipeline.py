"""The real edgepipe processes work through the secured broker: deploy/acl, accounts, TLS.

The ACL matrix proves what each account may do; this proves the accounts may do what the
pipeline needs: simulator → edge (readings, acknowledged after the journal commit), edge →
cloud (batches, aggregates, health, last will), cloud → edge (acks), and both health topics
readable by the dashboard account. Each process is the `edgepipe` command compose runs,
with its own account and ``mqtts://``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqttprobe import Probe

from pipeline.cloud.store import open_store
from pipeline.errors import ServiceError
from pipeline.services import Mosquitto, TlsFiles

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = ("sim.1", "edge.farm", "cloud.1", "dashboard.1")
DEADLINE_S = 30.0


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Mosquitto, dict[str, str], Path]]:
    certs = tmp_path / "certs"
    done = subprocess.run(
        ["sh", str(ROOT / "deploy" / "make-certs.sh"), str(certs), "mosquitto"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KEY_OWNER": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    tls = TlsFiles(certs / "ca.crt", certs / "server.crt", certs / "server.key")
    passwords = {account: secrets.token_hex(16) for account in ACCOUNTS}
    acl = (ROOT / "deploy" / "acl").read_text()
    try:
        broker = Mosquitto(tmp_path / "broker", users=passwords, acl=acl, tls=tls)
        broker.start()
    except ServiceError as e:
        pytest.fail(str(e), pytrace=False)
    yield broker, passwords, tls.ca
    broker.stop()


def test_sim_edge_and_cloud_run_end_to_end_under_the_deployed_acl(
    secured: tuple[Mosquitto, dict[str, str], Path], tmp_path: Path
) -> None:
    broker, passwords, ca = secured
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPIPE_")}
    env.update(
        EDGEPIPE_MQTT__TLS_CA=str(ca),
        EDGEPIPE_EDGE__HEALTH_INTERVAL_S="1",
        EDGEPIPE_CLOUD__HEALTH_INTERVAL_S="1",
        EDGEPIPE_CLOUD__CLIENT_ID="cloud-1",
    )

    def url(account: str) -> str:
        return f"mqtts://{account}:{passwords[account]}@127.0.0.1:{broker.port}"

    def edgepipe(*args: str) -> subprocess.Popen[bytes]:
        with open(work / f"{args[0]}.log", "ab") as log:  # the child keeps its own copy
            return subprocess.Popen(
                [sys.executable, "-m", "pipeline", *args],
                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    store_url = f"sqlite:///{work / 'store.db'}"
    watcher = Probe(
        broker.port, username="dashboard.1", password=passwords["dashboard.1"], tls_ca=str(ca)
    )
    assert watcher.connect().accepted
    health: dict[str, dict[str, object]] = {}
    procs = [
        edgepipe("cloud", "--broker", url("cloud.1"), "--store", store_url),
        edgepipe("edge", "--site", "farm", "--broker", url("edge.farm")),
    ]
    try:
        watcher.subscribe(["edgepipe/v1/farm/edge/health", "edgepipe/v1/cloud/health/+"])
        assert _wait(lambda: _health(watcher, health) >= {"farm", "cloud-1"}), _logs(work)
        sim = subprocess.run(
            [sys.executable, "-m", "pipeline", "sim", "--sites", "farm", "--devices-per-site", "4",
             "--rate", "5", "--duration", "3", "--broker", url("sim.1"), "--json"],
            cwd=work, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert sim.returncode == 0, sim.stderr
        published = json.loads(sim.stdout.strip().splitlines()[-1])["readings_published"]
        assert published > 0

        def settled() -> bool:
            _health(watcher, health)
            counters = health.get("farm", {}).get("counters", {})
            return (
                isinstance(counters, dict)
                and counters.get("accepted") == published
                and counters.get("uplink_acked", 0) >= 1
            )

        assert _wait(settled), (health.get("farm"), _logs(work))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        watcher.close()
    store = open_store(store_url)
    try:
        stored = store.count_readings("farm")
    finally:
        store.close()
    counters = health["farm"]["counters"]
    assert isinstance(counters, dict)
    print(
        f"\nsecured pipeline: {published} readings published by sim.1, "
        f"{counters['accepted']} accepted by edge.farm, {counters['uplink_acked']} uplink "
        f"messages acknowledged by cloud.1, {stored} readings stored (after selection)"
    )
    assert counters.get("dead_lettered", 0) == 0
    assert stored > 0


def _health(watcher: Probe, seen: dict[str, dict[str, object]]) -> set[str]:
    """Latest health per node from the watcher's messages; returns the nodes seen online."""
    with watcher.rec.lock:
        items = list(watcher.rec.received)
    for topic, payload in items:
        message = json.loads(payload)
        key = message["site"] if "/edge/" in topic else message["node"]
        if message["ts"] >= int(seen.get(key, {}).get("ts", 0)):  # type: ignore[call-overload]
            seen[key] = message
    return {k for k, m in seen.items() if m.get("status") == "online"}


def _wait(predicate: object, timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _logs(work: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in work.glob("*.log")
    )
