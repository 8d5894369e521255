"""InfluxStore: the store on InfluxDB: InfluxQL reads over ``/query``, writes over ``/write``
(1.x) or the v2 write API (2.x and 3.x, with a token).

Two paths, chosen by the credentials (decision 0006):

* user and password, or none (1.x): writes are ``POST /write?db=..`` and reads
  ``/query``, both with one plain pooled HTTP client (``urllib3``). The v1 API is the only
  one Debian's InfluxDB 1.6.7 speaks (``/api/v2/write`` is a 404 there).
* a token (2.x, 3.x): writes go through influxdb-client's write API, SYNCHRONOUS (one POST
  per chunk, no batching, no retries: the cloud worker owns retries, its disk buffer and
  the acks), to ``/api/v2/write?org=..&bucket=..&precision=ms``. Reads stay InfluxQL over
  ``/query`` with ``Authorization: Token``, which 2.x (DBRP mapping) and 3.x serve: the
  client's query API speaks Flux only.

Either way the lines come from the hand-written line-protocol encoder here, a few string
joins per point: 2.2 µs per 4-metric reading against 10.9 µs for ``influxdb_client.Point``
(measured here), which is why the client is handed lines, not points.

Writes use ``precision=ms`` (1.6 reads ``us`` as nanoseconds), in chunks of ``batch_size``
lines (5000) per request. Server answers, on either path, map to errors as follows (one
classifier, :meth:`InfluxStore._status_error`; the client's ``ApiException`` carries the
status, body and headers, and its connection errors are urllib3's):

=====================================  ===================================================
answer                                 result
=====================================  ===================================================
204                                    stored
400 (partial write, parse error)       the server kept the good lines; the chunk is resent
                                       in halves (idempotent) down to single lines, which
                                       isolates the refused ones; the other chunks are
                                       still sent, then ``PartialWriteError`` with the
                                       refused lines and the server's text for each
413 (body too large)                   the chunk is split in halves, recursively; a single
                                       line still too large is refused as above
401, 403, 404                          ``StoreConfigError``
408, 429, 5xx, refused, timeout        ``StoreUnavailable`` (the caller retries), with
                                       ``retry_after`` when the server sent Retry-After
=====================================  ===================================================

Layout (one InfluxDB database; tags are ids, so series cardinality is bounded by the fleet):

==============  ====================================  ======================================  ============================
measurement     tags                                  fields                                  time (ms unless said)
==============  ====================================  ======================================  ============================
``readings``    site, device, kind                    one float per metric (its name),        reading ts
                                                      ``seq`` (int)
``aggregates``  site, device, kind, metric            count (int), min, max, mean, std,       window start
                                                      last, anomalies (int), end_ms (int)
``alerts``      site, device, kind, metric,           alert_id (string), score, value,        reading_ts
                severity, state                       reason (string), model_version
                                                      (string)
``health``      site, node                            status (string), ``counters.<name>``    report ts
                                                      (int), ``gauges.<name>`` (float)
``deadletters`` site, reason                          detail, topic, sha256, payload          ts in ns: ts·10⁶ +
                                                      (strings), size (int)                   ``dead_letter_key`` (< 10⁶)
``labels``      site, device, anomaly                 metrics (string, comma-separated),      window start
                                                      end_ms (int)
``catalogs``    of_site                               fingerprint, body (Catalog JSON)         write time
``model_deltas`` kind, site                           seq (int), n (int), node (string)       the delta's created_ms
``models``      kind                                  version (int), n (int), sites, payload  the model's created_ms
                                                      (strings)
==============  ====================================  ======================================  ============================

Identity is InfluxDB's own: a point with the same measurement, tag set and time replaces
the old one, field by field. So a rewrite of a reading, an aggregate or a label leaves one
copy. Alerts: ``alert_id`` is a field (one value per alert would blow up the series count),
so the identity is (tags, reading_ts); the raised and the cleared record of one alert differ
by the ``state`` tag even at the same ``reading_ts``, and one alert policy never raises twice
for one (device, metric) at one instant. Dead letters: many can arrive in one millisecond,
so the time carries a hash of their content in its sub-millisecond nanoseconds.
A device keeps its ``kind``: the kind is part of the series, so a reading rewritten with a
different kind would be a second point.

Queries validate every id before building InfluxQL and quote identifiers (``"..."``) and
strings (``'...'``) anyway. A query against a database that does not exist yet returns
nothing rather than failing, so the dashboard can start before the first write.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlencode

import msgspec
import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException

from pipeline.cloud.store.base import (
    CLOUD_SITE,
    AggregateBucket,
    AlertCount,
    DeviceBucket,
    HealthPoint,
    MergedModelRecord,
    MetricTotals,
    ModelDeltaRecord,
    PartialWriteError,
    ReadingRow,
    StoreConfigError,
    StoreUnavailable,
    check_gauge,
    check_id,
    check_interval,
    check_metric,
    check_ms,
    check_positive,
    dead_letter_key,
    finite,
)
from pipeline.errors import StoreError
from pipeline.protocol.catalog import CatalogMessage
from pipeline.protocol.messages import (
    SCHEMA_VERSION,
    Aggregate,
    Alert,
    AlertData,
    DeadLetter,
    Health,
    Label,
    Reading,
)

__all__ = [
    "EncodedReadings",
    "InfluxStore",
    "escape_field_key",
    "escape_string",
    "escape_tag",
    "quote_ident",
]

NAN = float("nan")
_COUNTER = "counters."
_GAUGE = "gauges."


# -- line protocol -----------------------------------------------------------------------


def _check_lp_text(what: str, text: str) -> None:
    # Line protocol has no escape for a line break, and a trailing backslash would escape
    # the separator that follows: neither can be written safely.
    if not text or "\n" in text or "\r" in text or text.endswith("\\"):
        raise ValueError(f"{what} {text[:80]!r} cannot be written in line protocol")


def escape_tag(text: str) -> str:
    """Escape a tag key or value (also a field key): commas, equals signs and spaces."""
    _check_lp_text("tag", text)
    if "," in text or "=" in text or " " in text:
        text = text.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")
    return text


escape_field_key = escape_tag


def escape_string(text: str) -> str:
    """A string field value, quoted: backslashes and double quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_tag_cache: dict[tuple[str, str], str] = {}


def _tag(field: str, value: str) -> str:
    """Validated (an id) and escaped tag value; cached because ids repeat endlessly."""
    key = (field, value)
    found = _tag_cache.get(key)
    if found is None:
        found = escape_tag(check_id(field, value))
        if len(_tag_cache) > 100_000:
            _tag_cache.clear()
        _tag_cache[key] = found
    return found


def _metric_key(name: str) -> str:
    key = ("metric", name)
    found = _tag_cache.get(key)
    if found is None:
        found = escape_tag(check_metric(name))
        _tag_cache[key] = found
    return found


def _floats(pairs: Sequence[tuple[str, float]]) -> list[str]:
    out = []
    for key, value in pairs:
        number = finite(value)
        if number is not None:
            out.append(f"{key}={number!r}")
    return out


def reading_lines(site: str, readings: Sequence[Reading]) -> list[str]:
    """Line protocol for readings of one site (see the layout in the module docstring)."""
    site_tag = _tag("site", site)
    lines: list[str] = []
    prefixes: dict[tuple[str, str], str] = {}  # the escaped series key, once per device
    append = lines.append
    for r in readings:
        if r.site and r.site != site:
            raise ValueError(f"reading of site {r.site!r} written as site {site!r}")
        prefix = prefixes.get((r.device, r.kind))
        if prefix is None:
            prefix = prefixes[(r.device, r.kind)] = (
                f"readings,device={_tag('device', r.device)},kind={_tag('kind', r.kind)},"
                f"site={site_tag} "
            )
        fields = []
        for name, value in r.metrics.items():
            number = float(value)
            if number - number == 0.0:  # finite: NaN and ±Inf give NaN here
                fields.append(f"{_metric_key(name)}={number!r}")
        fields.append(f"seq={int(r.seq)}i")
        append(f"{prefix}{','.join(fields)} {int(r.ts)}")
    return lines


def aggregate_lines(aggs: Sequence[Aggregate]) -> list[str]:
    lines = []
    for a in aggs:
        fields = [f"count={int(a.count)}i"]
        fields += _floats(
            [("min", a.min), ("max", a.max), ("mean", a.mean), ("std", a.std), ("last", a.last)]
        )
        fields += [f"anomalies={int(a.anomalies)}i", f"end_ms={int(a.end)}i"]
        lines.append(
            f"aggregates,device={_tag('device', a.device)},kind={_tag('kind', a.kind)},"
            f"metric={_tag('metric', a.metric)},site={_tag('site', a.site)} "
            f"{','.join(fields)} {int(a.start)}"
        )
    return lines


def alert_lines(alerts: Sequence[Alert]) -> list[str]:
    lines = []
    for alert in alerts:
        d = alert.data
        fields = [f"alert_id={escape_string(d.alert_id)}"]
        fields += _floats([("score", d.score), ("value", d.value)])
        fields += [
            f"reason={escape_string(d.reason)}",
            f"model_version={escape_string(d.model_version)}",
        ]
        lines.append(
            f"alerts,device={_tag('device', d.device)},kind={_tag('kind', d.kind)},"
            f"metric={_tag('metric', d.metric)},severity={_tag('severity', d.severity)},"
            f"site={_tag('site', d.site)},source={_tag('source', d.source)},state={_tag('state', d.state)} "
            f"{','.join(fields)} {int(d.reading_ts)}"
        )
    return lines


def health_line(h: Health) -> str:
    fields = [f"status={escape_string(h.status)}"]
    fields += [
        f"{escape_field_key(_COUNTER + name)}={int(value)}i" for name, value in h.counters.items()
    ]
    fields += _floats(
        [(escape_field_key(_GAUGE + name), value) for name, value in h.gauges.items()]
    )
    return (
        f"health,node={_tag('node', h.node)},site={_tag('site', h.site)} "
        f"{','.join(fields)} {int(h.ts)}"
    )


def dead_letter_lines_ns(items: Sequence[DeadLetter]) -> list[str]:
    """Dead letters in line protocol with nanosecond times (write with ``precision=ns``)."""
    return [
        f"deadletters,reason={_tag('reason', d.reason)},site={_tag('site', d.site)} "
        f"detail={escape_string(d.detail)},topic={escape_string(d.topic)},size={int(d.size)}i,"
        f"sha256={escape_string(d.sha256)},payload={escape_string(d.payload)} "
        f"{int(d.ts) * 1_000_000 + dead_letter_key(d)}"
        for d in items
    ]


def label_lines(labels: Sequence[Label]) -> list[str]:
    lines = []
    for lab in labels:
        metrics = ",".join(check_metric(m) for m in lab.metrics)
        lines.append(
            f"labels,anomaly={_tag('anomaly', lab.anomaly)},device={_tag('device', lab.device)},"
            f"site={_tag('site', lab.site)} metrics={escape_string(metrics)},end_ms={int(lab.end)}i "
            f"{int(lab.start)}"
        )
    return lines


class EncodedReadings(list[Reading]):
    """Readings of one site together with their line protocol, built ahead of the write.

    Why: building the lines is about a quarter of a write's time. The cloud worker builds
    them with :meth:`InfluxStore.encode_readings` on its decode thread while its writer
    thread waits for the previous write's answer; :meth:`InfluxStore.write_readings` then
    sends them as they are. It is still the list of readings, so a store that knows
    nothing of it (SQLite, a wrapper) writes it like any other.
    """

    __slots__ = ("lines", "site")

    def __init__(self, site: str, readings: Sequence[Reading]) -> None:
        super().__init__(readings)
        self.site = site
        self.lines = reading_lines(site, readings)


# -- InfluxQL ----------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(text: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# InfluxDB times are int64 nanoseconds; a bound outside (e.g. 10**13 ms) is a query error.
_MIN_MS, _MAX_MS = -9_223_372_036_854, 9_223_372_036_854


def _time(op: str, ms: int) -> str:
    """``time <op> <ns>`` for a bound in ms, clamped to what InfluxDB can represent."""
    return f"time {op} {min(max(ms, _MIN_MS), _MAX_MS) * 1_000_000}"


def _where(*conditions: str) -> str:
    parts = [c for c in conditions if c]
    return " WHERE " + " AND ".join(parts) if parts else ""


def _eq(tag: str, value: str) -> str:
    """``"tag" = 'value'`` after checking that ``value`` is an id."""
    return f"{quote_ident(tag)} = {quote_string(check_id(tag, value))}"


_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_UNESCAPED_EQUALS = re.compile(r"(?<!\\)=")
_ESCAPED = re.compile(r"\\([,= ])")


def parse_series_key(key: str) -> tuple[str, dict[str, str]]:
    """``measurement,k=v,...`` (escaped as ``SHOW SERIES`` shows it) → (measurement, tags)."""
    measurement, *pairs = _UNESCAPED_COMMA.split(key)
    tags = {}
    for pair in pairs:
        name, value = (_UNESCAPED_EQUALS.split(pair, maxsplit=1) + [""])[:2]
        tags[_ESCAPED.sub(r"\1", name)] = _ESCAPED.sub(r"\1", value)
    return _ESCAPED.sub(r"\1", measurement), tags


def _alert_where(
    site: str | None, since: int, severities: Sequence[str], kinds: Sequence[str], sources: Sequence[str] = ()
) -> str:
    """``WHERE`` over alerts by site, time, and any of ``severities``, ``kinds`` and ``sources``.

    Points written before alerts carried a source have no ``source`` tag (``= ''`` in
    InfluxQL) and are the edge's.
    """
    any_of = [
        "(" + " OR ".join(_eq(tag, v) for v in values) + ")" if values else ""
        for tag, values in (("severity", severities), ("kind", kinds))
    ]
    if sources:
        terms = [_eq("source", v) for v in sources]
        if "edge" in sources:
            terms.append(f"{quote_ident('source')} = ''")
        any_of.append("(" + " OR ".join(terms) + ")")
    return _where(_eq("site", site) if site is not None else "", *any_of, _time(">=", since))


def _aggregate(row: dict[str, Any]) -> Aggregate:
    """One ``aggregates`` point as the ``Aggregate`` the edge shipped."""
    return Aggregate(
        v=SCHEMA_VERSION,
        site=row["site"],
        device=row["device"],
        kind=row["kind"],
        metric=row["metric"],
        start=row["time"],
        end=_end_ms(row),
        count=int(row["count"]),
        min=_float(row["min"]),
        max=_float(row["max"]),
        mean=_float(row["mean"]),
        std=_float(row["std"]),
        last=_float(row["last"]),
        anomalies=int(row["anomalies"]),
    )


def _end_ms(row: dict[str, Any]) -> int:
    """A window end: ``end_ms``, or ``end`` in points an older edgepipe wrote.

    ``end`` is an InfluxQL keyword (it must be quoted as ``"end"``), so the field was
    renamed; old points keep it, and ``SELECT *`` returns both columns.
    """
    value = row.get("end_ms")
    return int(row["end"] if value is None else value)


def _float(value: Any) -> float:
    """A float column: InfluxDB returns integral floats as JSON ints, and absent as null."""
    return NAN if value is None else float(value)


# -- the store ---------------------------------------------------------------------------


class InfluxStore:
    """The :class:`~pipeline.cloud.store.base.Store` on an InfluxDB server (v1 HTTP API).

    Thread-safe: the ``urllib3`` pool gives each concurrent request its own connection.
    The constructor sends ``CREATE DATABASE`` (idempotent) when no ``token`` is given, with a
    5 s limit. If the server is down it tries again before the first write instead of
    failing, so a writer can start during an outage; a user who may not create databases
    (401/403, e.g. a WRITE-only writer) is assumed to write into an existing one. With a
    ``token`` (a 2.x or 3.x server) the bucket (and, for reads on 2.x, its DBRP mapping) must
    exist; writes go through influxdb-client's v2 write API with ``org`` (which the client
    requires) and queries to ``/query`` with ``Authorization: Token ...``. Nothing is
    retried here: the caller owns the retry policy.
    """

    def __init__(
        self,
        host: str,
        port: int,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        org: str | None = None,
        timeout: float = 30.0,
        batch_size: int = 5000,
        create_database: bool = True,
    ) -> None:
        if token and not org:
            raise ValueError("a token needs an org: the v2 write API requires one")
        self.host, self.port, self.database = host, port, check_id("database", database)
        self.org = org
        self.timeout = timeout
        self.batch_size = check_positive("batch_size", batch_size)
        headers = {"User-Agent": "edgepipe"}
        if token:
            headers["Authorization"] = f"Token {token}"
        elif username is not None:
            creds = f"{username}:{password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(creds).decode()
        self._pool = urllib3.HTTPConnectionPool(
            host,
            port,
            maxsize=4,
            block=False,
            headers=headers,
            timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout),
            retries=False,
        )
        self._where = f"influxdb at {host}:{port}/{database}"
        self._db_ready = bool(token) or not create_database
        self._may_create = bool(create_database and not token)
        self._closed = False
        self._client: InfluxDBClient | None = None
        self._write_api: WriteApi | None = None
        if token and org:
            # No retries and no batching: one POST per chunk, every failure to the caller.
            self._client = InfluxDBClient(
                url=f"http://{host}:{port}",
                token=token,
                org=org,
                timeout=(min(5.0, timeout) * 1000, timeout * 1000),
                retries=False,
                connection_pool_maxsize=4,
            )
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        if not self._db_ready:
            try:  # briefly: opening must not hang on a frozen server
                self._ensure_database(timeout=min(5.0, timeout))
            except StoreUnavailable:
                pass  # tried again before the first write

    def __repr__(self) -> str:
        return f"InfluxStore(host={self.host!r}, port={self.port}, database={self.database!r})"

    # -- HTTP ------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        if self._closed:
            raise StoreError(f"{self._where}: store is closed")
        extra: dict[str, Any] = {}
        if timeout is not None:  # passing timeout=None would mean "wait forever"
            extra["timeout"] = urllib3.Timeout(total=timeout)
        if body is not None:
            extra["headers"] = {**self._pool.headers, "Content-Type": "text/plain; charset=utf-8"}
        try:
            return self._pool.request(method, f"{path}?{urlencode(params)}", body=body, **extra)
        except urllib3.exceptions.HTTPError as exc:
            raise StoreUnavailable(f"{self._where}: {exc}") from exc

    def _fail(self, resp: urllib3.BaseHTTPResponse, what: str) -> StoreError:
        """The error for a non-2xx answer other than 400 and 413."""
        return self._status_error(resp.status, resp.data, resp.headers, what)

    def _status_error(
        self, status: int, data: bytes, headers: Mapping[str, str], what: str
    ) -> StoreError:
        """The error for a non-2xx status other than 400 and 413, on either write path."""
        text = _error_text(data)
        message = f"{self._where}: {what} answered HTTP {status}: {text}"
        if status in (401, 403, 404):
            return StoreConfigError(message)
        if status in (408, 429) or status >= 500:
            return StoreUnavailable(message, _retry_after(headers.get("Retry-After")))
        return StoreError(message)

    def _send(self, body: bytes, precision: str) -> tuple[int, bytes, Mapping[str, str]]:
        """POST one chunk of lines; the answer's (status, body, headers).

        Without a token: ``/write?db=..``. With one: influxdb-client's SYNCHRONOUS write API
        (``/api/v2/write``), whose ``ApiException`` is turned back into the answer it
        carries, so one classifier (:meth:`_status_error`) serves both paths.
        """
        if self._write_api is None:
            resp = self._request(
                "POST", "/write", {"db": self.database, "precision": precision}, body
            )
            return resp.status, resp.data, resp.headers
        if self._closed:
            raise StoreError(f"{self._where}: store is closed")
        try:
            self._write_api.write(
                bucket=self.database,
                org=self.org or "",  # set: a token needs an org (checked when opened)
                record=body,
                write_precision=cast(WritePrecision, precision),  # its constants are plain str
            )
        except ApiException as exc:
            if not exc.status:  # the client's own failure to send (status 0), e.g. TLS
                raise StoreUnavailable(f"{self._where}: /api/v2/write: {exc.reason}") from exc
            data = exc.body.encode() if isinstance(exc.body, str) else bytes(exc.body or b"")
            return int(exc.status), data, exc.headers or {}
        except urllib3.exceptions.HTTPError as exc:  # refused, timed out, reset
            raise StoreUnavailable(f"{self._where}: /api/v2/write: {exc}") from exc
        return 204, b"", {}

    def _ensure_database(self, timeout: float | None = None) -> None:
        if self._db_ready:
            return
        q = f"CREATE DATABASE {quote_ident(self.database)}"
        resp = self._request("POST", "/query", {"q": q}, timeout=timeout)
        if resp.status in (401, 403):
            # Not an admin (the writer should only hold WRITE): assume the database exists;
            # a write will answer 404 if it does not.
            self._db_ready = True
            return
        if resp.status != 200:
            raise self._fail(resp, "CREATE DATABASE")
        errors = [r["error"] for r in _decode(resp.data).get("results", []) if "error" in r]
        if errors:
            raise StoreError(f"{self._where}: CREATE DATABASE failed: {errors[0]}")
        self._db_ready = True

    # -- writes ----------------------------------------------------------------------------

    def _write(self, lines: list[str], precision: str = "ms") -> None:
        if not lines:
            return
        self._ensure_database()
        refused: list[tuple[str, str]] = []
        for i in range(0, len(lines), self.batch_size):
            self._post(lines[i : i + self.batch_size], precision, refused)
        if refused:
            texts = list(dict.fromkeys(why for _, why in refused))
            text = "; ".join(texts)[:4000]
            raise PartialWriteError(text, len(refused), refused)

    def _post(self, lines: list[str], precision: str, refused: list[tuple[str, str]]) -> None:
        """POST ``lines``; refused lines are isolated by bisection into ``refused``.

        A 400 leaves the good lines stored (1.6.7 names only the first bad line or field),
        and a 413 stores nothing; resending halves is safe because writes are idempotent,
        so k bad lines out of n cost at most 1 + 2·k·⌈log2 n⌉ requests, never a loop.
        """
        body = "\n".join(lines).encode()
        status, data, headers = self._send(body, precision)
        if 200 <= status < 300:
            return
        if status in (400, 413):
            if len(lines) == 1:
                why = _error_text(data)
                if status == 413:
                    why = f"point of {len(body)} bytes too large: {why}"
                refused.append((lines[0], why))
                return
            half = len(lines) // 2
            self._post(lines[:half], precision, refused)
            self._post(lines[half:], precision, refused)
            return
        if status == 404 and self._may_create and b"database not found" in data:
            self._db_ready = False  # dropped behind our back: create it and try once more
            self._ensure_database()
            status, data, headers = self._send(body, precision)
            if 200 <= status < 300:
                return
        what = "/write" if self._write_api is None else "/api/v2/write"
        raise self._status_error(status, data, headers, what)

    def encode_readings(self, site: str, readings: Sequence[Reading]) -> EncodedReadings:
        """``readings`` with their line protocol, for a later :meth:`write_readings`.

        Raises ``ValueError`` as :meth:`write_readings` would (an id it cannot write).
        """
        return EncodedReadings(site, readings)

    def write_readings(self, site: str, readings: Sequence[Reading]) -> None:
        if isinstance(readings, EncodedReadings) and readings.site == site:
            self._write(readings.lines)
        else:
            self._write(reading_lines(site, readings))

    def write_aggregates(self, aggs: Sequence[Aggregate]) -> None:
        self._write(aggregate_lines(aggs))

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        self._write(alert_lines(alerts))

    def write_health(self, h: Health) -> None:
        self._write([health_line(h)])

    def write_dead_letters(self, items: Sequence[DeadLetter]) -> None:
        self._write(dead_letter_lines_ns(items), precision="ns")

    def write_labels(self, labels: Sequence[Label]) -> None:
        self._write(label_lines(labels))

    def write_catalogs(self, catalogs: Sequence[CatalogMessage]) -> None:
        now = time.time_ns() // 1_000_000
        self._write(
            [
                f"catalogs,of_site={_tag('site', c.site)} fingerprint={escape_string(c.fingerprint)},"
                f"body={escape_string(msgspec.json.encode(c).decode())} {now}"
                for c in catalogs
            ]
        )

    def latest_catalogs(self) -> dict[str, CatalogMessage]:
        # tag "of_site", not "site": a catalogue alone does not make a site one with data
        q = 'SELECT last("body") AS body FROM "catalogs" GROUP BY "of_site"'
        return {
            tags["of_site"]: msgspec.json.decode(row["body"], type=CatalogMessage)
            for tags, row in self._rows(q)
            if row.get("body")
        }

    def write_model_delta(self, record: ModelDeltaRecord) -> None:
        self._write(
            [
                f"model_deltas,kind={_tag('kind', record.kind)},site={_tag('site', record.site)} "
                f"seq={int(record.seq)}i,n={int(record.n)}i,"
                f"node={escape_string(check_id('node', record.node))} {int(record.ts)}"
            ]
        )

    def write_merged_model(self, record: MergedModelRecord) -> None:
        sites = ",".join(check_id("site", s) for s in record.sites)
        self._write(
            [
                f"models,kind={_tag('kind', record.kind)} version={int(record.version)}i,"
                f"n={int(record.n)}i,sites={escape_string(sites)},"
                f"payload={escape_string(str(record.payload))} {int(record.ts)}"
            ]
        )

    def latest_model_deltas(self) -> list[ModelDeltaRecord]:
        q = 'SELECT * FROM "model_deltas" GROUP BY "kind", "site" ORDER BY time DESC LIMIT 1'
        records = [
            ModelDeltaRecord(
                tags["kind"], tags["site"], row["node"], int(row["seq"]), row["time"], int(row["n"])
            )
            for tags, row in self._rows(q)
        ]
        records.sort(key=lambda r: (r.kind, r.site))
        return records

    def model_site_weights(self) -> dict[tuple[str, str], int]:
        q = 'SELECT SUM("n") AS "n" FROM "model_deltas" GROUP BY "kind", "site"'
        return {(tags["kind"], tags["site"]): int(row["n"]) for tags, row in self._rows(q)}

    def latest_merged_models(self) -> list[MergedModelRecord]:
        q = 'SELECT * FROM "models" GROUP BY "kind" ORDER BY time DESC LIMIT 1'
        records = [
            MergedModelRecord(
                tags["kind"],
                int(row["version"]),
                row["time"],
                int(row["n"]),
                tuple(row["sites"].split(",")) if row["sites"] else (),
                row["payload"],
            )
            for tags, row in self._rows(q)
        ]
        records.sort(key=lambda r: r.kind)
        return records

    # -- queries ---------------------------------------------------------------------------

    def _query(self, q: str) -> list[dict[str, Any]]:
        """Run one InfluxQL statement; return its series (empty if the database is missing)."""
        resp = self._request("GET", "/query", {"db": self.database, "q": q, "epoch": "ms"})
        if resp.status != 200:
            raise self._fail(resp, "/query")
        results = _decode(resp.data).get("results") or [{}]
        result = results[0]
        error = result.get("error")
        if error:
            if error.startswith("database not found"):
                return []
            raise StoreError(f"{self._where}: query failed: {error}: {q}")
        series: list[dict[str, Any]] = result.get("series") or []
        if result.get("partial") or any(s.get("partial") for s in series):
            raise StoreError(
                f"{self._where}: result truncated by the server's max-row-limit; "
                f"narrow the time range or downsample: {q}"
            )
        return series

    def _rows(self, q: str) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
        """(series tags, row as column → value) for every row of the statement's result."""
        for s in self._query(q):
            tags = s.get("tags") or {}
            columns = s["columns"]
            for values in s.get("values") or []:
                yield tags, dict(zip(columns, values, strict=True))

    def count_readings(self, site: str | None = None) -> int:
        where = _where(_eq("site", site) if site is not None else "")
        total = 0
        for _, row in self._rows(f'SELECT COUNT("seq") FROM "readings"{where}'):
            total += int(row["count"])
        return total

    def query_readings(
        self,
        site: str,
        device: str,
        metric: str,
        start_ms: int,
        end_ms: int,
        every_ms: int | None = None,
    ) -> list[ReadingRow]:
        start, end = check_interval(start_ms, end_ms)
        field = quote_ident(check_metric(metric))
        where = _where(
            _eq("site", site), _eq("device", device), _time(">=", start), _time("<", end)
        )
        if every_ms is None:
            q = f'SELECT {field} FROM "readings"{where}'
            return [
                ReadingRow(row["time"], v, v, v, 1)
                for _, row in self._rows(q)
                for v in (float(row[metric]),)
            ]
        every = check_positive("every_ms", every_ms)
        q = (
            f'SELECT MEAN({field}) AS "mean", MIN({field}) AS "min", MAX({field}) AS "max", '
            f'COUNT({field}) AS "count" FROM "readings"{where} '
            f"GROUP BY time({every}ms) fill(none)"
        )
        return [
            ReadingRow(
                row["time"], float(row["mean"]), float(row["min"]), float(row["max"]), row["count"]
            )
            for _, row in self._rows(q)
        ]

    def query_aggregates(
        self, site: str, device: str, metric: str, start_ms: int, end_ms: int
    ) -> list[Aggregate]:
        start, end = check_interval(start_ms, end_ms)
        where = _where(
            _eq("site", site),
            _eq("device", device),
            _eq("metric", metric),
            _time(">=", start),
            _time("<", end),
        )
        return [
            _aggregate(row)
            for _, row in self._rows(f'SELECT * FROM "aggregates"{where}')
        ]

    def query_site_aggregates(self, site: str, start_ms: int, end_ms: int, limit: int = 1_000_000) -> list[Aggregate]:
        start, end = check_interval(start_ms, end_ms)
        where = _where(_eq("site", site), _time(">=", start), _time("<", end))
        rows = [
            _aggregate(row)
            for _, row in self._rows(f'SELECT * FROM "aggregates"{where} LIMIT {check_positive("limit", limit)}')
        ]
        rows.sort(key=lambda a: (a.start, a.device, a.metric))
        return rows

    def query_aggregate_buckets(
        self, site: str, device: str, metric: str, start_ms: int, end_ms: int, every_ms: int
    ) -> list[AggregateBucket]:
        start, end = check_interval(start_ms, end_ms)
        every = check_positive("every_ms", every_ms)
        inner_where = _where(
            _eq("site", site),
            _eq("device", device),
            _eq("metric", metric),
            _time(">=", start),
            _time("<", end),
        )
        # InfluxQL 1.x has no arithmetic inside an aggregate: the subquery weighs the means.
        q = (
            'SELECT SUM("weighted") / SUM("count") AS "mean", SUM("count") AS "count", '
            'MIN("min") AS "min", MAX("max") AS "max", SUM("anomalies") AS "anomalies" '
            'FROM (SELECT "mean" * "count" AS "weighted", "count", "min", "max", "anomalies" '
            f'FROM "aggregates"{inner_where}){_where(_time(">=", start), _time("<", end))} '
            f"GROUP BY time({every}ms) fill(none)"
        )
        return [
            AggregateBucket(
                row["time"],
                int(row["count"] or 0),
                _float(row["min"]),
                _float(row["max"]),
                _float(row["mean"]),
                int(row["anomalies"] or 0),
            )
            for _, row in self._rows(q)
        ]

    def query_kind_buckets(
        self, site: str, kind: str, metric: str, start_ms: int, end_ms: int, every_ms: int
    ) -> list[DeviceBucket]:
        start, end = check_interval(start_ms, end_ms)
        every = check_positive("every_ms", every_ms)
        inner_where = _where(
            _eq("site", site), _eq("kind", kind), _eq("metric", metric), _time(">=", start), _time("<", end)
        )
        # As in query_aggregate_buckets; the inner GROUP BY keeps the device tag for the outer one.
        q = (
            'SELECT SUM("weighted") / SUM("count") AS "mean", SUM("count") AS "count" '
            'FROM (SELECT "mean" * "count" AS "weighted", "count" '
            f'FROM "aggregates"{inner_where} GROUP BY "device")'
            f'{_where(_time(">=", start), _time("<", end))} '
            f'GROUP BY time({every}ms), "device" fill(none)'
        )
        found = [
            DeviceBucket(row["time"], tags["device"], _float(row["mean"]), int(row["count"] or 0))
            for tags, row in self._rows(q)
        ]
        found.sort(key=lambda b: (b.ts, b.device))
        return found

    def query_alerts(
        self,
        site: str | None,
        since_ms: int,
        limit: int = 100,
        severities: Sequence[str] = (),
        kinds: Sequence[str] = (),
        sources: Sequence[str] = (),
    ) -> list[AlertData]:
        since = check_ms("since_ms", since_ms)
        n = check_positive("limit", limit)
        where = _alert_where(site, since, severities, kinds, sources)
        q = f'SELECT * FROM "alerts"{where} ORDER BY time DESC LIMIT {n}'
        alerts = [
            AlertData(
                v=SCHEMA_VERSION,
                alert_id=row["alert_id"],
                site=row["site"],
                device=row["device"],
                kind=row["kind"],
                metric=row["metric"],
                state=row["state"],
                severity=row["severity"],
                score=_float(row["score"]),
                value=_float(row["value"]),
                reading_ts=row["time"],
                reason=row["reason"],
                model_version=row["model_version"],
                source=row.get("source") or "edge",  # rows written before the tag were the edge's
            )
            for _, row in self._rows(q)
        ]
        alerts.sort(key=lambda a: (-a.reading_ts, a.site, a.alert_id, a.state))
        return alerts

    def count_alerts(
        self,
        site: str | None,
        since_ms: int,
        severities: Sequence[str] = (),
        kinds: Sequence[str] = (),
        sources: Sequence[str] = (),
    ) -> int:
        where = _alert_where(site, check_ms("since_ms", since_ms), severities, kinds, sources)
        rows = self._rows(f'SELECT COUNT("alert_id") AS "n" FROM "alerts"{where}')
        return sum(int(row["n"] or 0) for _, row in rows)

    def alert_counts(
        self, start_ms: int, end_ms: int, every_ms: int, site: str | None = None
    ) -> list[AlertCount]:
        start, end = check_interval(start_ms, end_ms)
        every = check_positive("every_ms", every_ms)
        where = _where(_eq("site", site) if site is not None else "", _time(">=", start),
                       _time("<", end))  # fmt: skip
        q = (
            f'SELECT COUNT("alert_id") AS "n" FROM "alerts"{where} '
            f'GROUP BY time({every}ms), "site", "severity", "state" fill(none)'
        )
        counts = [
            AlertCount(row["time"], tags["site"], tags["severity"], tags["state"], int(row["n"]))
            for tags, row in self._rows(q)
            if row["n"]
        ]
        counts.sort(key=lambda c: (c.ts, c.site, c.severity, c.state))
        return counts

    def query_dead_letters(
        self, site: str | None, since_ms: int, limit: int = 100
    ) -> list[DeadLetter]:
        since = check_ms("since_ms", since_ms)
        n = check_positive("limit", limit)
        where = _where(_eq("site", site) if site is not None else "", _time(">=", since))
        q = f'SELECT * FROM "deadletters"{where} ORDER BY time DESC LIMIT {n}'
        return [
            DeadLetter(
                v=SCHEMA_VERSION,
                site=row["site"],
                ts=row["time"],
                reason=row["reason"],
                detail=row["detail"],
                topic=row["topic"],
                size=int(row["size"]),
                sha256=row["sha256"],
                payload=row["payload"],
            )
            for _, row in self._rows(q)
        ]

    def query_labels(
        self, site: str, device: str | None, start_ms: int, end_ms: int
    ) -> list[Label]:
        start, end = check_interval(start_ms, end_ms)
        where = _where(
            _eq("site", site),
            _eq("device", device) if device is not None else "",
            _time("<", end),
            f'("end_ms" >= {start} OR "end" >= {start})',  # "end": older points
        )
        labels = [
            Label(
                v=SCHEMA_VERSION,
                site=row["site"],
                device=row["device"],
                metrics=row["metrics"].split(",") if row["metrics"] else [],
                anomaly=row["anomaly"],
                start=row["time"],
                end=_end_ms(row),
            )
            for _, row in self._rows(f'SELECT * FROM "labels"{where}')
        ]
        labels.sort(key=lambda lab: (lab.start, lab.device, lab.anomaly))
        return labels

    def latest_health(self) -> list[Health]:
        q = 'SELECT * FROM "health" GROUP BY "site", "node" ORDER BY time DESC LIMIT 1'
        reports = []
        for tags, row in self._rows(q):
            counters = {
                k[len(_COUNTER) :]: int(v)
                for k, v in row.items()
                if k.startswith(_COUNTER) and v is not None
            }
            gauges = {
                k[len(_GAUGE) :]: float(v)
                for k, v in row.items()
                if k.startswith(_GAUGE) and v is not None
            }
            reports.append(
                Health(
                    v=SCHEMA_VERSION,
                    site=tags["site"],
                    node=tags["node"],
                    ts=row["time"],
                    status=row["status"],
                    counters=counters,
                    gauges=gauges,
                )
            )
        reports.sort(key=lambda h: (h.site, h.node))
        return reports

    def health_history(
        self,
        start_ms: int,
        end_ms: int,
        every_ms: int,
        gauges: Sequence[str],
        site: str | None = None,
    ) -> list[HealthPoint]:
        start, end = check_interval(start_ms, end_ms)
        every = check_positive("every_ms", every_ms)
        names = [check_gauge(g) for g in gauges]
        means = "".join(
            f", MEAN({quote_ident(_GAUGE + g)}) AS {quote_ident(f'g{i}')}"
            for i, g in enumerate(names)
        )
        where = _where(_eq("site", site) if site is not None else "", _time(">=", start),
                       _time("<", end))  # fmt: skip
        q = (
            f'SELECT COUNT("status") AS "reports"{means} FROM "health"{where} '
            f'GROUP BY time({every}ms), "site", "node" fill(none)'
        )
        points = [
            HealthPoint(
                tags["site"],
                tags["node"],
                row["time"],
                int(row["reports"] or 0),
                {g: float(row[f"g{i}"]) for i, g in enumerate(names) if row[f"g{i}"] is not None},
            )
            for tags, row in self._rows(q)
            if row["reports"]
        ]
        points.sort(key=lambda p: (p.site, p.node, p.ts))
        return points

    def sites(self) -> list[str]:
        found = {row["value"] for _, row in self._rows('SHOW TAG VALUES WITH KEY = "site"')}
        found.discard(CLOUD_SITE)
        return sorted(found)

    def devices(self, site: str) -> list[tuple[str, str]]:
        q = f'SHOW SERIES FROM "readings", "aggregates"{_where(_eq("site", site))}'
        pairs = set()
        for _, row in self._rows(q):
            _, tags = parse_series_key(row["key"])
            if "device" in tags and "kind" in tags:
                pairs.add((tags["device"], tags["kind"]))
        return sorted(pairs)

    def last_seen(self, site: str) -> list[tuple[str, str, int]]:
        where = _where(_eq("site", site))
        newest: dict[tuple[str, str], int] = {}
        for q in (
            f'SELECT LAST("seq") FROM "readings"{where} GROUP BY "device", "kind"',
            f'SELECT LAST("count") FROM "aggregates"{where} GROUP BY "device", "kind"',
        ):
            for tags, row in self._rows(q):
                key = (tags["device"], tags["kind"])
                newest[key] = max(newest.get(key, row["time"]), row["time"])
        return [(device, kind, ts) for (device, kind), ts in sorted(newest.items())]

    def metric_totals(self, site: str, start_ms: int, end_ms: int) -> list[MetricTotals]:
        start, end = check_interval(start_ms, end_ms)
        where = _where(_eq("site", site), _time(">=", start), _time("<", end))
        totals: dict[str, list[int]] = {}
        q = (
            'SELECT SUM("count") AS "readings", SUM("anomalies") AS "anomalies" '
            f'FROM "aggregates"{where} GROUP BY "metric"'
        )
        for tags, row in self._rows(q):
            totals[tags["metric"]] = [int(row["readings"] or 0), int(row["anomalies"] or 0), 0]
        # COUNT(*) answers one column per field: count_<metric>, and count_seq to skip.
        for _, row in self._rows(f'SELECT COUNT(*) FROM "readings"{where}'):
            for column, value in row.items():
                metric = column.removeprefix("count_")
                if column.startswith("count_") and metric != "seq" and value:
                    totals.setdefault(metric, [0, 0, 0])[2] = int(value)
        return [MetricTotals(m, *totals[m]) for m in sorted(totals)]

    def ping(self) -> bool:
        if self._closed:
            return False
        try:
            resp = self._pool.request("GET", "/ping", timeout=urllib3.Timeout(total=2.0))
        except urllib3.exceptions.HTTPError:
            return False
        return 200 <= resp.status < 300

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()
            if self._write_api is not None:
                self._write_api.close()
            if self._client is not None:
                self._client.close()


def _decode(data: bytes) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise StoreError(f"InfluxDB answered with invalid JSON: {data[:200]!r}") from exc
    if not isinstance(decoded, dict):
        raise StoreError(f"InfluxDB answered with unexpected JSON: {data[:200]!r}")
    return decoded


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(data: bytes) -> str:
    """The ``error`` of InfluxDB's JSON answer, else the body as text (shortened)."""
    try:
        decoded = json.loads(data)
    except ValueError:
        return data.decode(errors="replace").strip()[:2000]
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return str(decoded["error"])[:2000]
    return data.decode(errors="replace").strip()[:2000]
