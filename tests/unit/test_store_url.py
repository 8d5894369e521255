"""Store URLs: what ``parse_store_url`` accepts, and the ConfigError for everything else."""

from __future__ import annotations

import pytest

from pipeline.cloud.store import (
    InfluxURL,
    SQLiteStore,
    SQLiteURL,
    Store,
    open_store,
    parse_store_url,
)
from pipeline.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///edgepipe.db", SQLiteURL("edgepipe.db"), id="relative"),
        pytest.param("sqlite:///data/edge pipe.db", SQLiteURL("data/edge pipe.db"), id="subdir"),
        pytest.param("sqlite:////var/lib/edgepipe.db", SQLiteURL("/var/lib/edgepipe.db"), id="abs"),
        pytest.param("sqlite://:memory:", SQLiteURL(":memory:"), id="memory"),
        pytest.param("sqlite:///:memory:", SQLiteURL(":memory:"), id="memory-3-slashes"),
        pytest.param(
            "influxdb://127.0.0.1:8086/edgepipe",
            InfluxURL("127.0.0.1", 8086, "edgepipe"),
            id="influx",
        ),
        pytest.param(
            "influxdb://db.example/edgepipe",
            InfluxURL("db.example", 8086, "edgepipe"),
            id="influx-default-port",
        ),
        pytest.param(
            "influxdb://writer:s3cr%40t%3A@db.example:9999/edge_pipe-1",
            InfluxURL("db.example", 9999, "edge_pipe-1", username="writer", password="s3cr@t:"),
            id="influx-user-pass-percent-encoded",
        ),
        pytest.param(
            "influxdb://localhost:8086/bucket?token=abc%2Bdef%3D%3D&org=acme",
            InfluxURL("localhost", 8086, "bucket", token="abc+def==", org="acme"),
            id="influx-v2-token-org",
        ),
        pytest.param(
            "influxdb://[::1]:8086/edgepipe?timeout=2.5",
            InfluxURL("::1", 8086, "edgepipe", timeout=2.5),
            id="influx-ipv6-timeout",
        ),
    ],
)
def test_valid_urls_parse(url: str, expected: SQLiteURL | InfluxURL) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("", id="empty"),
        pytest.param("edgepipe.db", id="bare-path"),
        pytest.param("postgres://host/db", id="other-scheme"),
        pytest.param("sqlite:", id="sqlite-no-slashes"),
        pytest.param("sqlite://", id="sqlite-nothing"),
        pytest.param("sqlite:///", id="sqlite-no-path"),
        pytest.param("sqlite://edgepipe.db", id="sqlite-two-slashes"),
        pytest.param("sqlite:///edgepipe.db?mode=ro", id="sqlite-query"),
        pytest.param("influxdb://", id="influx-nothing"),
        pytest.param("influxdb://host:8086", id="influx-no-database"),
        pytest.param("influxdb://host:8086/", id="influx-empty-database"),
        pytest.param("influxdb://host:8086/a/b", id="influx-two-levels"),
        pytest.param("influxdb://host:8086/edge pipe", id="influx-database-space"),
        pytest.param("influxdb://host:8086/x';DROP", id="influx-database-injection"),
        pytest.param("influxdb://host:notaport/db", id="influx-bad-port"),
        pytest.param("influxdb://host:99999/db", id="influx-port-range"),
        pytest.param("influxdb://host:0/db", id="influx-port-0"),
        pytest.param("influxdb://:8086/db", id="influx-no-host"),
        pytest.param("influxdb://host/db?retries=3", id="influx-unknown-param"),
        pytest.param("influxdb://host/db?token=", id="influx-empty-token"),
        pytest.param("influxdb://host/db?token=a&token=b", id="influx-repeated-param"),
        pytest.param("influxdb://host/db?org=acme", id="influx-org-without-token"),
        pytest.param("influxdb://host/db?token=t", id="influx-token-without-org"),
        pytest.param("influxdb://u:p@host/db?token=t&org=o", id="influx-user-and-token"),
        pytest.param("influxdb://host/db?timeout=0", id="influx-timeout-zero"),
        pytest.param("influxdb://host/db?timeout=abc", id="influx-timeout-text"),
        pytest.param("influxdb://host/db#frag", id="influx-fragment"),
        pytest.param("influxdbs://host/db", id="influx-unknown-scheme"),
    ],
)
def test_bad_urls_raise_config_error_naming_the_key(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_store_url(url)

    assert raised.value.key == "store.url"
    assert "sqlite:///PATH or influxdb://[user:pass@]host:port/DATABASE" in raised.value.allowed


def test_the_error_masks_password_and_token() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_store_url("influxdb://writer:hunter2@host/db?token=t0k3n&retries=1")

    assert "hunter2" not in str(raised.value)
    assert "t0k3n" not in str(raised.value)
    assert "writer:***@host" in str(raised.value)


def test_the_parsed_url_hides_secrets_in_repr() -> None:
    parsed = parse_store_url("influxdb://writer:hunter2@host/db")

    assert "hunter2" not in repr(parsed)


def test_open_store_opens_sqlite_in_memory() -> None:
    store = open_store("sqlite://:memory:")

    assert isinstance(store, SQLiteStore)
    assert isinstance(store, Store)
    assert store.ping()
    store.close()


def test_open_store_refuses_a_bad_url() -> None:
    with pytest.raises(ConfigError):
        open_store("mysql://host/db")
