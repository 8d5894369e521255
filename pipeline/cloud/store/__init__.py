"""The store: one interface (:class:`Store`) and two backends, chosen by URL.

=============================================================  =============================
URL                                                            backend
=============================================================  =============================
``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``  :class:`SQLiteStore`
``sqlite://:memory:``                                          :class:`SQLiteStore`, in RAM
``influxdb://[user:pass@]host[:port]/DATABASE``                :class:`InfluxStore` (v1 API)
``influxdb://host:port/BUCKET?token=...&org=...``              the same, for 2.x and 3.x
=============================================================  =============================

The InfluxDB port defaults to 8086. Query parameters: ``token`` and ``org``, together (2.x
and 3.x: writes go to the v2 write API, ``/api/v2/write?org=..&bucket=..``, through
influxdb-client, which requires an org; 3.x ignores its value; reads are InfluxQL on
``/query`` with ``Authorization: Token ...``) and ``timeout`` (seconds per request,
default 30). User names,
passwords and tokens may be percent-encoded. Anything else is a
:class:`~pipeline.errors.ConfigError` naming ``store.url``, with secrets masked.

Example::

    store = open_store("sqlite:///edgepipe.db")
    store.write_readings("farm", readings)
    store.count_readings("farm")
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.cloud.store.base import (
    HEALTH_RETENTION_MS,
    AggregateBucket,
    AlertCount,
    DeviceBucket,
    HealthPoint,
    MergedModelRecord,
    MetricTotals,
    ModelDeltaRecord,
    PartialWriteError,
    ReadingRow,
    Store,
    StoreConfigError,
    StoreUnavailable,
)
from pipeline.cloud.store.influx import InfluxStore
from pipeline.cloud.store.sqlite import SQLiteStore
from pipeline.errors import ConfigError
from pipeline.protocol.topics import is_valid_id

__all__ = [
    "HEALTH_RETENTION_MS",
    "AggregateBucket",
    "AlertCount",
    "DeviceBucket",
    "HealthPoint",
    "InfluxStore",
    "InfluxURL",
    "MergedModelRecord",
    "MetricTotals",
    "ModelDeltaRecord",
    "PartialWriteError",
    "ReadingRow",
    "SQLiteStore",
    "SQLiteURL",
    "STORE_URL_HELP",
    "Store",
    "StoreConfigError",
    "StoreUnavailable",
    "open_store",
    "parse_store_url",
]

STORE_URL_HELP = "sqlite:///PATH or influxdb://[user:pass@]host:port/DATABASE"
INFLUX_DEFAULT_PORT = 8086


@dataclass(frozen=True, slots=True)
class SQLiteURL:
    """A parsed ``sqlite://`` URL: a file path (relative to the working directory) or ``:memory:``."""

    path: str


@dataclass(frozen=True, slots=True)
class InfluxURL:
    """A parsed ``influxdb://`` URL. Secrets are left out of ``repr``."""

    host: str
    port: int
    database: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    org: str | None = None
    timeout: float = 30.0


def _masked(url: str) -> str:
    """``url`` with its password and token replaced by ``***``, for error messages."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"([?&]token=)[^&#]*", r"\1***", url)


class _BadURL(ValueError):
    """Why a store URL was refused; turned into ``ConfigError`` by :func:`parse_store_url`."""


def parse_store_url(url: str, key: str = "store.url") -> SQLiteURL | InfluxURL:
    """Parse a store URL (see the module docstring) or raise ``ConfigError`` naming ``key``.

    The error's value is the URL with password and token masked; ``allowed`` adds why.
    """
    try:
        if isinstance(url, str) and url.startswith("sqlite://"):
            return _parse_sqlite(url[len("sqlite://") :])
        if isinstance(url, str) and url.startswith("influxdb://"):
            return _parse_influx(url)
        raise _BadURL("unknown scheme")
    except _BadURL as exc:
        masked = _masked(url) if isinstance(url, str) else url
        raise ConfigError(key=key, value=masked, allowed=f"{STORE_URL_HELP} ({exc})") from None


def _parse_sqlite(rest: str) -> SQLiteURL:
    if rest in (":memory:", "/:memory:"):
        return SQLiteURL(":memory:")
    if not rest.startswith("/") or len(rest) < 2:
        raise _BadURL("sqlite needs three slashes and a path: sqlite:///file.db")
    if "?" in rest or "#" in rest:
        raise _BadURL("sqlite URLs take no query string")
    return SQLiteURL(rest[1:])


def _parse_influx(url: str) -> InfluxURL:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _BadURL("bad host or port") from None
    if not parts.hostname:
        raise _BadURL("no host")
    if port == 0:
        raise _BadURL("port 0")
    database = parts.path[1:] if parts.path.startswith("/") else ""
    if not is_valid_id(database):
        raise _BadURL("the path must be one database name, ^[A-Za-z0-9_-]{1,64}$")
    if parts.fragment:
        raise _BadURL("no #fragment allowed")
    try:
        params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise _BadURL("bad query string") from None
    unknown = set(params) - {"token", "org", "timeout"}
    if unknown:
        raise _BadURL(f"unknown parameter {sorted(unknown)[0]!r}; allowed: token, org, timeout")
    if any(len(values) != 1 or not values[0] for values in params.values()):
        raise _BadURL("each parameter once, with a value")
    token = params.get("token", [None])[0]  # parse_qs has percent-decoded it
    org = params.get("org", [None])[0]
    if org and not token:
        raise _BadURL("org is only used with token")
    if token and not org:
        raise _BadURL(
            "token needs org (the v2 write API requires one; InfluxDB 3.x ignores its value)"
        )
    if token and parts.username is not None:
        raise _BadURL("give either user:pass or token, not both")
    timeout = 30.0
    if "timeout" in params:
        try:
            timeout = float(params["timeout"][0])
        except ValueError:
            raise _BadURL("timeout must be a number of seconds") from None
        if not (math.isfinite(timeout) and timeout > 0):
            raise _BadURL("timeout must be > 0")
    return InfluxURL(
        host=parts.hostname,
        port=INFLUX_DEFAULT_PORT if port is None else port,
        database=database,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        token=token,
        org=org,
        timeout=timeout,
    )


def open_store(url: str) -> Store:
    """Open the store ``url`` names: ``SQLiteStore`` or ``InfluxStore``.

    SQLite opens (and creates) the file now. InfluxDB creates the database if it can reach
    the server now, otherwise before the first write: a writer may start during an outage.
    """
    target = parse_store_url(url)
    if isinstance(target, SQLiteURL):
        return SQLiteStore(target.path)
    return InfluxStore(
        target.host,
        target.port,
        target.database,
        username=target.username,
        password=target.password,
        token=target.token,
        org=target.org,
        timeout=target.timeout,
    )
