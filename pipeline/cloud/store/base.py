"""The ``Store`` protocol: what the cloud writer writes and the dashboard reads.

Two implementations, chosen by URL in :func:`pipeline.cloud.store.open_store`:
``SQLiteStore`` (embedded, the demo default) and ``InfluxStore`` (InfluxDB v1 HTTP API,
which 1.x, 2.x and 3.x all serve). ``tests/contract/test_store_contract.py`` runs one suite
over both, so what this module promises holds for each of them.

Promises every backend keeps, and why:

* **Writes are idempotent.** MQTT redelivers and the edge resends until it sees an ack
  (RELIABILITY.md §3), so "exactly one copy" has to come from the sink. Every record has a
  deterministic identity and a rewrite replaces the stored values:

  ============  ===========================================
  record        identity
  ============  ===========================================
  reading       (site, device, ts); each metric separately
  aggregate     (site, device, metric, start)
  alert         (site, alert_id, state)
  health        (site, node, ts)
  dead letter   (site, reason, ts, :func:`dead_letter_key`)
  label         (site, device, anomaly, start)
  ============  ===========================================

* **Timestamps are Unix milliseconds** everywhere, in and out.
* **NaN and ±Inf are never written.** A non-finite float is left out: a metric value
  simply is not stored; a non-finite float field of an aggregate or an alert reads back as
  NaN (and a rewrite with a finite value fills it in); a non-finite gauge is dropped.
  The validator rejects such readings upstream; this is the last guard, and it never makes a
  whole batch fail.
* **Ids are checked before anything is sent.** Sites, devices, kinds, metrics, severities,
  states, nodes, reasons and anomaly names are tag values and must match
  ``^[A-Za-z0-9_-]{1,64}$`` (:func:`pipeline.protocol.topics.is_valid_id`). A write or a
  query filter with anything else raises :class:`ValueError` and reaches no database: this
  closes line-protocol and InfluxQL injection (RELIABILITY.md S4) for both backends alike.
* **Errors say what to do next**: :class:`StoreUnavailable` (retry later),
  :class:`StoreConfigError` (fix the URL or credentials; retrying will not help, so keep
  buffering), :class:`PartialWriteError` (some records were refused, the rest are stored;
  never resend the whole batch blindly). The retry policy belongs to the caller.
* **Reads return plain values**: protocol structs where one fits (``Aggregate``,
  ``AlertData``, ``Health``, ``DeadLetter``, ``Label``; ``v`` is always
  :data:`~pipeline.protocol.messages.SCHEMA_VERSION`, the stored form has no version), and
  frozen dataclasses where the database computes something: :class:`ReadingRow` for a time
  series, :class:`AggregateBucket` for merged windows, :class:`MetricTotals` for counts.
  Lists come sorted as each method says, so two backends give equal answers.
"""

from __future__ import annotations

import math
import operator
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

from pipeline.errors import StoreError
from pipeline.protocol.catalog import CatalogMessage
from pipeline.protocol.messages import (
    Aggregate,
    Alert,
    AlertData,
    DeadLetter,
    Health,
    Label,
    Reading,
)
from pipeline.protocol.topics import is_valid_id

__all__ = [
    "CLOUD_SITE",
    "HEALTH_RETENTION_MS",
    "AggregateBucket",
    "AlertCount",
    "DeviceBucket",
    "HealthPoint",
    "MergedModelRecord",
    "MetricTotals",
    "ModelDeltaRecord",
    "PartialWriteError",
    "ReadingRow",
    "RESERVED_METRICS",
    "Store",
    "StoreConfigError",
    "StoreUnavailable",
    "check_gauge",
    "check_id",
    "check_interval",
    "dead_letter_key",
]

# The site under which cloud workers store their own health (docs/protocol.md): a topic
# level the protocol reserves, so no edge site can take it. ``sites()`` leaves it out.
CLOUD_SITE = "cloud"

# How long SQLite keeps a node's health reports, counted back from its newest report (event
# time of the reports, not the wall clock): the history charts look back a day at most.
# InfluxDB keeps them as long as the database's retention policy (docs/protocol.md).
HEALTH_RETENTION_MS = 7 * 86_400_000

# Field names a reading's metric may not take: ``seq`` is stored beside the metrics and
# InfluxDB refuses a field called ``time``.
RESERVED_METRICS = frozenset({"seq", "time"})


class StoreUnavailable(StoreError):
    """The database cannot be reached or is overloaded (refused, timeout, 429, 5xx).

    Nothing of the failed request may be assumed stored. Retry later with backoff; the
    writes are idempotent, so resending what might have been stored is safe.
    ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one: wait at
    least that long.
    """

    def __init__(self, text: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(text)


class StoreConfigError(StoreError):
    """The store refuses us for a reason retrying cannot fix (401, 403, 404, bad path).

    Raise an alarm and keep buffering until the configuration is fixed.
    """


class PartialWriteError(StoreError):
    """The database refused some records of a write (InfluxDB 400); the others are stored.

    ``text`` is the server's own message (1.6 names only the first bad line or field);
    ``dropped`` the number of refused points when the server says it. Resending the same
    records unchanged will be refused again: isolate them (halves are safe to resend, the
    writes are idempotent) and dead-letter the bad ones. ``rejected`` holds what the
    backend isolated: ``(record, why)`` pairs, the record as the backend wrote it (a line
    of line protocol for InfluxDB), so the caller can dead-letter exactly those.
    """

    def __init__(
        self,
        text: str,
        dropped: int | None = None,
        rejected: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.text, self.dropped, self.rejected = text, dropped, tuple(rejected)
        super().__init__(f"partial write: {text}")


@dataclass(frozen=True, slots=True)
class ReadingRow:
    """One point of a metric's time series, as the dashboard charts it.

    Raw (``every_ms=None``): ``ts`` is the reading's timestamp, ``value`` its value,
    ``min == max == value`` and ``count == 1``. Downsampled: ``ts`` is the bucket start
    (a multiple of ``every_ms``), ``value`` the mean of the bucket, ``min``/``max`` its
    extremes and ``count`` the readings in it. One type for both, so a chart needs no branch.
    """

    ts: int
    value: float
    min: float
    max: float
    count: int


@dataclass(frozen=True, slots=True)
class AggregateBucket:
    """A series' aggregate windows merged per time bucket, for charts over long ranges.

    ``ts`` is the bucket start (a multiple of ``every_ms``; a window belongs to the bucket
    of its start), ``count`` and ``anomalies`` are sums over the windows, ``min``/``max``
    their extremes (NaN if no window had a finite one) and ``mean`` the count-weighted mean
    of the windows' means.
    """

    ts: int
    count: int
    min: float
    max: float
    mean: float
    anomalies: int


@dataclass(frozen=True, slots=True)
class DeviceBucket:
    """One device's aggregate windows merged per time bucket: a point of a kind's spread.

    ``ts`` is the bucket start (as in :class:`AggregateBucket`), ``mean`` the count-weighted
    mean of the device's window means in it (NaN if none was finite), ``count`` the readings.
    """

    ts: int
    device: str
    mean: float
    count: int


@dataclass(frozen=True, slots=True)
class HealthPoint:
    """One node's health over a time bucket, for trend charts (readings/s, queue depth, ...).

    ``ts`` is the bucket start (a multiple of ``every_ms``), ``reports`` the health reports
    in it, and ``gauges`` the mean of each requested gauge over the reports that carried it
    (a gauge none of them carried is left out, never a made-up zero).
    """

    site: str
    node: str
    ts: int
    reports: int
    gauges: dict[str, float]


@dataclass(frozen=True, slots=True)
class AlertCount:
    """Alert records of one (site, severity, state) whose ``reading_ts`` is in one bucket."""

    ts: int
    site: str
    severity: str
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class MetricTotals:
    """What one site did with one metric over a time range: the data-reduction figures.

    ``readings_in`` is the sum of the aggregates' ``count`` (every accepted value of the
    metric is counted in exactly one window, whatever selection shipped), ``anomalies`` the
    sum of their ``anomalies``, and ``points_stored`` the raw values stored (what selection
    shipped). Aggregates count by window start, points by their own ``ts``.
    """

    metric: str
    readings_in: int
    anomalies: int
    points_stored: int


@dataclass(frozen=True, slots=True)
class ModelDeltaRecord:
    """A model delta the cloud applied: who taught a kind's model, how much, and when.

    Identity (kind, site, seq); ``seq`` is the edge's uplink seq, ``ts`` the delta's
    ``created_ms`` and ``n`` the readings it summarises (summed over its metrics).
    """

    kind: str
    site: str
    node: str
    seq: int
    ts: int
    n: int


@dataclass(frozen=True, slots=True)
class MergedModelRecord:
    """A merged model the cloud published on ``cloud/model/{kind}``; identity (kind, version).

    ``payload`` is the signed JSON exactly as published, so a restarted cloud worker resumes
    from it; ``n`` is the readings behind it and ``sites`` the sites that contributed.
    """

    kind: str
    version: int
    ts: int
    n: int
    sites: tuple[str, ...]
    payload: str


@runtime_checkable
class Store(Protocol):
    """Where the cloud tier keeps what the edges send, and where the dashboard reads it.

    Writes take whole batches (cheap enough to call once per uplink message). SQLite
    stores a batch in one transaction; InfluxDB in requests of up to 5000 points, and a
    failed request leaves the earlier ones stored, which is harmless because a resend
    is idempotent. A write with an invalid id raises ``ValueError`` before anything is
    stored. Queries take ids that are validated before a query is built (``ValueError``
    otherwise), times as int Unix ms (``TypeError`` otherwise), ranges as half-open
    ``[start_ms, end_ms)``, and return sorted lists.
    """

    def write_readings(self, site: str, readings: Sequence[Reading]) -> None:
        """Store readings of ``site``: one record per (site, device, ts), all its metrics."""
        ...

    def write_aggregates(self, aggs: Sequence[Aggregate]) -> None:
        """Store window aggregates, one record per (site, device, metric, start)."""
        ...

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        """Store the alerts' data; raised and cleared of one alert are two records."""
        ...

    def write_health(self, h: Health) -> None:
        """Store one health report; history is kept, :meth:`latest_health` picks the last."""
        ...

    def write_dead_letters(self, items: Sequence[DeadLetter]) -> None:
        """Store refused payloads for inspection."""
        ...

    def write_labels(self, labels: Sequence[Label]) -> None:
        """Store the simulators' ground-truth anomaly windows (for evaluation views)."""
        ...

    def write_catalogs(self, catalogs: Sequence[CatalogMessage]) -> None:
        """Store sites' device catalogues as their edges published them (the last one counts)."""
        ...

    def latest_catalogs(self) -> dict[str, CatalogMessage]:
        """Each site's last stored catalogue, by site."""
        ...

    def write_model_delta(self, record: ModelDeltaRecord) -> None:
        """Store an applied model delta (one record per (kind, site, seq))."""
        ...

    def write_merged_model(self, record: MergedModelRecord) -> None:
        """Store a published merged model (one record per (kind, version))."""
        ...

    def latest_model_deltas(self) -> list[ModelDeltaRecord]:
        """The newest applied delta (highest ``seq``) of every (kind, site), by kind and site."""
        ...

    def latest_merged_models(self) -> list[MergedModelRecord]:
        """The highest version of every kind's merged model, by kind."""
        ...

    def model_site_weights(self) -> dict[tuple[str, str], int]:
        """(kind, site) -> readings (``n``) summed over every applied delta of that pair."""
        ...

    def count_readings(self, site: str | None = None) -> int:
        """Distinct readings stored, i.e. distinct (site, device, ts); all sites if None."""
        ...

    def query_readings(
        self,
        site: str,
        device: str,
        metric: str,
        start_ms: int,
        end_ms: int,
        every_ms: int | None = None,
    ) -> list[ReadingRow]:
        """A metric's series in ``[start_ms, end_ms)``, oldest first.

        With ``every_ms``, the database downsamples into buckets aligned to multiples of
        ``every_ms`` since the epoch (per bucket mean, min, max, count); empty buckets are
        left out. Downsampling happens in the database so a week of 10 Hz data never
        crosses the wire.
        """
        ...

    def query_aggregates(
        self, site: str, device: str, metric: str, start_ms: int, end_ms: int
    ) -> list[Aggregate]:
        """Aggregates whose window starts in ``[start_ms, end_ms)``, by start."""
        ...

    def query_site_aggregates(self, site: str, start_ms: int, end_ms: int, limit: int = 1_000_000) -> list[Aggregate]:
        """Every aggregate of ``site`` whose window starts in ``[start_ms, end_ms)``, by
        (start, device, metric), at most ``limit`` (the earliest): what the fleet analyst
        replays on start to rebuild its detectors' state."""
        ...

    def query_aggregate_buckets(
        self, site: str, device: str, metric: str, start_ms: int, end_ms: int, every_ms: int
    ) -> list[AggregateBucket]:
        """Aggregates whose window starts in ``[start_ms, end_ms)``, merged per bucket.

        Buckets are aligned to multiples of ``every_ms`` since the epoch, oldest first;
        empty ones are left out. The database merges them: a week of 1-minute windows is
        10,080 rows, past InfluxDB's default ``max-row-limit`` of 10,000.
        """
        ...

    def query_kind_buckets(
        self, site: str, kind: str, metric: str, start_ms: int, end_ms: int, every_ms: int
    ) -> list[DeviceBucket]:
        """Every device of ``kind`` at ``site``: its windows starting in ``[start_ms, end_ms)``
        merged per bucket of ``every_ms`` (aligned as in ``query_aggregate_buckets``), by
        (bucket, device). One query for a whole kind: the dashboard's peer band.
        """
        ...

    def query_alerts(
        self,
        site: str | None,
        since_ms: int,
        limit: int = 100,
        severities: Sequence[str] = (),
        kinds: Sequence[str] = (),
        sources: Sequence[str] = (),
    ) -> list[AlertData]:
        """Alerts with ``reading_ts >= since_ms``, newest first, at most ``limit``.

        ``severities``, ``kinds`` and ``sources`` (``edge``, ``cloud``; records stored before
        the source was, are ``edge``) (empty: any) filter in the database, so the newest
        ``limit`` of a rare severity are found under a flood of others. At one instant a
        ``cleared`` record comes before its ``raised`` one (ties by site, alert_id, state).
        """
        ...

    def count_alerts(
        self,
        site: str | None,
        since_ms: int,
        severities: Sequence[str] = (),
        kinds: Sequence[str] = (),
        sources: Sequence[str] = (),
    ) -> int:
        """How many records :meth:`query_alerts` would return with no limit."""
        ...

    def alert_counts(
        self, start_ms: int, end_ms: int, every_ms: int, site: str | None = None
    ) -> list[AlertCount]:
        """Alert records with ``reading_ts`` in ``[start_ms, end_ms)`` counted per bucket.

        One row per (bucket, site, severity, state) that has any, buckets aligned to
        multiples of ``every_ms``; sorted by ``ts``, site, severity, state. Counted in the
        database, for charts of alerts over time.
        """
        ...

    def query_dead_letters(
        self, site: str | None, since_ms: int, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters with ``ts >= since_ms``, newest first, at most ``limit``."""
        ...

    def query_labels(
        self, site: str, device: str | None, start_ms: int, end_ms: int
    ) -> list[Label]:
        """Labels whose window ``[start, end]`` overlaps ``[start_ms, end_ms)``, by start."""
        ...

    def latest_health(self) -> list[Health]:
        """The newest health report of every (site, node), sorted by (site, node)."""
        ...

    def health_history(
        self,
        start_ms: int,
        end_ms: int,
        every_ms: int,
        gauges: Sequence[str],
        site: str | None = None,
    ) -> list[HealthPoint]:
        """Health reports with ``ts`` in ``[start_ms, end_ms)``, averaged per node and bucket.

        Buckets are aligned to multiples of ``every_ms``; the database averages each of
        ``gauges`` (names checked by :func:`check_gauge`). Sorted by site, node and ``ts``;
        a bucket with no report is left out. The caller keeps nodes × buckets under the
        5,000 rows a query may ask InfluxDB for.
        """
        ...

    def sites(self) -> list[str]:
        """Every edge site that has any record, sorted (never :data:`CLOUD_SITE`)."""
        ...

    def devices(self, site: str) -> list[tuple[str, str]]:
        """``(device, kind)`` pairs with readings or aggregates at ``site``, sorted."""
        ...

    def last_seen(self, site: str) -> list[tuple[str, str, int]]:
        """``(device, kind, ts)`` of every device of ``site``, sorted by device and kind.

        ``ts`` is the newest evidence the store holds that the device was reporting: the
        later of its newest stored reading and its newest aggregate window start. The
        dashboard needs it to tell reporting devices from silent ones in one query, and to
        anchor a chart on the device's newest data.
        """
        ...

    def metric_totals(self, site: str, start_ms: int, end_ms: int) -> list[MetricTotals]:
        """Per metric of ``site``: readings in (aggregate counts) and raw points stored.

        Aggregates whose window starts in ``[start_ms, end_ms)`` and points whose ``ts`` is
        in it; sorted by metric; a metric with neither is left out. Counted in the database,
        so the data-reduction view never moves the points themselves.
        """
        ...

    def ping(self) -> bool:
        """True when the database answers now; never raises."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards. Idempotent."""
        ...


# -- helpers shared by the backends ------------------------------------------------------


@lru_cache(maxsize=65536)
def _valid(value: str) -> bool:
    # Ids repeat endlessly (a few hundred devices), so the regex runs once per id.
    return is_valid_id(value)


def check_id(field: str, value: object) -> str:
    """Return ``value`` if it is a valid id, else raise ``ValueError`` naming ``field``."""
    if isinstance(value, str) and _valid(value):
        return value
    raise ValueError(f"invalid {field} id {str(value)[:80]!r}: expected ^[A-Za-z0-9_-]{{1,64}}$")


_GAUGE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def check_gauge(value: object) -> str:
    """A health gauge name (``readings_per_s``, ``selection_ratio.temp``), else ``ValueError``.

    Ids plus dots: a gauge name becomes an InfluxDB field key and a SQLite JSON path.
    """
    if isinstance(value, str) and _GAUGE_NAME.fullmatch(value):
        return value
    raise ValueError(f"invalid gauge name {str(value)[:80]!r}: expected ^[A-Za-z0-9_.-]{{1,128}}$")


def check_metric(value: object) -> str:
    """A metric name: a valid id that is not one of :data:`RESERVED_METRICS`."""
    name = check_id("metric", value)
    if name in RESERVED_METRICS:
        raise ValueError(
            f"metric name {name!r} is reserved ({', '.join(sorted(RESERVED_METRICS))})"
        )
    return name


def check_interval(start_ms: int, end_ms: int) -> tuple[int, int]:
    """Both bounds as ints (``TypeError`` for a float or a string); ``start <= end``."""
    start, end = check_ms("start_ms", start_ms), check_ms("end_ms", end_ms)
    if start > end:
        raise ValueError(f"empty interval: start_ms {start} > end_ms {end}")
    return start, end


def check_ms(field: str, value: int) -> int:
    """A timestamp in Unix ms as an int (``TypeError`` for a float or a string)."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{field} must be an int (Unix ms), got {type(value).__name__}") from None


def check_positive(field: str, value: int) -> int:
    """A strictly positive int (``TypeError`` for anything that is not an int)."""
    number = operator.index(value)
    if number <= 0:
        raise ValueError(f"{field} must be > 0, got {number}")
    return number


def finite(value: float) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite (so it is not written)."""
    number = float(value)
    return number if math.isfinite(number) else None


_DROPPED = re.compile(r"dropped=(\d+)")


def dropped_count(text: str) -> int | None:
    """The ``dropped=N`` figure of an InfluxDB partial-write message, if any."""
    found = _DROPPED.findall(text)
    return sum(int(n) for n in found) if found else None


def dead_letter_key(d: DeadLetter) -> int:
    """A number in ``[0, 1_000_000)`` that tells apart dead letters of one site, reason and ms.

    A flood of bad payloads gives many dead letters per millisecond; keyed by
    (site, reason, ts) alone they would overwrite each other. The key is a hash of what the
    dead letter says (topic, payload hash, detail), so a resent dead letter keeps its
    identity. InfluxDB stores it as the nanoseconds within the millisecond.
    """
    return zlib.crc32(f"{d.topic}\n{d.sha256}\n{d.detail}".encode()) % 1_000_000
