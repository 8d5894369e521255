"""ModelMerger: verify the edges' model deltas, merge them per device kind, publish the merge.

    {site}/edge/model ──► size, schema ──► known site ──► signature ──► newer than the last
        applied (site, kind) ──► fresh (|now - created| <= cloud.model_max_age_s) ──► finite,
        shapes ──► weight (readings) <= max(floor, factor x the site's median)
        ──► weight <= floor + max readings/s x seconds since the site's previous applied delta
        of the kind (or since its first delta was seen) ──► the site's share of the kind's
        merged readings <= cloud.model_max_site_share, give or take the floor (when 2+ sites
        contribute)
        ──refused──► counted by reason, never applied
        ──accepted──► merge into the kind's statistics ──► version + 1 ──► store
                      (delta record + merged record) ──► cloud/model/{kind}, retained, signed

The checks are RELIABILITY.md S8's, in its order, then S9's bounds on poisoning: the median
rule alone leaves a site's first delta of a kind unbounded, so the rate bound caps every
delta by what the site could have learned in the time, and the share cap keeps one
(compromised) site from outweighing all the others. A delta refused by either is not
acknowledged to its edge, which resends it later; an honest one then fits. The merge adds
sufficient statistics (:func:`pipeline.learn.sync_stats.merge_stats`), so the order in which
sites' deltas arrive does not matter. A restarted worker resumes from the store: the newest merged model of each kind,
the newest applied seq (and its time) of each (site, kind), and each site's summed weight
per kind, so a replay stays a replay and the bounds hold across restarts.

One worker must merge a kind (MQTT 5 shared subscriptions would split deltas over workers,
each with its own version counter): docs/decisions/0004-model-deltas.md.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from pipeline.cloud.store import Store
from pipeline.cloud.store.base import MergedModelRecord, ModelDeltaRecord
from pipeline.config import Settings
from pipeline.errors import ProtocolError, StoreError
from pipeline.learn.sync_stats import empty_stats, merge_stats
from pipeline.protocol import Reason, Topics
from pipeline.protocol.catalog import KINDS, DeviceKind
from pipeline.protocol.json_codec import decode
from pipeline.protocol.messages import SCHEMA_VERSION
from pipeline.protocol.model_codec import (
    MAX_MODEL_BYTES,
    MergedModel,
    MetricStats,
    ModelDelta,
    check_shape,
    decode_merged,
    encode_model,
    quantise_stats,
    sign,
    verify,
)

log = logging.getLogger(__name__)

NORM_HISTORY = 31  # accepted delta weights remembered per (site, kind) for the median


@dataclass
class MergerCounters:
    accepted: int = 0
    published: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    store_errors: int = 0


@dataclass
class _KindState:
    version: int = 0
    metrics: dict[str, MetricStats] = field(default_factory=dict)
    sites: set[str] = field(default_factory=set)


class ModelMerger:
    """The cloud side of model sync (one per ingest worker; see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        publish: Callable[[str, bytes], object],
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        kind_of: Callable[[str, str], DeviceKind | None] | None = None,
    ) -> None:
        cloud = settings.cloud
        # (site, kind) -> the kind as that site defines it, None when unknown or defined
        # incompatibly with another site's (a merged model must not mix them: issue 17)
        self.kind_of = kind_of or (lambda _site, kind: KINDS.get(kind))
        self.keys = {site: key.encode() for site, key in cloud.model_keys.items()}
        self.cloud_key = cloud.model_key.encode()
        self.max_age_ms = int(cloud.model_max_age_s * 1000)
        self.norm_factor = cloud.model_norm_factor
        self.norm_floor = cloud.model_norm_floor
        self.max_rate = cloud.model_max_readings_per_s
        self.max_share = cloud.model_max_site_share
        self.store = store
        self.publish = publish
        self.now_ms = now_ms
        self.topics = Topics(settings.mqtt.topic_root)
        self.counters = MergerCounters()
        self.kinds: dict[str, _KindState] = {}
        self.last_seq: dict[tuple[str, str], int] = {}
        self.norms: dict[tuple[str, str], deque[int]] = {}
        self.since_ms: dict[tuple[str, str], int] = {}  # previous applied delta, or first seen
        self.site_weights: dict[str, dict[str, int]] = {}  # kind -> site -> readings applied
        self._loaded = False

    def load(self) -> None:
        """Resume from the store: merged models and the last applied seq per (site, kind).

        Marked loaded only once every read succeeded: a merger that failed to read its
        state must not merge from an empty one (it would publish version 1 again).
        """
        for record in self.store.latest_merged_models():
            try:
                model = decode_merged(record.payload.encode())
            except ProtocolError as exc:
                log.warning("stored merged model of %s unreadable: %s", record.kind, exc)
                continue
            self.kinds[record.kind] = _KindState(
                model.version, dict(model.metrics), set(model.sites)
            )
        for d in self.store.latest_model_deltas():
            self.last_seq[(d.site, d.kind)] = d.seq
            self.since_ms[(d.site, d.kind)] = d.ts
        for (kind, site), n in self.store.model_site_weights().items():
            self.site_weights.setdefault(kind, {})[site] = n
        self._loaded = True

    # -- the flow -------------------------------------------------------------------------

    def handle(self, site: str, payload: bytes) -> int | None:
        """One delta from ``{site}/edge/model``: the uplink seq to acknowledge, or None.

        Applied deltas and replays of applied ones return their seq (the edge may forget
        them); a refused delta raises ``ProtocolError`` with its reason, counted here. A store
        failure returns None: nothing is applied, the edge resends it later. A failure to
        read the state back (:meth:`load`) raises its ``StoreError``; the next delta reads again.
        """
        if not self._loaded:
            self.load()
        try:
            delta = self.verify(site, payload)
        except ProtocolError as exc:
            self.counters.rejected[exc.reason.value] += 1
            if isinstance(exc, _Replayed):
                return exc.seq
            raise
        try:
            self.apply(delta)
        except StoreError as exc:
            self.counters.store_errors += 1
            log.warning("model delta %s/%s seq %d not stored: %s", site, delta.kind, delta.seq, exc)
            return None
        return delta.seq

    def verify(self, site: str, payload: bytes) -> ModelDelta:
        """RELIABILITY.md S8's checks in order; ``ProtocolError`` naming the first that fails."""
        delta = decode(payload, ModelDelta, max_bytes=MAX_MODEL_BYTES)  # 1 size, 2 schema
        if delta.site != site:
            raise ProtocolError(Reason.TOPIC_MISMATCH, f"site {delta.site} on {site}")
        kind = self.kind_of(site, delta.kind)
        if kind is None:
            raise ProtocolError(Reason.UNKNOWN_KIND, delta.kind[:80])
        for metric in delta.metrics:
            if metric not in kind.metrics:
                raise ProtocolError(Reason.UNKNOWN_METRIC, f"{delta.kind}.{metric[:80]}")
        key = self.keys.get(site)  # 3 known edge
        if key is None:
            raise ProtocolError(Reason.UNKNOWN_SITE, site)
        if not delta.sig:  # 4 signature
            raise ProtocolError(Reason.UNSIGNED)
        if not verify(delta, key):
            raise ProtocolError(Reason.BAD_SIGNATURE, f"{site}/{delta.kind} seq {delta.seq}")
        last = self.last_seq.get((site, delta.kind), -1)  # 5 replay
        if delta.seq <= last:
            raise _Replayed(delta.seq, last)
        now = self.now_ms()  # 6 freshness
        if delta.created_ms < now - self.max_age_ms:
            raise ProtocolError(Reason.STALE_TS, f"created {now - delta.created_ms} ms ago")
        if delta.created_ms > now + self.max_age_ms:
            raise ProtocolError(Reason.FUTURE_TS, f"created {delta.created_ms - now} ms ahead")
        check_shape(delta.metrics)  # 7 finite, shapes
        weight = sum(s.n for s in delta.metrics.values())  # 8 norm
        history = self.norms.get((site, delta.kind))
        if history:
            limit = max(self.norm_floor, self.norm_factor * statistics.median(history))
            if weight > limit:
                raise ProtocolError(Reason.NORM_TOO_LARGE, f"{weight} readings > {limit:.0f}")
        self.check_bounds(site, delta.kind, weight, now)  # RELIABILITY.md S9
        return delta

    def check_bounds(self, site: str, kind: str, weight: int, now: int) -> None:
        """S9: no more readings than the site could have learned, no dominant site.

        Rate: ``weight <= floor + max_rate x`` the seconds since the site's previous applied
        delta of ``kind`` or, for its first one, since the cloud first saw one (now, the
        first time: so a first delta weighs at most the floor). Share: once two or more
        sites contribute to ``kind``, the site holds at most ``max_share`` of its readings,
        give or take the floor: ``mine <= floor + others x max_share / (1 - max_share)``.
        The floor lets honest sites take turns (without it, with the cap at 0.5, whichever
        of two equal sites sent next would be refused); it is negligible once the model
        holds many readings, and the rate bound already limits what a young model takes.
        """
        since = self.since_ms.setdefault((site, kind), now)
        allowed = self.norm_floor + self.max_rate * max(0, now - since) / 1000
        if weight > allowed:
            raise ProtocolError(
                Reason.RATE_TOO_HIGH,
                f"{weight} readings > {allowed:.0f} in {max(0, now - since) / 1000:.1f} s",
            )
        weights = self.site_weights.get(kind, {})
        others = sum(n for s, n in weights.items() if s != site)
        if others > 0 and self.max_share < 1:
            mine = weights.get(site, 0) + weight
            most = self.norm_floor + others * self.max_share / (1 - self.max_share)
            if mine > most:
                share = mine / (mine + others)
                raise ProtocolError(
                    Reason.SHARE_TOO_LARGE,
                    f"{site} would hold {mine} of {kind}'s {mine + others} readings "
                    f"({share:.1%}) > {most:.0f}",
                )

    def apply(self, delta: ModelDelta) -> MergedModel:
        """Merge a verified delta, store it and the new version, then publish it retained."""
        state = self.kinds.get(delta.kind) or _KindState()
        metrics = dict(state.metrics)
        for name, stats in delta.metrics.items():
            metrics[name] = merge_stats(metrics.get(name, empty_stats()), stats)
        sites = state.sites | {delta.site}
        now = self.now_ms()
        merged = MergedModel(
            v=SCHEMA_VERSION,
            kind=delta.kind,
            version=state.version + 1,
            created_ms=now,
            sites=sorted(sites),
            metrics={name: quantise_stats(s) for name, s in sorted(metrics.items())},
        )
        if self.cloud_key:
            merged = sign(merged, self.cloud_key)
        payload = encode_model(merged)
        weight = sum(s.n for s in delta.metrics.values())
        self.store.write_model_delta(
            ModelDeltaRecord(delta.kind, delta.site, delta.node, delta.seq, delta.created_ms, weight)
        )
        self.store.write_merged_model(
            MergedModelRecord(
                delta.kind,
                merged.version,
                now,
                sum(s.n for s in metrics.values()),
                tuple(merged.sites),
                payload.decode(),
            )
        )
        # Stored: now it is applied.
        self.kinds[delta.kind] = _KindState(merged.version, metrics, sites)
        self.last_seq[(delta.site, delta.kind)] = delta.seq
        self.norms.setdefault((delta.site, delta.kind), deque(maxlen=NORM_HISTORY)).append(weight)
        self.since_ms[(delta.site, delta.kind)] = now
        site_weights = self.site_weights.setdefault(delta.kind, {})
        site_weights[delta.site] = site_weights.get(delta.site, 0) + weight
        self.counters.accepted += 1
        self.publish(self.topics.cloud_model(delta.kind), payload)
        self.counters.published += 1
        return merged

    def parameter_hash(self) -> int:
        """A hash of every kind's merged statistics (tests: unchanged means nothing applied)."""
        state = {k: (s.version, s.metrics) for k, s in sorted(self.kinds.items())}
        return hash(msgspec.json.encode(state, order="sorted"))


class _Replayed(ProtocolError):
    def __init__(self, seq: int, last: int) -> None:
        super().__init__(Reason.REPLAYED, f"seq {seq} <= last applied {last}")
        self.seq = seq
