"""The broker's accounts and ACL (RELIABILITY.md S1, S2, S3) on a real Mosquitto.

The broker runs with ``deploy/acl`` itself, the file compose.yaml mounts, and the expected
outcome of every cell comes from the role matrix in docs/operations.md, so the ACL, the
docs and the broker cannot drift apart. Outcomes are *deliveries* counted at a test-only
spy allowed to read everything: over MQTT 3.1.1 a denied publish is still acknowledged, and
a denied subscription is still granted, so acknowledgements prove nothing.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mqttprobe import Probe, wait_until
from waiting import wait_for

from pipeline.errors import ServiceError
from pipeline.services import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
ACL = (ROOT / "deploy" / "acl").read_text()
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()

# The spy reads and writes everything. It exists only in the tests' copy of the ACL, as
# does each account's sentinel topic, which only that account may read (outside edgepipe/v1).
SPY = "admin.test"
SENTINEL_TOPIC = "edgepipe-test/sentinel/{}"
SENTINEL = b"sentinel"
SPY_ACL = f"\n# test only\nuser {SPY}\ntopic readwrite #\npattern read {SENTINEL_TOPIC.format('%u')}\n"
NOT_AUTHORIZED = 0x87


def role_matrix() -> tuple[list[str], dict[str, dict[str, set[str]]]]:
    """Parse the role matrix of docs/operations.md: accounts, and topic -> account -> actions."""
    section = OPERATIONS.split("### Role matrix", 1)[1].splitlines()
    start = next(i for i, line in enumerate(section) if line.startswith("|"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), section[start:]))
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    accounts = [re.sub(r"[`*]", "", c).split()[-1] for c in header[1:]]
    matrix: dict[str, dict[str, set[str]]] = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        topic = cells[0].strip("`")
        matrix[topic] = {
            account: {a.strip() for a in cell.split(",") if a.strip() in ("pub", "sub")}
            for account, cell in zip(accounts, cells[1:], strict=True)
        }
    return accounts, matrix


ACCOUNTS, MATRIX = role_matrix()
USERS = [*ACCOUNTS, "d2", "edge.retail", "cloud.2", SPY]


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    """Fresh random passwords: no secret of a test is ever in the repository (S1)."""
    return {user: secrets.token_urlsafe(12) for user in USERS}


def _start(workdir: Path, **kwargs: object) -> Mosquitto:
    try:
        broker = Mosquitto(workdir, **kwargs)  # type: ignore[arg-type]
        broker.start()
    except ServiceError as e:
        pytest.fail(str(e), pytrace=False)
    return broker


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]
) -> Iterator[Mosquitto]:
    """Mosquitto with deploy/acl (plus the spy), hashed passwords, username as client id."""
    server = _start(tmp_path_factory.mktemp("secured"), users=passwords, acl=ACL + SPY_ACL)
    yield server
    server.stop()


@pytest.fixture
def connect(broker: Mosquitto, passwords: dict[str, str]) -> Iterator[Callable[..., Probe]]:
    """Connect as an account (its own password); every probe is closed at teardown."""
    made: list[Probe] = []

    def make(user: str, protocol: str = "5", client_id: str = "") -> Probe:
        probe = Probe(
            broker.port,
            username=user,
            password=passwords[user],
            protocol=protocol,
            client_id=client_id,
        )
        made.append(probe)
        outcome = probe.connect()
        assert outcome.accepted, f"{user} refused: {outcome}"
        return probe

    yield make
    for probe in made:
        probe.close()


def test_the_role_matrix_of_the_docs_is_complete() -> None:
    assert ACCOUNTS == ["d1", "sim.1", "edge.farm", "cloud.1", "dashboard.1", "monitor.1"]
    assert len(MATRIX) >= 14
    # Every account of the matrix has its block (or, for a device, the pattern) in deploy/acl.
    for account in ACCOUNTS[1:]:
        assert f"\nuser {account}\n" in ACL
    assert "pattern write edgepipe/v1/+/dev/%u" in ACL


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_every_publish_cell_is_delivered_exactly_as_specified(
    connect: Callable[..., Probe], protocol: str
) -> None:
    spy = connect(SPY, protocol)
    spy.subscribe(["#"])
    topics = [t for t in MATRIX if not t.startswith("$")]  # nobody publishes on $SYS
    sent: dict[tuple[str, str], tuple[Probe, int]] = {}
    for account in ACCOUNTS:
        probe = connect(account, protocol)
        for topic in topics:
            sent[(account, topic)] = (
                probe,
                probe.publish(topic, _payload("pub", protocol, account, topic)),
            )
    reasons = {key: probe.wait_pubacks([mid])[mid] for key, (probe, mid) in sent.items()}
    allowed = {key for key in sent if "pub" in MATRIX[key[1]][key[0]]}
    assert wait_until(
        lambda: all(spy.count(t, _payload("pub", protocol, a, t)) for a, t in allowed)
    )
    through_sentinels(spy, {SPY: spy})  # every PUBACK is in: what was routed is routed
    delivered = {key: spy.count(key[1], _payload("pub", protocol, *key)) for key in sent}
    wrong = {key: n for key, n in delivered.items() if n != (1 if key in allowed else 0)}
    print(
        f"\nACL publish over MQTT {protocol}: {len(ACCOUNTS)} accounts x {len(topics)} topics = "
        f"{len(sent)} cells, {len(allowed)} allowed, {len(sent) - len(allowed)} denied, "
        f"{len(sent) - len(wrong)} as specified; every publish acknowledged "
        f"({len(reasons)} of {len(sent)})"
    )
    assert not wrong, f"delivered counts differ from docs/operations.md: {wrong}"
    if protocol == "5":  # MQTT 5 says why: 0x87 Not authorized, and only for denied cells
        refused = {key for key, rc in reasons.items() if rc == NOT_AUTHORIZED}
        assert refused == set(sent) - allowed
        assert all(reasons[key] < 0x80 for key in allowed)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_every_subscribe_cell_is_delivered_exactly_as_specified(
    connect: Callable[..., Probe], protocol: str
) -> None:
    readers = {account: connect(account, protocol) for account in ACCOUNTS}
    for probe in readers.values():
        probe.subscribe(list(MATRIX))  # SUBACKs say nothing: a denied filter is "granted" too
    publisher = connect(SPY, protocol)
    topics = [t for t in MATRIX if not t.startswith("$")]
    publisher.wait_pubacks([publisher.publish(t, _payload("sub", protocol, t)) for t in topics])

    def received(account: str, topic: str) -> int:
        probe = readers[account]
        if topic.startswith("$"):  # the broker's own retained statistics
            with probe.rec.lock:
                return sum(n for (t, _), n in probe.rec.received.items() if t == topic)
        return probe.count(topic, _payload("sub", protocol, topic))

    cells = [(a, t) for a in ACCOUNTS for t in MATRIX]
    allowed = {(a, t) for a, t in cells if "sub" in MATRIX[t][a]}
    assert wait_until(lambda: all(received(a, t) for a, t in allowed))
    through_sentinels(publisher, readers)
    wrong = {
        (a, t): n for a, t in cells if (n := received(a, t)) != (1 if (a, t) in allowed else 0)
    }
    print(
        f"\nACL subscribe over MQTT {protocol}: {len(ACCOUNTS)} accounts x {len(MATRIX)} topics = "
        f"{len(cells)} cells, {len(allowed)} delivering, {len(cells) - len(allowed)} silent, "
        f"{len(cells) - len(wrong)} as specified"
    )
    assert not wrong, f"delivered counts differ from docs/operations.md: {wrong}"


def test_the_real_subscriptions_and_wide_filters_get_only_what_the_role_may_read(
    connect: Callable[..., Probe],
) -> None:
    """The filters edgepipe itself uses (a $share group for the cloud), and greedy ones."""
    root = "edgepipe/v1"
    cloud = connect("cloud.1", "5")
    cloud.subscribe(
        [f"$share/edgepipe-cloud/{root}/+/edge/+", f"$share/edgepipe-cloud/{root}/+/alerts/+"]
    )
    edge = connect("edge.farm", "5")
    edge.subscribe([f"{root}/farm/dev/+", f"{root}/cloud/ack/farm"])
    nosy_edge = connect("edge.retail", "3.1.1")
    nosy_edge.subscribe([f"{root}/+/dev/+", f"{root}/cloud/ack/+"])
    dashboard = connect("dashboard.1", "5")
    dashboard.subscribe(["#"])
    device = connect("d2", "3.1.1")
    device.subscribe(["#"])
    spy = connect(SPY, "5")
    topics = {
        f"{root}/farm/dev/d1": {edge},
        f"{root}/retail/dev/d2": {nosy_edge},
        f"{root}/farm/edge/batch": {cloud},
        f"{root}/retail/alerts/d2": {cloud, dashboard},
        f"{root}/farm/edge/health": {cloud, dashboard},
        f"{root}/cloud/ack/farm": {edge},
        f"{root}/cloud/ack/retail": {nosy_edge},
    }
    spy.wait_pubacks([spy.publish(t, b"wide") for t in topics])
    everyone = [cloud, edge, nosy_edge, dashboard, device]
    assert wait_until(lambda: all(p.count(t, b"wide") for t, ps in topics.items() for p in ps))
    through_sentinels(
        spy, {"cloud.1": cloud, "edge.farm": edge, "edge.retail": nosy_edge, "dashboard.1": dashboard, "d2": device}
    )
    for topic, readers in topics.items():
        for probe in everyone:
            assert probe.count(topic, b"wide") == (1 if probe in readers else 0), (topic, probe)
    assert device.total() == device.count(SENTINEL_TOPIC.format("d2"), SENTINEL)  # "#" got it nothing else


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_anonymous_wrong_password_and_unknown_users_are_all_refused(
    broker: Mosquitto, passwords: dict[str, str], protocol: str
) -> None:
    attempts = {
        "anonymous": (None, None),
        "wrong password": ("cloud.1", passwords["cloud.1"] + "x"),
        "unknown user": ("cloud.9", passwords["cloud.1"]),
        "empty password": ("edge.farm", ""),
    }
    accepted: dict[str, int] = {}
    for kind, (user, password) in attempts.items():
        accepted[kind] = 0
        for _ in range(20):
            probe = Probe(broker.port, username=user, password=password, protocol=protocol)
            outcome = probe.connect()
            probe.close()
            assert outcome.connack, f"{kind}: no CONNACK ({outcome.error})"
            accepted[kind] += outcome.accepted
    control = Probe(
        broker.port, username="cloud.1", password=passwords["cloud.1"], protocol=protocol
    )
    assert control.connect().accepted
    control.close()
    print(f"\nS1 over MQTT {protocol}: accepted of 20 each: {accepted}")
    assert accepted == dict.fromkeys(attempts, 0)


def test_the_password_file_holds_only_hashes(broker: Mosquitto, passwords: dict[str, str]) -> None:
    assert broker.password_file is not None
    text = broker.password_file.read_text()
    lines = text.splitlines()
    assert len(lines) == len(USERS)
    assert all(line.split(":", 1)[1].startswith("$7$") for line in lines)  # PBKDF2-SHA512
    assert not any(password in text for password in passwords.values())


def test_a_client_id_takeover_cannot_disconnect_the_victim(
    broker: Mosquitto, connect: Callable[..., Probe], passwords: dict[str, str]
) -> None:
    """S3: with use_username_as_clientid the intruder's client id is its own account."""
    topic = "edgepipe/v1/farm/edge/batch"
    victim = connect("cloud.1", "5", client_id="edgepipe-cloud-1")
    victim.subscribe([topic])
    edge = connect("edge.farm", "5")
    for i in range(20):
        for client_id in ("edgepipe-cloud-1", "cloud.1"):  # the configured id, and the account
            intruder = Probe(
                broker.port, username="d1", password=passwords["d1"], client_id=client_id
            )
            assert intruder.connect().accepted
            intruder.close()
        edge.wait_pubacks([edge.publish(topic, f"during-{i}".encode())])
    assert wait_until(lambda: victim.total() == 20)
    print(
        f"\nS3: 40 takeover attempts, victim disconnects {victim.rec.disconnects}, "
        f"messages {victim.total()} of 20"
    )
    assert victim.rec.disconnects == 0
    assert victim.client.is_connected()


def test_without_username_as_clientid_the_same_takeover_succeeds(
    tmp_path: Path, passwords: dict[str, str]
) -> None:
    """Negative control: the S3 test above would see a takeover if the setting were missing."""
    broker = _start(tmp_path, users=passwords, acl=ACL + SPY_ACL, use_username_as_clientid=False)
    try:
        victim = Probe(
            broker.port,
            username="cloud.1",
            password=passwords["cloud.1"],
            client_id="edgepipe-cloud-1",
        )
        assert victim.connect().accepted
        intruder = Probe(
            broker.port, username="d1", password=passwords["d1"], client_id="edgepipe-cloud-1"
        )
        assert intruder.connect().accepted
        assert wait_until(lambda: victim.rec.disconnects > 0)
        intruder.close()
        victim.close()
    finally:
        broker.stop()


def through_sentinels(spy: Probe, readers: dict[str, Probe]) -> None:
    """Wait until every reader has what the broker routed to it before now: the spy sends
    each account a sentinel on its own topic and every one arrives. The broker routes a
    publish before it acknowledges it and each reader's messages keep their order, so a
    message a reader was wrongly sent before this call is in its counts by then (where a
    pause would only make it likely). Readers subscribe to their sentinel here first."""
    for account, probe in readers.items():
        probe.subscribe([SENTINEL_TOPIC.format(account)])
    spy.wait_pubacks([spy.publish(SENTINEL_TOPIC.format(account), SENTINEL) for account in readers])
    wait_for(
        lambda: all(probe.count(SENTINEL_TOPIC.format(a), SENTINEL) for a, probe in readers.items()),
        "every reader's sentinel",
    )


def _payload(*parts: str) -> bytes:
    return "|".join(parts).encode()


def test_the_launcher_default_is_still_an_anonymous_broker(tmp_path: Path) -> None:
    """Every other test relies on it: no accounts, no ACL, no TLS unless asked for."""
    conf = Mosquitto(tmp_path).config_text()
    assert "allow_anonymous true" in conf
    for option in ("password_file", "acl_file", "use_username_as_clientid", "cafile"):
        assert option not in conf
    secured = Mosquitto(tmp_path / "s", users={"a.1": "pw"}, acl="user a.1\ntopic read #\n")
    conf = secured.config_text()
    assert "allow_anonymous false" in conf and "use_username_as_clientid true" in conf
    assert secured.acl_file is not None and secured.acl_file.read_text().startswith("user a.1")
    with pytest.raises(ValueError):
        Mosquitto(tmp_path / "x", users={}, password_file=tmp_path / "p")


# -- foreign payload formats: the commented blocks of deploy/acl, enabled ------------------

ENABLE = re.compile(r"^#(user|topic|pattern) ", re.MULTILINE)
# format: (writer account, a topic it publishes, a topic of that format the edge must not read)
FOREIGN = {
    "ttn": ("ttn.1", "v3/app@tenant/devices/probe-1/up", "v3/app@tenant/devices/probe-1/join"),
    "chirpstack": (
        "chirpstack.1",
        "application/7/device/0004a30b001c0530/event/up",
        "application/7/device/0004a30b001c0530/command/down",
    ),
    "zigbee2mqtt": ("zigbee2mqtt.1", "zigbee2mqtt/kitchen/fridge", None),
    "influx-line": ("telegraf.1", "telegraf/gw/cpu", None),
    "json": ("probe-7", "sensors/farm/probe-7/state", "sensors/retail/probe-8/state"),
}


def enabled_foreign_blocks(acl: str) -> str:
    """``acl`` with every commented foreign-format line switched on, as docs/operations.md says."""
    return ENABLE.sub(r"\1 ", acl)


def test_the_foreign_format_blocks_are_off_as_shipped_and_each_has_its_lines() -> None:
    foreign = ACL.split("# -- foreign payload formats", 1)[1]
    assert not re.search(r"^(user|topic|pattern) ", foreign, re.MULTILINE), "shipped enabled"
    enabled = enabled_foreign_blocks(foreign)
    for writer, _, _ in FOREIGN.values():
        if "." in writer:  # a service account; the json devices are the %u pattern
            assert f"\nuser {writer}\n" in enabled
    assert enabled.count("\nuser edge.farm\n") == len(FOREIGN)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_enabled_foreign_blocks_let_the_edge_read_exactly_what_their_writers_publish(
    tmp_path: Path, protocol: str
) -> None:
    """Each writer publishes its format's topic and the edge (subscribed as its [[ingest]]
    entries would be) receives it; the writers may publish nothing else, a device not even
    another device's state, and the edge's native rights are unchanged."""
    writers = [w for w, _, _ in FOREIGN.values()]
    users = {u: secrets.token_urlsafe(12) for u in [*writers, "edge.farm", "d1", SPY]}
    broker = _start(tmp_path, users=users, acl=enabled_foreign_blocks(ACL) + SPY_ACL)
    probes: list[Probe] = []

    def connect(user: str) -> Probe:
        probe = Probe(broker.port, username=user, password=users[user], protocol=protocol)
        probes.append(probe)
        assert probe.connect().accepted, user
        return probe

    try:
        edge = connect("edge.farm")
        edge.subscribe(
            [
                "v3/#",  # wider than its [[ingest]] entries: only the ACL may narrow them
                "application/#",
                "zigbee2mqtt/#",
                "telegraf/#",
                "sensors/#",
                "edgepipe/v1/farm/dev/+",
            ]
        )
        spy = connect(SPY)
        spy.subscribe(["#"])
        allowed: list[str] = []
        denied: list[tuple[str, str]] = []
        for fmt, (writer, topic, other) in FOREIGN.items():
            probe = connect(writer)
            probe.wait_pubacks([probe.publish(topic, f"{fmt}|ok".encode())])
            allowed.append(topic)
            for wrong in ("edgepipe/v1/farm/dev/d1", "edgepipe/v1/farm/edge/batch", other):
                if wrong is not None and wrong != topic:
                    probe.wait_pubacks([probe.publish(wrong, f"{fmt}|{writer}|denied".encode())])
                    denied.append((wrong, f"{fmt}|{writer}|denied"))
        device = connect("d1")
        device.wait_pubacks([device.publish("edgepipe/v1/farm/dev/d1", b"native|ok")])
        device.wait_pubacks([device.publish("sensors/farm/probe-7/state", b"d1|denied")])
        denied.append(("sensors/farm/probe-7/state", "d1|denied"))
        not_for_edge = [
            "application/7/device/x/event/join",
            "sensors/retail/x/state",
            "v3/a/devices/x/join",
        ]
        spy.wait_pubacks([spy.publish(t, b"spy|not-for-edge") for t in not_for_edge])
        fmts = list(FOREIGN)
        assert wait_until(
            lambda: (
                all(edge.count(t, f"{f}|ok".encode()) for f, t in zip(fmts, allowed, strict=True))
                and edge.count("edgepipe/v1/farm/dev/d1", b"native|ok") == 1
            )
        )
        through_sentinels(spy, {SPY: spy, "edge.farm": edge})
        for topic, payload in denied:
            assert spy.count(topic, payload.encode()) == 0, (topic, payload)
        for topic in not_for_edge:
            assert (
                spy.count(topic, b"spy|not-for-edge") == 1
                and edge.count(topic, b"spy|not-for-edge") == 0
            )
        print(
            f"\nforeign ACL blocks over MQTT {protocol}: {len(allowed)} formats delivered to "
            f"edge.farm, {len(denied)} publishes outside them denied"
        )
    finally:
        for probe in probes:
            probe.close()
        broker.stop()
