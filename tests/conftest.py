"""Shared fixtures: real mosquitto and influxd on free loopback ports, hermetic environment.

A missing binary fails the test with the ``apt-get`` command that installs it; it never
skips, so a machine without the services cannot pass by running fewer tests.
Session services are shared: a test that kills, freezes or restarts a service starts
its own with ``mosquitto_factory`` / ``influxd_factory`` instead.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from influx_v2_proxy import InfluxV2Proxy

from pipeline.cloud.store import Store, open_store
from pipeline.errors import ServiceError
from pipeline.services import Influxd, Mosquitto, Service

S = TypeVar("S", bound=Service)
SESSION_BROKER_AUTOSAVE_CHANGES = 100_000  # the session broker is never restarted: save rarely


def _started(make: Callable[[], S]) -> S:
    """Build and start a service, turning ServiceError (e.g. missing binary) into a failure."""
    try:
        service = make()
        service.start()
    except ServiceError as e:
        pytest.fail(str(e), pytrace=False)
    return service


@pytest.fixture(autouse=True)
def _clean_edgepipe_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every EDGEPIPE_* variable so a developer's shell cannot change test results."""
    for name in list(os.environ):
        if name.startswith("EDGEPIPE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One anonymous mosquitto broker for the whole session (``.url``, ``.port``).

    Nothing restarts it, so it saves its store only every ``SESSION_BROKER_AUTOSAVE_CHANGES``
    changes: saving after every change (what the crash tests' private brokers need) rewrote a
    store swollen by earlier tests' durable sessions at every message, and the broker, not the
    code under test, set the pace late in a run (a 40 s fleet test took over 7 minutes).
    """
    workdir = tmp_path_factory.mktemp("mosquitto")
    broker = _started(lambda: Mosquitto(workdir, autosave_interval=SESSION_BROKER_AUTOSAVE_CHANGES))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One influxd (1.x, no auth) for the whole session; use ``influx_db`` for a database."""
    workdir = tmp_path_factory.mktemp("influxd")
    server = _started(lambda: Influxd(workdir))
    yield server
    server.stop()


@pytest.fixture
def influx_db(influxdb: Influxd) -> Iterator[str]:
    """Name of a fresh, empty database on the session influxd; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    influxdb.create_database(name)
    yield name
    if influxdb.running:
        try:
            influxdb.query(f'DROP DATABASE "{name}"')
        except ServiceError:
            pass


V2_TOKEN = "edgepipe-test-token"


@pytest.fixture(scope="session")
def influx_v2(influxdb: Influxd) -> Iterator[InfluxV2Proxy]:
    """The session influxd behind a 2.x stand-in (``/api/v2/write``, token ``V2_TOKEN``):
    no 2.x server can be installed here, see ``tests/influx_v2_proxy.py``."""
    with InfluxV2Proxy(influxdb.port, V2_TOKEN) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def influxdb_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One influxd with ``auth-enabled`` and an admin (random password), for the session.

    Its own port and data dir; use ``influx_auth_db`` for a database and its users.
    """
    workdir = tmp_path_factory.mktemp("influxd-auth")
    server = _started(lambda: Influxd(workdir, admin=("admin", secrets.token_urlsafe(12))))
    yield server
    server.stop()


@dataclass(frozen=True)
class AuthDatabase:
    """A database on ``influxdb_auth`` with a WRITE-only user (the cloud writer) and a
    READ-only user (the dashboard), each holding no other grant; random passwords."""

    server: Influxd
    name: str
    writer: tuple[str, str]
    reader: tuple[str, str]

    def url(self, user: tuple[str, str]) -> str:
        return f"influxdb://{user[0]}:{user[1]}@127.0.0.1:{self.server.port}/{self.name}"


@pytest.fixture
def influx_auth_db(influxdb_auth: Influxd) -> Iterator[AuthDatabase]:
    """A fresh database on the auth-enabled influxd, its writer and reader; all dropped afterwards."""
    tag = uuid.uuid4().hex[:12]
    db = AuthDatabase(
        influxdb_auth,
        f"test_{tag}",
        (f"writer_{tag}", secrets.token_urlsafe(12)),
        (f"reader_{tag}", secrets.token_urlsafe(12)),
    )
    influxdb_auth.create_database(db.name)
    influxdb_auth.create_user(*db.writer, grants={db.name: "WRITE"})
    influxdb_auth.create_user(*db.reader, grants={db.name: "READ"})
    yield db
    if influxdb_auth.running:
        try:
            for user in (db.writer, db.reader):
                influxdb_auth.drop_user(user[0])
            influxdb_auth.query(f'DROP DATABASE "{db.name}"')
        except ServiceError:
            pass


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start private brokers (kwargs as for ``Mosquitto``); all are stopped at teardown."""
    made: list[Mosquitto] = []

    def make(**kwargs: Any) -> Mosquitto:
        workdir = tmp_path / f"mosquitto-{len(made)}"
        broker = _started(lambda: Mosquitto(workdir, **kwargs))
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture
def influxd_factory(tmp_path: Path) -> Iterator[Callable[..., Influxd]]:
    """Start private influxd servers (kwargs as for ``Influxd``); stopped at teardown."""
    made: list[Influxd] = []

    def make(**kwargs: Any) -> Influxd:
        workdir = tmp_path / f"influxd-{len(made)}"
        server = _started(lambda: Influxd(workdir, **kwargs))
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(params=["sqlite", "influx", "influx-auth", "influx-v2"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each backend in turn: a SQLite file, or a fresh database on the
    session influxd. The contract suites run every test against each. ``influx-auth`` is
    InfluxDB as deployed with least privilege: writes with a WRITE-only user (the cloud
    worker), everything else with a READ-only user (the dashboard). ``influx-v2`` is the
    token path (writes through influxdb-client to ``/api/v2/write``), through the 2.x
    stand-in in front of the session influxd."""
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    elif request.param == "influx-v2":
        proxy: InfluxV2Proxy = request.getfixturevalue("influx_v2")
        name: str = request.getfixturevalue("influx_db")
        url = f"influxdb://127.0.0.1:{proxy.port}/{name}?token={V2_TOKEN}&org=edgepipe"
        store = open_store(url)
    elif request.param == "influx-auth":
        db: AuthDatabase = request.getfixturevalue("influx_auth_db")
        store = WriterReaderStore(open_store(db.url(db.writer)), open_store(db.url(db.reader)))
    else:
        influxdb: Influxd = request.getfixturevalue("influxdb")
        database: str = request.getfixturevalue("influx_db")
        store = open_store(f"influxdb://127.0.0.1:{influxdb.port}/{database}")
    yield store
    store.close()


class WriterReaderStore:
    """One database through two users, as deployed: ``write_*`` (and ``encode_readings``)
    go to ``writer``, every query to ``reader``. Built from the Store protocol's members,
    so a method added there is routed too."""

    def __init__(self, writer: Store, reader: Store) -> None:
        self.writer, self.reader = writer, reader

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


def _route(name: str) -> Callable[..., Any]:
    role = "writer" if name.startswith(("write_", "encode_")) else "reader"

    def method(self: WriterReaderStore, *args: Any, **kwargs: Any) -> Any:
        return getattr(getattr(self, role), name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in [n for n in vars(Store) if not n.startswith("_") and n != "close"] + ["encode_readings"]:
    setattr(WriterReaderStore, _name, _route(_name))
