"""SQLiteStore: the store in one SQLite file (stdlib ``sqlite3``), the default for ``edgepipe demo``.

Why SQLite: the demo and the tests need a store with no server to run. It keeps the
same promises as InfluxDB (``base.py``): the primary keys are the record identities, and
every write is an upsert, so a resent batch leaves one copy with the newest values.

* **WAL journal**, so the dashboard (another process, or another ``SQLiteStore`` on the same
  file) reads while the cloud writer writes; ``synchronous=NORMAL``, which in WAL mode
  survives application crashes (a power loss may roll back the last commits, which the
  edge resends because it only deletes what the cloud acknowledged).
* **Threads**: one connection per ``SQLiteStore``, opened with ``check_same_thread=False``
  and guarded by a lock, so one instance may be shared by threads (the writer thread, or
  Streamlit sessions through ``st.cache_resource``); they take turns. Readers that must not
  wait for the writer open their own ``SQLiteStore``.
* **One transaction per write call**, rows sent with ``executemany``.

Schema (``PRAGMA user_version = 3``; times in Unix ms; an older file is migrated when
opened: version 1's ``"end"`` columns are renamed ``end_ms``, and version 2's alerts gain
``source``, ``edge`` for the rows already there):

====================  ========================================  ==============================
table                 primary key                               other columns
====================  ========================================  ==============================
``readings``          site, device, ts                          kind, seq
``reading_values``    site, device, metric, ts                  value (one row per metric)
``aggregates``        site, device, metric, start               kind, end_ms, count, min, max,
                                                                mean, std, last, anomalies
``alerts``            site, alert_id, state                     device, kind, metric,
                                                                severity, score, value,
                                                                reading_ts, reason,
                                                                model_version, source
``health``            site, node, ts                            status, counters, gauges (JSON)
``dead_letters``      site, reason, ts, key                     detail, topic, size, sha256,
                                                                payload
``labels``            site, device, anomaly, start              end_ms, metrics (comma-separated)
``catalogs``          site                                      fingerprint, body (Catalog JSON)
``model_deltas``      kind, site, seq                           node, ts, n (applied deltas)
``models``            kind, version                             ts, n, sites, payload (merged)
``sites``             site                                      (every site with any record)
``devices``           site, device, kind                        (from readings and aggregates)
====================  ========================================  ==============================

The primary keys serve the dashboard's range queries (site, device, metric, time); alerts
and dead letters also have an index on (site, time) and on time. Downsampling groups by
``ts - ts mod every_ms`` (floored, so buckets line up with InfluxDB's ``GROUP BY time``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec

from pipeline.cloud.store.base import (
    CLOUD_SITE,
    HEALTH_RETENTION_MS,
    AggregateBucket,
    AlertCount,
    DeviceBucket,
    HealthPoint,
    MergedModelRecord,
    MetricTotals,
    ModelDeltaRecord,
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

__all__ = ["SQLiteStore"]

SCHEMA_USER_VERSION = 3
# Version 1 named the window end ``"end"``; version 2 calls it ``end_ms`` (``end`` is a
# keyword in InfluxQL, and one name in both backends keeps hand-written queries portable).
_MIGRATIONS = {
    2: [
        'ALTER TABLE aggregates RENAME COLUMN "end" TO end_ms',
        'ALTER TABLE labels RENAME COLUMN "end" TO end_ms',
    ],
    # Version 3: who detected an alert (docs/protocol.md, Alert ``source``); older rows were the edge's.
    3: ["ALTER TABLE alerts ADD COLUMN source TEXT NOT NULL DEFAULT 'edge'"],
}
NAN = float("nan")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    site TEXT NOT NULL, device TEXT NOT NULL, ts INTEGER NOT NULL,
    kind TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (site, device, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reading_values (
    site TEXT NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL, ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (site, device, metric, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aggregates (
    site TEXT NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL, start INTEGER NOT NULL,
    kind TEXT NOT NULL, end_ms INTEGER NOT NULL, count INTEGER NOT NULL,
    min REAL, max REAL, mean REAL, std REAL, last REAL, anomalies INTEGER NOT NULL,
    PRIMARY KEY (site, device, metric, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    site TEXT NOT NULL, alert_id TEXT NOT NULL, state TEXT NOT NULL,
    device TEXT NOT NULL, kind TEXT NOT NULL, metric TEXT NOT NULL, severity TEXT NOT NULL,
    score REAL, value REAL, reading_ts INTEGER NOT NULL, reason TEXT NOT NULL,
    model_version TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'edge',
    PRIMARY KEY (site, alert_id, state)
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (reading_ts);
CREATE INDEX IF NOT EXISTS alerts_by_site_time ON alerts (site, reading_ts);
CREATE TABLE IF NOT EXISTS health (
    site TEXT NOT NULL, node TEXT NOT NULL, ts INTEGER NOT NULL, status TEXT NOT NULL,
    counters TEXT NOT NULL, gauges TEXT NOT NULL,
    PRIMARY KEY (site, node, ts)
);
CREATE INDEX IF NOT EXISTS health_by_time ON health (ts);
CREATE TABLE IF NOT EXISTS dead_letters (
    site TEXT NOT NULL, reason TEXT NOT NULL, ts INTEGER NOT NULL, key INTEGER NOT NULL,
    detail TEXT NOT NULL, topic TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (site, reason, ts, key)
);
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (ts, key);
CREATE INDEX IF NOT EXISTS dead_letters_by_site_time ON dead_letters (site, ts, key);
CREATE TABLE IF NOT EXISTS labels (
    site TEXT NOT NULL, device TEXT NOT NULL, anomaly TEXT NOT NULL, start INTEGER NOT NULL,
    end_ms INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (site, device, anomaly, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_deltas (
    kind TEXT NOT NULL, site TEXT NOT NULL, seq INTEGER NOT NULL,
    node TEXT NOT NULL, ts INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (kind, site, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (
    kind TEXT NOT NULL, version INTEGER NOT NULL,
    ts INTEGER NOT NULL, n INTEGER NOT NULL, sites TEXT NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (kind, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sites (site TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalogs (
    site TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    site TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
    PRIMARY KEY (site, device, kind)
) WITHOUT ROWID;
"""

_UPSERT_READING = """
INSERT INTO readings (site, device, ts, kind, seq) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (site, device, ts) DO UPDATE SET kind = excluded.kind, seq = excluded.seq
"""
_UPSERT_VALUE = """
INSERT INTO reading_values (site, device, metric, ts, value) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (site, device, metric, ts) DO UPDATE SET value = excluded.value
"""
# A float left out as non-finite keeps the stored value, as a field InfluxDB did not get.
_UPSERT_AGGREGATE = """
INSERT INTO aggregates
    (site, device, metric, start, kind, end_ms, count, min, max, mean, std, last, anomalies)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (site, device, metric, start) DO UPDATE SET
    kind = excluded.kind, end_ms = excluded.end_ms, count = excluded.count,
    min = coalesce(excluded.min, min), max = coalesce(excluded.max, max),
    mean = coalesce(excluded.mean, mean), std = coalesce(excluded.std, std),
    last = coalesce(excluded.last, last), anomalies = excluded.anomalies
"""
_UPSERT_ALERT = """
INSERT INTO alerts (site, alert_id, state, device, kind, metric, severity, score, value,
                    reading_ts, reason, model_version, source)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (site, alert_id, state) DO UPDATE SET
    device = excluded.device, kind = excluded.kind, metric = excluded.metric,
    severity = excluded.severity, score = coalesce(excluded.score, score),
    value = coalesce(excluded.value, value), reading_ts = excluded.reading_ts,
    reason = excluded.reason, model_version = excluded.model_version, source = excluded.source
"""


_catalog_encoder = msgspec.json.Encoder()
_catalog_decoder = msgspec.json.Decoder(CatalogMessage)


class SQLiteStore:
    """The :class:`~pipeline.cloud.store.base.Store` in a SQLite file (or ``":memory:"``)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreConfigError(
                    f"sqlite {self.path}: cannot create its folder: {exc}"
                ) from exc
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreConfigError(f"sqlite {self.path}: cannot open: {exc}") from exc
        self._closed = False
        with self._locked() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_USER_VERSION:
                raise StoreConfigError(
                    f"sqlite {self.path}: schema version {version} is newer than this "
                    f"edgepipe ({SCHEMA_USER_VERSION})"
                )
            with conn:
                _migrate(conn, version)
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_USER_VERSION}")

    def __repr__(self) -> str:
        return f"SQLiteStore(path={self.path!r})"

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, held by this thread; sqlite3 errors mapped to the store's."""
        with self._lock:
            if self._closed:
                raise StoreError(f"sqlite {self.path}: store is closed")
            try:
                yield self._conn
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StoreUnavailable(f"sqlite {self.path}: {exc}") from exc
                raise StoreError(f"sqlite {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite {self.path}: {exc}") from exc

    def _write(self, statements: Sequence[tuple[str, Sequence[tuple[object, ...]]]]) -> None:
        with self._locked() as conn, conn:  # one transaction: all or nothing
            for sql, rows in statements:
                if rows:
                    conn.executemany(sql, rows)

    # -- writes ----------------------------------------------------------------------------

    def write_readings(self, site: str, readings: Sequence[Reading]) -> None:
        check_id("site", site)
        rows, values, devices = [], [], set()
        for r in readings:
            if r.site and r.site != site:
                raise ValueError(f"reading of site {r.site!r} written as site {site!r}")
            device, kind = check_id("device", r.device), check_id("kind", r.kind)
            ts = int(r.ts)
            rows.append((site, device, ts, kind, int(r.seq)))
            devices.add((site, device, kind))
            for name, value in r.metrics.items():
                number = finite(value)
                check_metric(name)
                if number is not None:
                    values.append((site, device, name, ts, number))
        self._write(
            [
                (_UPSERT_READING, rows),
                (_UPSERT_VALUE, values),
                ("INSERT OR IGNORE INTO devices VALUES (?, ?, ?)", sorted(devices)),
                ("INSERT OR IGNORE INTO sites VALUES (?)", [(site,)] if rows else []),
            ]
        )

    def write_aggregates(self, aggs: Sequence[Aggregate]) -> None:
        rows = [
            (
                check_id("site", a.site),
                check_id("device", a.device),
                check_id("metric", a.metric),
                int(a.start),
                check_id("kind", a.kind),
                int(a.end),
                int(a.count),
                finite(a.min),
                finite(a.max),
                finite(a.mean),
                finite(a.std),
                finite(a.last),
                int(a.anomalies),
            )
            for a in aggs
        ]
        self._write(
            [
                (_UPSERT_AGGREGATE, rows),
                (
                    "INSERT OR IGNORE INTO devices VALUES (?, ?, ?)",
                    sorted({(r[0], r[1], r[4]) for r in rows}),
                ),
                ("INSERT OR IGNORE INTO sites VALUES (?)", sorted({(r[0],) for r in rows})),
            ]
        )

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        rows = []
        for alert in alerts:
            d = alert.data
            rows.append(
                (
                    check_id("site", d.site),
                    str(d.alert_id),
                    check_id("state", d.state),
                    check_id("device", d.device),
                    check_id("kind", d.kind),
                    check_id("metric", d.metric),
                    check_id("severity", d.severity),
                    finite(d.score),
                    finite(d.value),
                    int(d.reading_ts),
                    str(d.reason),
                    str(d.model_version),
                    check_id("source", d.source),
                )
            )
        self._write(
            [
                (_UPSERT_ALERT, rows),
                ("INSERT OR IGNORE INTO sites VALUES (?)", sorted({(r[0],) for r in rows})),
            ]
        )

    def write_health(self, h: Health) -> None:
        site, node = check_id("site", h.site), check_id("node", h.node)
        counters = {str(k): int(v) for k, v in h.counters.items()}
        gauges = {str(k): f for k, v in h.gauges.items() if (f := finite(v)) is not None}
        row = (site, node, int(h.ts), str(h.status), json.dumps(counters), json.dumps(gauges))
        # The history is bounded: reports older than the retention, counted back from this
        # one, go (one range delete in the primary key per report).
        expired = (site, node, int(h.ts) - HEALTH_RETENTION_MS)
        self._write(
            [
                ("INSERT OR REPLACE INTO health VALUES (?, ?, ?, ?, ?, ?)", [row]),
                ("DELETE FROM health WHERE site = ? AND node = ? AND ts < ?", [expired]),
                ("INSERT OR IGNORE INTO sites VALUES (?)", [(site,)] if site != CLOUD_SITE else []),
            ]
        )

    def write_dead_letters(self, items: Sequence[DeadLetter]) -> None:
        rows = [
            (
                check_id("site", d.site),
                check_id("reason", d.reason),
                int(d.ts),
                dead_letter_key(d),
                str(d.detail),
                str(d.topic),
                int(d.size),
                str(d.sha256),
                str(d.payload),
            )
            for d in items
        ]
        self._write(
            [
                ("INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows),
                ("INSERT OR IGNORE INTO sites VALUES (?)", sorted({(r[0],) for r in rows})),
            ]
        )

    def write_labels(self, labels: Sequence[Label]) -> None:
        rows = [
            (
                check_id("site", lab.site),
                check_id("device", lab.device),
                check_id("anomaly", lab.anomaly),
                int(lab.start),
                int(lab.end),
                ",".join(check_metric(m) for m in lab.metrics),
            )
            for lab in labels
        ]
        self._write(
            [
                ("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?)", rows),
                ("INSERT OR IGNORE INTO sites VALUES (?)", sorted({(r[0],) for r in rows})),
            ]
        )

    def write_catalogs(self, catalogs: Sequence[CatalogMessage]) -> None:
        rows = [(check_id("site", c.site), c.fingerprint, _catalog_encoder.encode(c).decode()) for c in catalogs]
        self._write(
            [
                ("INSERT OR REPLACE INTO catalogs VALUES (?, ?, ?)", rows),
                ("INSERT OR IGNORE INTO sites VALUES (?)", sorted({(r[0],) for r in rows})),
            ]
        )

    def latest_catalogs(self) -> dict[str, CatalogMessage]:
        rows = self._fetch("SELECT site, body FROM catalogs ORDER BY site")
        return {r["site"]: _catalog_decoder.decode(r["body"]) for r in rows}

    def write_model_delta(self, record: ModelDeltaRecord) -> None:
        row = (
            check_id("kind", record.kind),
            check_id("site", record.site),
            int(record.seq),
            check_id("node", record.node),
            int(record.ts),
            int(record.n),
        )
        self._write([("INSERT OR REPLACE INTO model_deltas VALUES (?, ?, ?, ?, ?, ?)", [row])])

    def write_merged_model(self, record: MergedModelRecord) -> None:
        sites = ",".join(check_id("site", s) for s in record.sites)
        row = (
            check_id("kind", record.kind),
            int(record.version),
            int(record.ts),
            int(record.n),
            sites,
            str(record.payload),
        )
        self._write([("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)", [row])])

    def latest_model_deltas(self) -> list[ModelDeltaRecord]:
        # SQLite takes the bare columns from the row holding MAX(seq).
        sql = """
            SELECT kind, site, node, MAX(seq) AS seq, ts, n FROM model_deltas
            GROUP BY kind, site ORDER BY kind, site
        """
        return [
            ModelDeltaRecord(r["kind"], r["site"], r["node"], r["seq"], r["ts"], r["n"])
            for r in self._fetch(sql)
        ]

    def model_site_weights(self) -> dict[tuple[str, str], int]:
        sql = "SELECT kind, site, SUM(n) AS n FROM model_deltas GROUP BY kind, site"
        return {(r["kind"], r["site"]): int(r["n"]) for r in self._fetch(sql)}

    def latest_merged_models(self) -> list[MergedModelRecord]:
        sql = """
            SELECT kind, MAX(version) AS version, ts, n, sites, payload FROM models
            GROUP BY kind ORDER BY kind
        """
        return [
            MergedModelRecord(
                r["kind"],
                r["version"],
                r["ts"],
                r["n"],
                tuple(r["sites"].split(",")) if r["sites"] else (),
                r["payload"],
            )
            for r in self._fetch(sql)
        ]

    # -- queries ---------------------------------------------------------------------------

    def _fetch(
        self, sql: str, params: Sequence[object] | dict[str, object] = ()
    ) -> list[sqlite3.Row]:
        with self._locked() as conn:
            cursor = conn.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    def count_readings(self, site: str | None = None) -> int:
        if site is None:
            rows = self._fetch("SELECT COUNT(*) FROM readings")
        else:
            rows = self._fetch(
                "SELECT COUNT(*) FROM readings WHERE site = ?", (check_id("site", site),)
            )
        return int(rows[0][0])

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
        params = {
            "site": check_id("site", site),
            "device": check_id("device", device),
            "metric": check_metric(metric),
            "start": start,
            "end": end,
        }
        where = (
            "site = :site AND device = :device AND metric = :metric AND ts >= :start AND ts < :end"
        )
        if every_ms is None:
            sql = f"SELECT ts, value FROM reading_values WHERE {where} ORDER BY ts"
            return [ReadingRow(ts, v, v, v, 1) for ts, v in self._fetch(sql, params)]
        params["every"] = check_positive("every_ms", every_ms)
        sql = f"""
            SELECT ts - ((ts % :every) + :every) % :every AS bucket,
                   AVG(value), MIN(value), MAX(value), COUNT(*)
            FROM reading_values WHERE {where}
            GROUP BY bucket ORDER BY bucket
        """
        return [ReadingRow(*row) for row in self._fetch(sql, params)]

    def query_aggregates(
        self, site: str, device: str, metric: str, start_ms: int, end_ms: int
    ) -> list[Aggregate]:
        start, end = check_interval(start_ms, end_ms)
        sql = """
            SELECT site, device, kind, metric, start, end_ms, count,
                   min, max, mean, std, last, anomalies
            FROM aggregates
            WHERE site = ? AND device = ? AND metric = ? AND start >= ? AND start < ?
            ORDER BY start
        """
        params = (check_id("site", site), check_id("device", device), check_id("metric", metric))
        return [
            _aggregate(row)
            for row in self._fetch(sql, (*params, start, end))
        ]

    def query_site_aggregates(self, site: str, start_ms: int, end_ms: int, limit: int = 1_000_000) -> list[Aggregate]:
        start, end = check_interval(start_ms, end_ms)
        sql = """
            SELECT site, device, kind, metric, start, end_ms, count,
                   min, max, mean, std, last, anomalies
            FROM aggregates
            WHERE site = ? AND start >= ? AND start < ?
            ORDER BY start, device, metric LIMIT ?
        """
        rows = self._fetch(sql, (check_id("site", site), start, end, check_positive("limit", limit)))
        return [
            _aggregate(row)
            for row in rows
        ]

    def query_aggregate_buckets(
        self, site: str, device: str, metric: str, start_ms: int, end_ms: int, every_ms: int
    ) -> list[AggregateBucket]:
        start, end = check_interval(start_ms, end_ms)
        params = {
            "site": check_id("site", site),
            "device": check_id("device", device),
            "metric": check_id("metric", metric),
            "start": start,
            "end": end,
            "every": check_positive("every_ms", every_ms),
        }
        sql = """
            SELECT start - ((start % :every) + :every) % :every AS bucket, SUM(count),
                   MIN(min), MAX(max), SUM(mean * count) * 1.0 / SUM(count), SUM(anomalies)
            FROM aggregates
            WHERE site = :site AND device = :device AND metric = :metric
              AND start >= :start AND start < :end
            GROUP BY bucket ORDER BY bucket
        """
        return [
            AggregateBucket(ts, int(count), _float(lo), _float(hi), _float(mean), int(anomalies))
            for ts, count, lo, hi, mean, anomalies in self._fetch(sql, params)
        ]

    def query_kind_buckets(
        self, site: str, kind: str, metric: str, start_ms: int, end_ms: int, every_ms: int
    ) -> list[DeviceBucket]:
        start, end = check_interval(start_ms, end_ms)
        params = {
            "site": check_id("site", site),
            "kind": check_id("kind", kind),
            "metric": check_id("metric", metric),
            "start": start,
            "end": end,
            "every": check_positive("every_ms", every_ms),
        }
        sql = """
            SELECT start - ((start % :every) + :every) % :every AS bucket, device,
                   SUM(mean * count) * 1.0 / SUM(count), SUM(count)
            FROM aggregates
            WHERE site = :site AND kind = :kind AND metric = :metric
              AND start >= :start AND start < :end
            GROUP BY bucket, device ORDER BY bucket, device
        """
        return [
            DeviceBucket(ts, device, _float(mean), int(count or 0))
            for ts, device, mean, count in self._fetch(sql, params)
        ]

    def query_alerts(
        self,
        site: str | None,
        since_ms: int,
        limit: int = 100,
        severities: Sequence[str] = (),
        kinds: Sequence[str] = (),
        sources: Sequence[str] = (),
    ) -> list[AlertData]:
        since, n = check_ms("since_ms", since_ms), check_positive("limit", limit)
        where, params = _alert_filter(site, since, severities, kinds, sources)
        sql = f"""
            SELECT alert_id, site, device, kind, metric, state, severity, score, value,
                   reading_ts, reason, model_version, source
            FROM alerts {where}
            ORDER BY reading_ts DESC, site, alert_id, state LIMIT ?
        """
        return [
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
                reading_ts=row["reading_ts"],
                reason=row["reason"],
                model_version=row["model_version"],
                source=row["source"],
            )
            for row in self._fetch(sql, (*params, n))
        ]

    def count_alerts(
        self,
        site: str | None,
        since_ms: int,
        severities: Sequence[str] = (),
        kinds: Sequence[str] = (),
        sources: Sequence[str] = (),
    ) -> int:
        where, params = _alert_filter(site, check_ms("since_ms", since_ms), severities, kinds, sources)
        return int(self._fetch(f"SELECT COUNT(*) FROM alerts {where}", params)[0][0])

    def alert_counts(
        self, start_ms: int, end_ms: int, every_ms: int, site: str | None = None
    ) -> list[AlertCount]:
        start, end = check_interval(start_ms, end_ms)
        every = check_positive("every_ms", every_ms)
        where, params = _alert_filter(site, start, (), ())
        sql = f"""
            SELECT reading_ts - ((reading_ts % ?) + ?) % ? AS bucket, site, severity, state,
                   COUNT(*)
            FROM alerts {where} AND reading_ts < ?
            GROUP BY bucket, site, severity, state ORDER BY bucket, site, severity, state
        """
        rows = self._fetch(sql, (every, every, every, *params, end))
        return [
            AlertCount(int(ts), str(si), str(se), str(st), int(n)) for ts, si, se, st, n in rows
        ]

    def query_dead_letters(
        self, site: str | None, since_ms: int, limit: int = 100
    ) -> list[DeadLetter]:
        since, n = check_ms("since_ms", since_ms), check_positive("limit", limit)
        where, params = _site_filter(site, "ts", since)
        sql = f"""
            SELECT site, ts, reason, detail, topic, size, sha256, payload
            FROM dead_letters {where}
            ORDER BY ts DESC, key DESC LIMIT ?
        """
        return [
            DeadLetter(
                v=SCHEMA_VERSION,
                site=row["site"],
                ts=row["ts"],
                reason=row["reason"],
                detail=row["detail"],
                topic=row["topic"],
                size=row["size"],
                sha256=row["sha256"],
                payload=row["payload"],
            )
            for row in self._fetch(sql, (*params, n))
        ]

    def query_labels(
        self, site: str, device: str | None, start_ms: int, end_ms: int
    ) -> list[Label]:
        start, end = check_interval(start_ms, end_ms)
        conditions, params = (
            ["site = ?", "start < ?", "end_ms >= ?"],
            [check_id("site", site), end, start],
        )
        if device is not None:
            conditions.append("device = ?")
            params.append(check_id("device", device))
        sql = f"""
            SELECT site, device, metrics, anomaly, start, end_ms FROM labels
            WHERE {" AND ".join(conditions)} ORDER BY start, device, anomaly
        """
        return [
            Label(
                v=SCHEMA_VERSION,
                site=row["site"],
                device=row["device"],
                metrics=row["metrics"].split(",") if row["metrics"] else [],
                anomaly=row["anomaly"],
                start=row["start"],
                end=row["end_ms"],
            )
            for row in self._fetch(sql, params)
        ]

    def latest_health(self) -> list[Health]:
        # SQLite takes the bare columns from the row holding MAX(ts).
        sql = """
            SELECT site, node, MAX(ts) AS ts, status, counters, gauges
            FROM health GROUP BY site, node ORDER BY site, node
        """
        return [
            Health(
                v=SCHEMA_VERSION,
                site=row["site"],
                node=row["node"],
                ts=row["ts"],
                status=row["status"],
                counters=json.loads(row["counters"]),
                gauges=json.loads(row["gauges"]),
            )
            for row in self._fetch(sql)
        ]

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
        means = "".join(", AVG(json_extract(gauges, ?))" for _ in names)
        site_filter = "" if site is None else "AND site = ?"
        sql = f"""
            SELECT site, node, ts - ((ts % ?) + ?) % ? AS bucket, COUNT(*){means}
            FROM health WHERE ts >= ? AND ts < ? {site_filter}
            GROUP BY site, node, bucket ORDER BY site, node, bucket
        """
        params: list[object] = [every, every, every, *(f'$."{g}"' for g in names), start, end]
        if site is not None:
            params.append(check_id("site", site))
        return [
            HealthPoint(
                str(row[0]),
                str(row[1]),
                int(row[2]),
                int(row[3]),
                {g: float(v) for g, v in zip(names, row[4:], strict=True) if v is not None},
            )
            for row in self._fetch(sql, params)
        ]

    def sites(self) -> list[str]:
        rows = self._fetch("SELECT site FROM sites WHERE site != ? ORDER BY site", (CLOUD_SITE,))
        return [str(row[0]) for row in rows]

    def devices(self, site: str) -> list[tuple[str, str]]:
        sql = "SELECT device, kind FROM devices WHERE site = ? ORDER BY device, kind"
        return [(str(d), str(k)) for d, k in self._fetch(sql, (check_id("site", site),))]

    def last_seen(self, site: str) -> list[tuple[str, str, int]]:
        # Correlated MAX() per device: each is one seek in a primary key, so the cost grows
        # with the number of devices, not with the readings stored.
        sql = """
            SELECT d.device, d.kind, MAX(
                coalesce((SELECT MAX(r.ts) FROM readings r
                          WHERE r.site = d.site AND r.device = d.device), -9223372036854775808),
                coalesce((SELECT MAX(a.start) FROM aggregates a
                          WHERE a.site = d.site AND a.device = d.device), -9223372036854775808)
            ) AS ts
            FROM devices d WHERE d.site = ? ORDER BY d.device, d.kind
        """
        return [
            (str(d), str(k), int(ts)) for d, k, ts in self._fetch(sql, (check_id("site", site),))
        ]

    def metric_totals(self, site: str, start_ms: int, end_ms: int) -> list[MetricTotals]:
        start, end = check_interval(start_ms, end_ms)
        params = (check_id("site", site), start, end)
        aggregates = self._fetch(
            """SELECT metric, SUM(count), SUM(anomalies) FROM aggregates
               WHERE site = ? AND start >= ? AND start < ? GROUP BY metric""",
            params,
        )
        points = self._fetch(
            """SELECT metric, COUNT(*) FROM reading_values
               WHERE site = ? AND ts >= ? AND ts < ? GROUP BY metric""",
            params,
        )
        totals: dict[str, list[int]] = {}
        for metric, count, anomalies in aggregates:
            totals[str(metric)] = [int(count), int(anomalies), 0]
        for metric, count in points:
            totals.setdefault(str(metric), [0, 0, 0])[2] = int(count)
        return [MetricTotals(m, *totals[m]) for m in sorted(totals)]

    def ping(self) -> bool:
        try:
            self._fetch("SELECT 1")
        except StoreError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a file written by an older edgepipe to the current schema, in place.

    Version 0 is a new (empty) file: the schema script creates everything.
    """
    if version == 0:
        return
    for target in range(version + 1, SCHEMA_USER_VERSION + 1):
        for statement in _MIGRATIONS.get(target, []):
            table = statement.split()[2]
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
                conn.execute(statement)  # a table the file never had is created by the schema script


def _aggregate(row: sqlite3.Row) -> Aggregate:
    """One ``aggregates`` row as the ``Aggregate`` the edge shipped."""
    return Aggregate(
        v=SCHEMA_VERSION,
        site=row["site"],
        device=row["device"],
        kind=row["kind"],
        metric=row["metric"],
        start=row["start"],
        end=row["end_ms"],
        count=row["count"],
        min=_float(row["min"]),
        max=_float(row["max"]),
        mean=_float(row["mean"]),
        std=_float(row["std"]),
        last=_float(row["last"]),
        anomalies=row["anomalies"],
    )


def _float(value: float | None) -> float:
    """A nullable REAL column: NULL (a value that was not finite) reads back as NaN."""
    return NAN if value is None else float(value)


def _alert_filter(
    site: str | None, since: int, severities: Sequence[str], kinds: Sequence[str], sources: Sequence[str] = ()
) -> tuple[str, list[object]]:
    """``WHERE`` over alerts by site, time, severities, kinds and sources (each checked as an id)."""
    where, params = _site_filter(site, "reading_ts", since)
    for column, values in (("severity", severities), ("kind", kinds), ("source", sources)):
        if values:
            checked = [check_id(column, v) for v in values]
            where += f" AND {column} IN ({', '.join('?' * len(checked))})"
            params += checked
    return where, params


def _site_filter(site: str | None, ts_column: str, since: int) -> tuple[str, list[object]]:
    if site is None:
        return f"WHERE {ts_column} >= ?", [since]
    return f"WHERE site = ? AND {ts_column} >= ?", [check_id("site", site), since]
