"""InfluxDB with ``auth-enabled``: each user can do what its grant says and nothing more.

A real influxd 1.6.7 with users (``influx_auth_db``): a WRITE-only user for the cloud worker
and a READ-only user for the dashboard, on one database. The whole store contract already
runs that way (``any_store[influx-auth]``); this module is about the refusals. A wrong
grant or a bad password is a configuration fault, ``StoreConfigError`` (retrying cannot
fix it), answered by the server without a retry of our own; and the WRITE-only user, who
may not ``CREATE DATABASE``, still writes into the database an admin made for it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
import urllib3
from conftest import AuthDatabase

from pipeline.cloud.store import InfluxStore, StoreConfigError, open_store
from pipeline.protocol.messages import Reading

T0 = 1_700_000_000_000


def readings(n: int = 3) -> list[Reading]:
    return [
        Reading(v=1, device="fridge1", kind="fridge", ts=T0 + i, seq=i, metrics={"temp": 4.0})
        for i in range(n)
    ]


def counting(store: InfluxStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every request ``store`` sends from now on (a spy; nothing replaced)."""
    paths: list[str] = []
    request = store._request

    def spy(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        paths.append(path)
        return request(method, path, *args, **kwargs)

    monkeypatch.setattr(store, "_request", spy)
    return paths


def test_the_write_only_user_writes_into_the_database_an_admin_made(influx_auth_db: AuthDatabase) -> None:
    writer = open_store(influx_auth_db.url(influx_auth_db.writer))  # its CREATE DATABASE is refused
    reader = open_store(influx_auth_db.url(influx_auth_db.reader))

    writer.write_readings("shop1", readings(3))

    assert reader.count_readings("shop1") == 3
    writer.close()
    reader.close()


def test_the_read_only_user_writing_is_a_config_error_and_writes_nothing(
    influx_auth_db: AuthDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = open_store(influx_auth_db.url(influx_auth_db.reader))
    assert isinstance(reader, InfluxStore)
    sent = counting(reader, monkeypatch)

    with pytest.raises(StoreConfigError, match="403.*not authorized to write"):
        reader.write_readings("shop1", readings(3))

    assert sent == ["/write"]  # refused once, not resent
    assert reader.count_readings("shop1") == 0
    reader.close()


def test_the_write_only_user_querying_is_a_config_error(influx_auth_db: AuthDatabase) -> None:
    writer = open_store(influx_auth_db.url(influx_auth_db.writer))
    writer.write_readings("shop1", readings(3))

    with pytest.raises(StoreConfigError, match="403.*requires READ"):
        writer.count_readings("shop1")
    with pytest.raises(StoreConfigError, match="403"):
        writer.sites()
    writer.close()


@pytest.mark.parametrize("role", ["writer", "reader"])
def test_a_bad_password_is_a_config_error_for_writes_and_queries(
    influx_auth_db: AuthDatabase, role: str
) -> None:
    user = getattr(influx_auth_db, role)
    store = open_store(influx_auth_db.url((user[0], user[1] + "-wrong")))

    with pytest.raises(StoreConfigError, match="401.*authorization failed"):
        store.write_readings("shop1", readings(1))
    with pytest.raises(StoreConfigError, match="401.*authorization failed"):
        store.count_readings("shop1")
    store.close()


def test_no_credentials_at_all_are_a_config_error(influx_auth_db: AuthDatabase) -> None:
    store = open_store(f"influxdb://127.0.0.1:{influx_auth_db.server.port}/{influx_auth_db.name}")

    with pytest.raises(StoreConfigError, match="401"):
        store.write_readings("shop1", readings(1))
    store.close()


def test_the_write_only_user_on_a_missing_database_gets_a_config_error_after_one_create_attempt(
    influx_auth_db: AuthDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, password = influx_auth_db.writer
    port = influx_auth_db.server.port
    store = open_store(f"influxdb://{name}:{password}@127.0.0.1:{port}/{influx_auth_db.name}_gone")
    assert isinstance(store, InfluxStore)
    sent = counting(store, monkeypatch)

    with pytest.raises(StoreConfigError, match="404.*database not found"):
        store.write_readings("shop1", readings(1))

    assert sent == ["/write", "/query", "/write"]  # CREATE DATABASE refused (403): no loop
    store.close()


def test_the_dashboard_user_cannot_drop_the_database(influx_auth_db: AuthDatabase) -> None:
    name, password = influx_auth_db.reader
    query = urlencode({"q": f'DROP DATABASE "{influx_auth_db.name}"', "u": name, "p": password})

    resp = urllib3.PoolManager().request(
        "POST", f"http://127.0.0.1:{influx_auth_db.server.port}/query?{query}"
    )

    assert resp.status == 403 and b"requires admin privilege" in resp.data
    reader = open_store(influx_auth_db.url(influx_auth_db.reader))
    assert reader.count_readings() == 0  # the database is still there to be read
    reader.close()
