"""The edge side of model sync: learn per kind, ship signed deltas, keep verified merged models.

The statistics themselves (mergeable, shared with the cloud) are in
``pipeline.learn.sync_stats``; this module adds what only the node does with them: signing,
verifying and remembering the cloud's merged models.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources

from pipeline.detect.scorer import RatePriorLookup
from pipeline.errors import ProtocolError
from pipeline.learn.kind_priors import KindPriors, decode_priors
from pipeline.learn.sync_stats import DetectorPrior, StatsAccumulator, prior_from_stats
from pipeline.protocol.catalog import BUILTIN, Catalog
from pipeline.protocol.messages import SCHEMA_VERSION
from pipeline.protocol.model_codec import (
    MergedModel,
    MetricStats,
    ModelDelta,
    decode_merged,
    quantise_stats,
    sign,
    verify,
)
from pipeline.protocol.reasons import Reason

BUILTIN_PRIORS = ("pipeline.learn.priors", "builtin.json")  # package, file: edgepipe priors learn


@functools.cache
def builtin_priors() -> KindPriors:
    """The package's priors of the built-in kinds (``pipeline/learn/priors/builtin.json``), read once."""
    package, name = BUILTIN_PRIORS
    return decode_priors(resources.files(package).joinpath(name).read_bytes())[0]


def builtin_priors_for(catalog: Catalog) -> KindPriors:
    """The built-in priors of the kinds ``catalog`` keeps as built in (a ``[kinds.NAME]`` that
    replaces a built-in kind is another sensor: its prior would be wrong)."""
    return {
        (kind, metric): p
        for (kind, metric), p in builtin_priors().items()
        if kind in BUILTIN.kinds and catalog.kinds.get(kind) == BUILTIN.kinds[kind]
    }


def builtin_rate_prior(catalog: Catalog = BUILTIN) -> RatePriorLookup:
    """The built-in priors as a ``rate_prior`` lookup, without model sync: what a node without
    model keys starts new series from (``ModelSync.prior_at`` falls back to the same), and what
    the quality bench measures the node's defaults with."""
    priors = builtin_priors_for(catalog)

    def at(kind: str, metric: str, interval_s: float) -> DetectorPrior | None:
        prior = priors.get((kind, metric))
        return None if prior is None else prior.at(interval_s)

    return at


@dataclass
class ModelSync:
    """The edge side of model sync: learn per kind, ship signed deltas, keep verified priors.

    ``key`` signs this site's deltas (empty: no deltas are shipped); ``cloud_key`` verifies
    merged models (empty: none is used). Counters say what was refused and why.

    ``builtin``: the package's priors (``builtin_priors_for``), used for a new series only
    while model sync has no merged model of its kind and metric (``prior_at``).
    """

    site: str
    node: str
    key: bytes
    cloud_key: bytes
    interval_ms: int
    accumulators: dict[tuple[str, str], StatsAccumulator] = field(default_factory=dict)
    previous: dict[tuple[str, str], float] = field(default_factory=dict)
    merged: dict[str, MergedModel] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    deltas_shipped: int = 0
    warm_started: int = 0
    next_due_ms: int = 0
    builtin: KindPriors = field(default_factory=dict)
    builtin_used: int = 0

    @property
    def shipping(self) -> bool:
        return bool(self.key)

    def learn_one(self, device: str, kind: str, metric: str, value: float, ts_ms: int) -> None:
        if not self.shipping:
            return
        acc = self.accumulators.get((kind, metric))
        if acc is None:
            acc = self.accumulators[(kind, metric)] = StatsAccumulator()
        key = (device, metric)
        acc.learn_one(value, ts_ms, self.previous.get(key))
        self.previous[key] = value

    def due(self, now_ms: int) -> bool:
        if not self.shipping or now_ms < self.next_due_ms:
            return False
        if self.next_due_ms == 0:  # the first interval starts now
            self.next_due_ms = now_ms + self.interval_ms
            return False
        return True

    def take_deltas(self, now_ms: int) -> dict[str, dict[str, MetricStats]]:
        """What was learned since the last call, per kind and metric (quantised); reset."""
        self.next_due_ms = now_ms + self.interval_ms
        out: dict[str, dict[str, MetricStats]] = {}
        for (kind, metric), acc in sorted(self.accumulators.items()):
            if acc.n:
                out.setdefault(kind, {})[metric] = quantise_stats(acc.to_stats())
        self.accumulators.clear()
        return out

    def delta(self, kind: str, metrics: dict[str, MetricStats], seq: int, now_ms: int) -> ModelDelta:
        """The signed delta of ``kind`` with uplink ``seq``."""
        base = self.merged[kind].version if kind in self.merged else 0
        unsigned = ModelDelta(
            v=SCHEMA_VERSION,
            site=self.site,
            node=self.node,
            kind=kind,
            seq=seq,
            base_version=base,
            created_ms=now_ms,
            metrics=dict(sorted(metrics.items())),
        )
        self.deltas_shipped += 1
        return sign(unsigned, self.key)

    def on_merged(self, kind: str, payload: bytes) -> MergedModel | None:
        """Verify and keep a merged model from ``cloud/model/{kind}``; None if refused."""
        try:
            model = decode_merged(payload)
            if model.kind != kind:
                raise ProtocolError(Reason.TOPIC_MISMATCH, f"kind {model.kind} on {kind}")
            if not model.sig:
                raise ProtocolError(Reason.UNSIGNED)
            if not self.cloud_key or not verify(model, self.cloud_key):
                raise ProtocolError(Reason.BAD_SIGNATURE)
            known = self.merged.get(kind)
            if known is not None and model.version <= known.version:
                raise ProtocolError(Reason.REPLAYED, f"version {model.version}")
        except ProtocolError as exc:
            self.refused[exc.reason.value] = self.refused.get(exc.reason.value, 0) + 1
            return None
        self.merged[kind] = model
        return model

    def prior(self, kind: str, metric: str, top_k: int = 8) -> DetectorPrior | None:
        model = self.merged.get(kind)
        if model is None or metric not in model.metrics:
            return None
        return prior_from_stats(model.metrics[metric], model.version, top_k)

    def prior_at(self, kind: str, metric: str, interval_s: float) -> DetectorPrior | None:
        """Model sync's prior of a kind metric if it has one, else the built-in one at ``interval_s``."""
        merged = self.prior(kind, metric)
        if merged is not None:
            self.warm_started += 1
            return merged
        builtin = self.builtin.get((kind, metric))
        if builtin is None:
            return None
        self.builtin_used += 1
        return builtin.at(interval_s)
