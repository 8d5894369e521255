"""Typed settings: one TOML file plus ``EDGEPIPE_*`` environment overrides, loaded once.

Precedence, highest first: command-line flags, environment (``EDGEPIPE_MQTT__URL``, nested
keys joined by ``__``), the TOML file (``--config`` or ``EDGEPIPE_CONFIG``), defaults.
Every section forbids unknown keys; a bad value becomes one :class:`ConfigError` naming the
dotted key, the value and what is allowed. Only this module reads ``os.environ``.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.detect.detection import DEFAULT_LINKS, RELATIONS, Link
from pipeline.detect.registry import from_choice
from pipeline.errors import ConfigError
from pipeline.mqtt import parse_broker_url
from pipeline.protocol.catalog import BUILTIN, Catalog, DeviceKind, Metric
from pipeline.protocol.topics import DEFAULT_ROOT, is_valid_id

CONFIG_ENV = "EDGEPIPE_CONFIG"
ENV_PREFIX = "EDGEPIPE_"
NON_SETTINGS_ENV = frozenset({CONFIG_ENV})  # EDGEPIPE_* names that are not settings
STORE_URL_HELP = "sqlite:///PATH or influxdb://[user:pass@]host:port/DATABASE"


INGEST_FORMATS = ("edgepipe", "json", "ttn", "chirpstack", "zigbee2mqtt", "influx-line")
IngestFormat = Literal["edgepipe", "json", "ttn", "chirpstack", "zigbee2mqtt", "influx-line"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MqttSettings(Section):
    """How every edgepipe process reaches the broker."""

    url: str = Field("mqtt://127.0.0.1:1883", description="broker URL; mqtts:// for TLS")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT protocol version; auto: 3.1.1 for edge nodes, 5 for the rest"
    )
    keepalive: int = Field(30, ge=5, le=3600, description="seconds between pings")
    session_expiry: int = Field(
        3600, ge=0, description="seconds the broker keeps a durable subscriber's session"
    )
    tls_ca: str | None = Field(None, description="CA certificate file for mqtts://")
    topic_root: str = Field(DEFAULT_ROOT, description="root of every topic")
    max_payload: int = Field(
        64512, ge=1024, description="largest publish, below the broker's message_size_limit"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_broker_url(value)
        return value


    def protocol_for(self, role: Literal["edge", "cloud", "device", "client"]) -> str:
        """The protocol a process of this role speaks ("5" or "3.1.1").

        Why auto differs by role: the cloud needs MQTT 5 for shared subscriptions; an edge
        node needs nothing of 5 (its own acknowledgements make the uplink durable) and paho
        reads 3.1.1 PUBLISH packets, which carry no properties, about 40 % faster
        (docs/decisions/0005-edge-speaks-mqtt-311.md).
        """
        if self.protocol != "auto":
            return self.protocol
        return "3.1.1" if role == "edge" else "5"

class StoreSettings(Section):
    """Where the cloud tier writes and the dashboard reads."""

    url: str = Field("sqlite:///edgepipe.db", description=STORE_URL_HELP)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        # the full parse, not a prefix check: sqlite://x.db (two slashes) must stop
        # `config check`, not the cloud worker's start (imported here: it is heavier)
        from pipeline.cloud.store import parse_store_url

        try:
            parse_store_url(value)
        except ConfigError as exc:
            raise ValueError(exc.allowed) from None
        return value


class EdgeSettings(Section):
    """One edge node per site."""

    site: str = Field("farm", description="the site this node serves")
    state_dir: str = Field(".edgepipe", description="folder of the node's durable state")
    max_reading_bytes: int = Field(1024, ge=128, le=65536, description="larger readings are refused")
    future_skew_s: float = Field(300, ge=0, description="refuse readings this far ahead of the clock")
    max_age_s: float = Field(7 * 86400, gt=0, description="refuse readings older than this")
    batch_max_readings: int = Field(500, ge=1, le=100_000, description="readings per uplink batch")
    batch_interval_s: float = Field(1.0, gt=0, description="ship a partial batch after this long")
    health_interval_s: float = Field(10.0, gt=0, description="seconds between health messages")
    model_interval_s: float = Field(
        60.0, gt=0, description="seconds between model deltas (what the node learned per kind)"
    )
    model_key: str = Field(
        "", description="this site's model-delta signing key (HMAC-SHA256); empty: no deltas"
    )
    cloud_model_key: str = Field(
        "", description="key that verifies the cloud's merged models; empty: no warm start"
    )
    warm_start: bool = Field(True, description="new devices' detectors start from the merged model")
    detect: bool = Field(
        True, description="score every metric online and raise alerts; false: selection and aggregates only"
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port of the node; 0: off")
    metrics_host: str = Field("127.0.0.1", description="address /metrics listens on (0.0.0.0 in a container)")
    snapshot_interval_s: float = Field(
        60.0,
        ge=0,
        description="seconds between snapshots of the learned state (and one at a clean stop); 0: off, every start is cold",
    )
    snapshot_shards: int = Field(
        1024, ge=1, le=65536, description="files per-device state is spread over; only changed ones are rewritten"
    )
    snapshot_journal_mb: float = Field(
        256.0,
        gt=0,
        description="journal kept for the replay after the newest snapshot, at most; past it the oldest entries go (a gap, counted)",
    )

    @field_validator("site")
    @classmethod
    def _site(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError("letters, digits, '_' and '-', 1 to 64 characters")
        if value == "cloud":
            raise ValueError("'cloud' is reserved: {root}/cloud/... are the cloud tier's topics")
        return value


class SelectSettings(Section):
    """Data selection: which readings the edge ships at full resolution."""

    method: Literal["deadband", "swinging_door"] = Field(
        "swinging_door", description="deadband (step-hold) or swinging_door (linear) selection"
    )
    tolerance_resolutions: float = Field(
        5.0, ge=0, description="default tolerance, in multiples of the metric's resolution"
    )
    tolerances: dict[str, float] = Field(
        {}, description='per-metric tolerance in its unit, e.g. {"fridge.temp" = 0.3}'
    )
    heartbeat_s: float = Field(300.0, gt=0, description="ship at least this often per metric")
    anomaly_score: float = Field(
        0.8, gt=0, le=1, description="points scored at or above this ship at full resolution"
    )
    pre_anomaly_points: int = Field(5, ge=0, le=1000, description="points kept before an anomaly")
    post_anomaly_s: float = Field(60.0, ge=0, description="full resolution after an anomaly")

    @field_validator("tolerances")
    @classmethod
    def _tolerances(cls, value: dict[str, float]) -> dict[str, float]:
        # Whether kind.metric is in the catalogue is checked in load_settings, once [kinds.*]
        # (which may add or redefine kinds) is known: see check_catalog_references.
        for key, tol in value.items():
            if tol < 0:
                raise ValueError(f"{key}: tolerance must not be negative")
        return value


class AlertSettings(Section):
    """When anomaly scores become alerts (hysteresis, cooldown, severity)."""

    raise_score: float = Field(0.8, gt=0, le=1, description="raise at or above this score (0.8: a residual twice the usual largest)")
    clear_score: float = Field(0.5, gt=0, le=1, description="clear below this score")
    raise_after: int = Field(1, ge=1, description="consecutive readings at raise_score to raise")
    clear_after: int = Field(2, ge=1, description="consecutive readings below clear_score to clear (at least)")
    clear_after_s: float = Field(
        240.0, ge=0, description="... and this much event time from the first of them: the same hysteresis at 1 Hz and at 1/15 min"
    )
    cooldown_s: float = Field(60.0, ge=0, description="no new raise this long after a clear")
    critical_score: float = Field(0.99, gt=0, le=1, description="severity critical from this score")


class DetectorChoice(Section):
    """One kind's (or one kind.metric's) detector: a registered name or a river class path."""

    detector: str = Field(
        description='a river anomaly detector, e.g. "river.anomaly.HalfSpaceTrees", or a preset: "edge" (the default), "nab", "zscore"'
    )
    params: dict[str, Any] = Field({}, description="its constructor arguments")
    preprocess: str | None = Field(None, description='a river transformer run first, e.g. "river.preprocessing.StandardScaler"')
    preprocess_params: dict[str, Any] = Field({}, description="the transformer's constructor arguments")

    @model_validator(mode="after")
    def _buildable(self) -> DetectorChoice:
        from_choice(self)  # built once here: a bad class or parameter fails at load, not at the first reading
        return self


class DetectSettings(Section):
    """Which detector each kind's series run; scores of every detector go through [alert]."""

    kinds: dict[str, DetectorChoice] = Field(
        {}, description='per kind or kind.metric, e.g. [detect.kinds.freezer] detector = "river.anomaly.HalfSpaceTrees"'
    )
    builtin_priors: bool | None = Field(
        None,
        description="warm-start a new series of a built-in kind from the package's priors (at its"
        " reporting rate) while model sync has none: it scores after 10 readings, not 100, but is"
        " less sensitive for its first week. Unset: off for the node, on for edgepipe demo",
    )



class AggregateSettings(Section):
    """Tumbling windows per device and metric, on event time."""

    window_s: float = Field(60.0, gt=0, description="window length")
    lateness_s: float = Field(5.0, ge=0, description="allowed lateness (event time): windows close, dropouts are judged and irrigation zones are sequenced this far behind the site's newest readings")
    idle_s: float = Field(30.0, ge=0, description="close a quiet device's window this long after")


class UplinkSettings(Section):
    """The edge's disk-backed store-and-forward queue."""

    budget_mb: float = Field(256.0, gt=0, description="disk budget of queued messages")
    alert_reserve: float = Field(0.10, ge=0, le=1, description="share of the budget kept for alerts")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL", description="SQLite synchronous: NORMAL survives crashes, FULL power loss"
    )
    commit_interval_ms: float = Field(
        5.0, gt=0, le=1000, description="group commit: readings become durable (and PUBACKed) this often"
    )
    codec: Literal["delta-zstd", "json-zstd"] = Field(
        "delta-zstd", description="batch codec: delta-zstd (bounded error) or json-zstd (lossless)"
    )
    aggregate_codec: Literal["agg-zstd", "json"] = Field(
        "agg-zstd", description="aggregate codec: agg-zstd (quantised columns, bounded error) or json"
    )
    max_inflight: int = Field(64, ge=1, description="uplink messages sent and not yet acknowledged")
    ack_timeout_s: float = Field(
        30.0, gt=0, description="resend an unacknowledged message after (doubling, up to 8x, until an ack)"
    )


class CloudSettings(Section):
    """The ingest workers."""

    group: str = Field("edgepipe-cloud", description="shared-subscription group (MQTT 5)")
    client_id: str = Field("edgepipe-cloud-1", description="fixed id of this worker's session")
    flush_interval_s: float = Field(0.5, gt=0, description="longest wait before a store write")
    flush_points: int = Field(5000, ge=1, description="write when this many points are pending")
    merge_models: bool = Field(
        True, description="this worker merges model deltas: true on exactly one worker of a deployment"
    )
    model_keys: dict[str, str] = Field(
        {}, description='model-delta key per site, e.g. {farm = "..."}; other sites are refused'
    )
    model_key: str = Field("", description="key that signs the merged models; empty: none published")
    model_max_age_s: float = Field(
        600.0, gt=0, description="refuse model deltas created further than this from now"
    )
    model_norm_factor: float = Field(
        3.0, gt=1, description="refuse a delta weighing more than this x the site's median"
    )
    model_norm_floor: int = Field(
        10_000, ge=1, description="readings a delta may always weigh, whatever the median"
    )
    model_max_readings_per_s: float = Field(
        1000.0,
        gt=0,
        description="readings per second one site may learn per device kind: a delta weighs at"
        " most model_norm_floor + this x the seconds since the site's previous applied delta"
        " of the kind (or since its first delta was seen)",
    )
    model_max_site_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="largest share of a merged model's readings one site may hold once two or"
        " more sites contribute to it, give or take model_norm_floor readings (1: no cap)",
    )
    buffer_dir: str = Field(
        ".edgepipe/cloud", description="folder of the disk buffer used while the store is down"
    )
    buffer_mb: float = Field(
        256.0, gt=0, description="disk buffer budget; beyond it messages stay unacknowledged"
    )
    health_interval_s: float = Field(10.0, gt=0, description="seconds between worker health messages")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port of the worker; 0: off")
    metrics_host: str = Field("127.0.0.1", description="address /metrics listens on (0.0.0.0 in a container)")


class AnalystSettings(Section):
    """The fleet analyst (``edgepipe analyst``): cloud detectors over the sites' aggregates."""

    client_id: str = Field("edgepipe-analyst-1", description="fixed MQTT client id of this analyst")
    shard: str = Field("0/1", description="i/n: this analyst judges the sites whose id hashes to i of n")
    delay_windows: int = Field(
        2, ge=1, le=100, description="judge a window once its group has seen a window this many later"
    )
    suppress_s: float = Field(
        600.0, ge=0, description="raise nothing on a device and metric the edge alerted on within this margin"
    )
    peers: bool = Field(True, description="compare each device with its kind's devices at its site")
    horizon: bool = Field(
        False,
        description="also compare each device with its own previous days at the same hour"
        " (off: with days of weather it raised 219 false alarms on the quick bench, docs/analyst.md)",
    )
    peer_threshold_sd: float = Field(
        8.0, gt=0, description="raise when a device's smoothed residual from its peers is this many usual spreads out"
    )
    horizon_threshold_sd: float = Field(
        8.0, gt=0, description="raise when a device's smoothed residual from its previous days is this many spreads out"
    )
    restore_hours: float = Field(
        48.0, ge=0, le=24 * 14, description="on start, replay this many hours of stored aggregates (no alerts)"
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0: off")
    metrics_host: str = Field("127.0.0.1", description="address /metrics listens on")

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        parse_shard(value)
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError(f"{value!r} must match ^[A-Za-z0-9_-]{{1,64}}$")
        return value


def parse_shard(value: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ValueError otherwise."""
    parts = value.split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{value!r} is not i/n (e.g. 0/2)")
    i, n = int(parts[0]), int(parts[1])
    if not 0 <= i < n or n > 1024:
        raise ValueError(f"{value!r}: need 0 <= i < n <= 1024")
    return i, n


class SimSettings(Section):
    """Defaults of ``edgepipe sim`` (its flags override them)."""

    sites: list[str] = Field(["farm", "retail", "city"], description="sites to simulate")
    devices_per_site: int = Field(10, ge=1, le=100_000, description="devices per site")
    rate: float = Field(1.0, gt=0, description="readings per second per device")
    speed: float = Field(1.0, gt=0, description="simulated seconds per wall second")
    seed: int = Field(0, description="same seed, same stream")
    qos: Literal[0, 1] = Field(1, description="publish QoS")
    bad_rate: float = Field(0.0, ge=0, le=1, description="fraction of malformed payloads")
    anomaly_rate: float = Field(0.1, ge=0, description="anomalies per device per simulated hour")
    format: IngestFormat = Field(
        "edgepipe", description="payload format the devices publish in (a matching [[ingest]]: simulators/formats.py)"
    )
    inject: list[str] = Field(
        [],
        description='anomalies at given times, beside the random ones: "ANOMALY@SECONDS:DEVICE[.METRIC]",'
        ' e.g. ["spike@12:soil_probe-0001.moisture"] (seconds of simulated time from the start)',
    )

    @field_validator("inject")
    @classmethod
    def _inject(cls, value: list[str]) -> list[str]:
        """The form is checked at load; whether the run has the device, by the simulator."""
        from simulators.fleet import parse_inject

        for text in value:
            try:
                parse_inject(text)
            except ConfigError as exc:
                raise ValueError(f"{text!r}: {exc.allowed}") from None
        return value

    @field_validator("sites")
    @classmethod
    def _sites(cls, value: list[str]) -> list[str]:
        """Checked here, not only by the simulator: a bad site must stop ``sim`` before it connects."""
        from pipeline.protocol.catalog import domain_of_site

        if not value:
            raise ValueError("at least one site")
        for site in value:
            if not is_valid_id(site):
                raise ValueError(f"{site!r}: letters, digits, '_' and '-', 1 to 64 characters")
            domain_of_site(site)  # its ValueError names the site and the domains
        if len(set(value)) != len(value):
            raise ValueError("no site twice")
        return value


class DashboardSettings(Section):
    """The Streamlit dashboard."""

    port: int = Field(8501, ge=1, le=65535, description="HTTP port of the dashboard")
    address: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in a container)")
    refresh_s: float = Field(5.0, gt=0, description="seconds between live refreshes")


class LogSettings(Section):
    """What the edge node and the cloud worker log (to stderr)."""

    format: Literal["text", "json"] = Field(
        "text", description="text lines, or one JSON object per line (ts, level, logger, msg, fields)"
    )
    summary_interval_s: float = Field(60.0, gt=0, description="seconds between one-line summaries of the counters")
    warnings_per_min: int = Field(
        5, ge=0, description="dead-letter warnings logged per reason per minute; the rest are counted in one line"
    )




class IngestSettings(Section):
    """One ``[[ingest]]`` entry: a subscription and the format its messages are in.

    Field paths are a top-level name (``temperature``) or an RFC 6901 JSON pointer
    (``/sensor/temp``). docs/configuration.md "Ingest" has one example per format.
    """

    format: IngestFormat = Field(description="payload format: " + ", ".join(INGEST_FORMATS))
    topic: str = Field(
        "",
        description="MQTT topic pattern; levels {site}, {device}, {kind} capture; '' = the format's default",
    )
    kind: str = Field("", description="the device kind of every reading of this entry")
    kind_field: str = Field("", description="field path of the kind in the message (instead of kind)")
    device: str = Field("", description="a fixed device id (json, one device per entry)")
    device_field: str = Field("", description="field path of the device id; '' = the format's default")
    timestamp_field: str = Field("", description="field path of the time; '' = the format's default or arrival time")
    timestamp_unit: Literal["", "s", "ms", "us", "ns"] = Field(
        "", description="unit of numeric timestamps ('' = ms; influx-line: ns); strings are ISO 8601"
    )
    metrics: dict[str, str] = Field(
        {}, description="metric -> field path; empty: fields named like the kind's metrics"
    )
    scale: dict[str, float] = Field({}, description="metric -> factor its value is multiplied by")
    ignore: list[str] = Field([], description="fields that are neither metrics nor counted as extra")
    strict_ids: bool = Field(False, description="refuse ids outside [A-Za-z0-9_-]{1,64} instead of mapping them")
    max_bytes: int = Field(65536, ge=64, le=1_048_576, description="larger payloads are refused (too_large)")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        from pipeline.ingest.fields import TopicPattern

        if value:
            TopicPattern.parse(value)
        return value

    @field_validator("kind_field", "device_field", "timestamp_field")
    @classmethod
    def _path(cls, value: str) -> str:
        from pipeline.ingest.fields import check_path

        return check_path(value) if value else value

    @field_validator("metrics")
    @classmethod
    def _metric_paths(cls, value: dict[str, str]) -> dict[str, str]:
        from pipeline.ingest.fields import check_path

        for metric, path in value.items():
            if not is_valid_id(metric):
                raise ValueError(f"metric name {metric!r}: letters, digits, '_' and '-'")
            try:
                check_path(path)
            except ValueError as exc:
                raise ValueError(f"{metric}: {exc}") from None
        return value

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: dict[str, float]) -> dict[str, float]:
        for metric, factor in value.items():
            if not math.isfinite(factor) or factor == 0:
                raise ValueError(f"{metric}: a scale factor is a finite, non-zero number")
        return value

    @model_validator(mode="after")
    def _complete(self) -> IngestSettings:
        """Refuse an entry that could never make a reading (named field in the message)."""
        from pipeline.ingest.fields import TopicPattern

        fmt = self.format
        if fmt == "edgepipe":
            extra = [n for n in type(self).model_fields if n != "format" and getattr(self, n) != type(self).model_fields[n].default]
            if extra:
                raise ValueError(f"format edgepipe takes no other keys (got {', '.join(extra)})")
            return self
        if fmt == "json" and not self.topic:
            raise ValueError("topic: format json needs a topic pattern")
        pattern = TopicPattern.parse(self.topic) if self.topic else None
        if fmt == "json" and not (
            self.device or self.device_field or (pattern and (pattern.has("device") or pattern.levels[-1] == "#"))
        ):
            raise ValueError("format json needs device, device_field or {device} in the topic")
        if not (self.kind or self.kind_field or (pattern and pattern.has("kind")) or fmt == "influx-line"):
            raise ValueError(f"format {fmt} needs kind, kind_field or {{kind}} in the topic")
        unknown = sorted(set(self.scale) - set(self.metrics)) if self.metrics else []
        if unknown:
            raise ValueError(f"scale: {', '.join(unknown)} not in metrics")
        return self


class MetricSettings(Section):
    """One metric of a configured device kind."""

    unit: str = Field("", description="the unit shown with its values")
    resolution: float = Field(gt=0, description="the sensor's step; compression error is at most half of it")
    low: float = Field(description="lowest physical value; below is out_of_range")
    high: float = Field(description="highest physical value; above is out_of_range")
    tolerance: float | None = Field(None, ge=0, description="selection tolerance in the unit (default: select.tolerance_resolutions x resolution)")

    @model_validator(mode="after")
    def _range(self) -> MetricSettings:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and math.isfinite(self.resolution)):
            raise ValueError("low, high and resolution must be finite numbers")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class KindSettings(Section):
    """One ``[kinds.NAME]`` table: a device kind, added or replacing the built-in of that name."""

    domain: str = Field("any", description="farm, retail, city or any")
    metrics: dict[str, MetricSettings] = Field(min_length=1, description="metric name -> its table")

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, value: dict[str, MetricSettings]) -> dict[str, MetricSettings]:
        for name in value:
            if not is_valid_id(name):
                raise ValueError(f"metric name {name[:80]!r}: letters, digits, '_' and '-', 1 to 64 characters")
        return value


class LinkSettings(Section):
    """One ``[[links]]`` entry: a relation between two kinds' metrics that detection watches."""

    relation: str = Field(description="what source does to target: " + ", ".join(RELATIONS))
    source: str = Field(description="KIND.METRIC of the devices that act (waters: a flow, 0 when closed)")
    target: str = Field(description="KIND.METRIC of the devices acted on (waters: a soil moisture)")

    @field_validator("relation")
    @classmethod
    def _relation(cls, value: str) -> str:
        if value not in RELATIONS:
            raise ValueError(f"unknown relation {value[:80]!r}; known: {', '.join(RELATIONS)}")
        return value

    @field_validator("source", "target")
    @classmethod
    def _kind_metric(cls, value: str) -> str:
        kind, dot, metric = value.partition(".")
        if not (dot and is_valid_id(kind) and is_valid_id(metric)):
            raise ValueError(f"{value[:80]!r} is not KIND.METRIC, e.g. irrigation_valve.flow")
        return value

    def link(self) -> Link:
        source_kind, _, source_metric = self.source.partition(".")
        target_kind, _, target_metric = self.target.partition(".")
        return Link(self.relation, (source_kind, source_metric), (target_kind, target_metric))


def _default_links() -> list[LinkSettings]:
    return [
        LinkSettings(relation=link.relation, source=".".join(link.source), target=".".join(link.target))
        for link in DEFAULT_LINKS
    ]


class Settings(BaseSettings):
    """All of edgepipe's settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="EDGEPIPE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    mqtt: MqttSettings = MqttSettings()
    store: StoreSettings = StoreSettings()
    edge: EdgeSettings = EdgeSettings()
    select: SelectSettings = SelectSettings()
    alert: AlertSettings = AlertSettings()
    detect: DetectSettings = DetectSettings()
    aggregate: AggregateSettings = AggregateSettings()
    uplink: UplinkSettings = UplinkSettings()
    cloud: CloudSettings = CloudSettings()
    analyst: AnalystSettings = AnalystSettings()
    sim: SimSettings = SimSettings()
    dashboard: DashboardSettings = DashboardSettings()
    log: LogSettings = LogSettings()
    ingest: list[IngestSettings] = []  # [[ingest]]: empty means one edgepipe entry
    kinds: dict[str, KindSettings] = {}  # [kinds.NAME]: added to (or replacing) the built-ins
    links: list[LinkSettings] = Field(default_factory=_default_links)  # [[links]]: replace the built-in link

    @field_validator("kinds")
    @classmethod
    def _kind_names(cls, value: dict[str, KindSettings]) -> dict[str, KindSettings]:
        for name in value:
            if not is_valid_id(name):
                raise ValueError(f"kind name {name[:80]!r}: letters, digits, '_' and '-', 1 to 64 characters")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file") is not None:
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    other_env: Iterable[str] = (),
) -> Settings:
    """Load settings once: file (``path`` or ``$EDGEPIPE_CONFIG``), environment, overrides.

    ``overrides`` maps dotted keys (``"mqtt.url"``) to values given on the command line.
    ``other_env`` names further ``EDGEPIPE_*`` variables that are not settings (the CLI's
    option variables); any other ``EDGEPIPE_*`` variable that names no setting is an error.
    Raises :class:`ConfigError` naming the first bad key.
    """
    check_environment(other_env)
    path = path or os.environ.get(CONFIG_ENV) or None
    source_cls: type[Settings] = Settings
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError("--config", str(path), "no such file")
        try:
            # bytes, as the settings source reads them: read_text() would turn a lone CR
            # into a newline and pass a file the source then fails on (found by fuzzing)
            tomllib.loads(file.read_bytes().decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("--config", str(path), f"not valid TOML: {exc}") from None
        config = SettingsConfigDict(**{**Settings.model_config, "toml_file": file})
        source_cls = type("FileSettings", (Settings,), {"model_config": config})
    try:
        settings = source_cls(**_nest(overrides or {}))
    except ValidationError as exc:
        raise _config_error(exc) from None
    settings = Settings.model_validate(settings.model_dump())
    check_catalog_references(settings)
    return settings


# Settings fields that are not one [section] of keys: [[ingest]], [kinds.NAME] and [[links]].
TABLE_FIELDS = ("ingest", "kinds", "links")


def section_names() -> list[str]:
    """The ``[section]`` tables of plain keys (what sample, show and the reference list)."""
    return [name for name in Settings.model_fields if name not in TABLE_FIELDS]


def catalog_of(settings: Settings) -> Catalog:
    """The built-in kinds, then every ``[kinds.NAME]`` (same name: replaced)."""
    return BUILTIN.with_kinds(
        {
            name: DeviceKind(
                name,
                spec.domain,
                {m: Metric(m, ms.unit, ms.resolution, ms.low, ms.high, ms.tolerance) for m, ms in spec.metrics.items()},
            )
            for name, spec in settings.kinds.items()
        }
    )


def links_of(settings: Settings) -> list[Link]:
    """The ``[[links]]`` detection watches (the built-in one when the file gives none)."""
    return [entry.link() for entry in settings.links]


def check_catalog_references(settings: Settings) -> None:
    """Every kind and metric a setting names exists in the catalogue (built-ins + [kinds])."""
    catalog = catalog_of(settings)
    for key, _tol in settings.select.tolerances.items():
        kind, _, metric = key.partition(".")
        if catalog.metric(kind, metric) is None:
            raise ConfigError("select.tolerances", key, "not a kind.metric of the catalogue")
    for key in settings.detect.kinds:  # [kinds.NAME] count: a configured kind may choose its detector
        kind, dot, metric = key.partition(".")
        if kind not in catalog.kinds or (dot and catalog.metric(kind, metric) is None):
            raise ConfigError("detect.kinds", key, "not a kind or kind.metric of the catalogue")
    for i, entry in enumerate(settings.ingest):
        if entry.kind and entry.kind not in catalog.kinds:
            raise ConfigError(f"ingest.{i}.kind", entry.kind, f"unknown kind; known: {', '.join(sorted(catalog.kinds))}")
        if entry.kind and entry.metrics:
            missing = sorted(set(entry.metrics) - set(catalog.kinds[entry.kind].metrics))
            if missing:
                raise ConfigError(f"ingest.{i}.metrics", missing[0], f"not a metric of kind {entry.kind}")
    seen: dict[Link, int] = {}
    for i, link in enumerate(links_of(settings)):
        for end, (kind, metric) in (("source", link.source), ("target", link.target)):
            if kind not in catalog.kinds:
                raise ConfigError(f"links.{i}.{end}", f"{kind}.{metric}", f"unknown kind; known: {', '.join(sorted(catalog.kinds))}")
            if catalog.metric(kind, metric) is None:
                metrics = ", ".join(catalog.kinds[kind].metrics)
                raise ConfigError(f"links.{i}.{end}", f"{kind}.{metric}", f"not a metric of kind {kind}; its metrics: {metrics}")
        if link.source[0] == link.target[0]:
            raise ConfigError(f"links.{i}.target", ".".join(link.target), "the same kind as source: a link relates two kinds")
        if link in seen:
            raise ConfigError(f"links.{i}", str(link), f"the same link as links.{seen[link]}")
        seen[link] = i


def check_environment(other_env: Iterable[str] = ()) -> None:
    """Refuse an ``EDGEPIPE_*`` variable that names no setting.

    Why: pydantic-settings ignores it silently, so ``EDGEPIPE_EDGE_SITE=retail`` (one
    underscore) would leave the site at its default without a word. The value is not shown:
    it may be a key.
    """
    known = {name.upper() for name in (*NON_SETTINGS_ENV, *other_env)}
    for name in sorted(os.environ):
        upper = name.upper()  # pydantic-settings reads names case-insensitively
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        if _names_a_setting(upper.removeprefix(ENV_PREFIX).split("__")):
            continue
        allowed = f"unknown environment variable; settings are {ENV_PREFIX}<SECTION>__<KEY>"
        spelled = _env_name_like(upper)
        if spelled:
            allowed += f": did you mean {spelled}?"
        raise ConfigError(name, None, allowed, show_value=False)


def _names_a_setting(parts: list[str]) -> bool:
    """Whether SECTION, SECTION__KEY (or SECTION__KEY__ENTRY of a table) names a setting."""
    section = Settings.model_fields.get(parts[0].lower())
    if section is None or section.annotation is None:
        return False
    if len(parts) == 1:
        return True  # a whole section as JSON
    if parts[0].lower() in TABLE_FIELDS:
        return False  # [[ingest]] and [kinds] are given whole, as JSON
    field = section.annotation.model_fields.get(parts[1].lower())
    if field is None:
        return False
    return len(parts) == 2 or getattr(field.annotation, "__origin__", None) is dict


def _env_name_like(upper: str) -> str | None:
    """The setting's environment name that ``upper`` misspells with single underscores."""
    squashed = upper.replace("__", "_")
    for section in section_names():
        field = Settings.model_fields[section]
        for name in field.annotation.model_fields:  # type: ignore[union-attr]
            env = f"{ENV_PREFIX}{section.upper()}__{name.upper()}"
            if env.replace("__", "_") == squashed:
                return env
    return None


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = value
    return nested


def _config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        # a misspelled section ([egde]) is named, not dumped with everything under it
        return ConfigError(key, value, "unknown key", show_value=not isinstance(value, dict))
    return ConfigError(key, value, message)


def sample_config() -> str:
    """A commented TOML file of every setting and its default (``edgepipe config sample``)."""
    lines = [
        "# edgepipe configuration. Every key is optional; shown values are the defaults.",
        "# Environment overrides: EDGEPIPE_<SECTION>__<KEY>, e.g. EDGEPIPE_MQTT__URL.",
    ]
    defaults = Settings.model_construct()
    for section_name in section_names():
        section_field = Settings.model_fields[section_name]
        section = getattr(defaults, section_name)
        doc = (section_field.annotation.__doc__ or "").strip().splitlines()
        lines += ["", f"[{section_name}]"]
        if doc:
            lines.append(f"# {doc[0]}")
        for name, info in type(section).model_fields.items():
            value = getattr(section, name)
            if info.description:
                lines.append(f"# {info.description}")
            if value is None:
                lines.append(f"# {name} = ")
            else:
                lines.append(f"{name} = {_toml_value(value)}")
    lines += ["", "# Cross-device links (docs/detection.md); given ones replace these, links = [] drops them."]
    lines += _links_as_toml(defaults.links)
    return "\n".join(lines).rstrip("\n") + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + (f" {items} " if items else "") + "}"
    raise TypeError(f"no TOML form for {value!r}")


def settings_as_toml(settings: Settings) -> str:
    """The effective settings as TOML (``edgepipe config show``)."""
    lines: list[str] = [] if settings.links else ["links = []  # no cross-device links", ""]
    for section_name in section_names():
        section = getattr(settings, section_name)
        lines += [f"[{section_name}]"]
        for name in type(section).model_fields:
            value = getattr(section, name)
            if value and name.endswith(("_key", "_keys")):  # secrets are never printed
                value = {k: "***" for k in value} if isinstance(value, dict) else "***"
            if value is not None:
                lines.append(f"{name} = {_toml_value(value)}")
        lines.append("")
    for entry in settings.ingest:
        lines.append("[[ingest]]")
        for name, info in type(entry).model_fields.items():
            value = getattr(entry, name)
            if name == "format" or value != info.default:
                lines.append(f"{name} = {_toml_value(value)}")
        lines.append("")
    lines += _links_as_toml(settings.links)
    for kind_name, kind in settings.kinds.items():
        lines += [f"[kinds.{kind_name}]", f"domain = {_toml_value(kind.domain)}", ""]
        for metric_name, metric in kind.metrics.items():
            lines.append(f"[kinds.{kind_name}.metrics.{metric_name}]")
            for name in type(metric).model_fields:
                value = getattr(metric, name)
                if value is not None:
                    lines.append(f"{name} = {_toml_value(value)}")
            lines.append("")
    return "\n".join(lines)


def _links_as_toml(links: list[LinkSettings]) -> list[str]:
    """``[[links]]`` entries; ``links = []`` (a top-level key, before any table) when there are none."""
    if not links:
        return []  # written first by the caller
    lines: list[str] = []
    for link in links:
        lines += ["[[links]]", *(f"{name} = {_toml_value(getattr(link, name))}" for name in type(link).model_fields), ""]
    return lines


REFERENCE_INTRO = """# Configuration

Settings come from one TOML file (`--config FILE` or `$EDGEPIPE_CONFIG`), then `EDGEPIPE_*`
environment variables, then command-line flags (highest). Every section refuses unknown keys.
A bad value stops the command with exit code 2 and one line naming the dotted key, e.g.

```
edgepipe: config error: edge.sitee = 'farm': unknown key
```

`edgepipe config sample` prints every key with its default; `edgepipe config show` prints the
effective settings; `edgepipe config check` validates them.

The environment name of a key is `EDGEPIPE_<SECTION>__<KEY>` in capitals, e.g.
`EDGEPIPE_MQTT__URL`. Lists and tables are given as JSON:
`EDGEPIPE_SIM__SITES='["farm","city"]'`. Any other `EDGEPIPE_*` variable (but
`EDGEPIPE_CONFIG` and those of command-line options) is an error naming it, so that a
misspelled one (`EDGEPIPE_EDGE_SITE`, one underscore) cannot be ignored silently.

This page is generated: `edgepipe config sample --markdown > docs/configuration.md`.
"""


def reference_markdown() -> str:
    """docs/configuration.md: every key, its default, its environment name and meaning."""
    out = [REFERENCE_INTRO]
    defaults = Settings.model_construct()
    for section_name in section_names():
        model = Settings.model_fields[section_name].annotation
        doc = (model.__doc__ or "").strip().splitlines()
        out += [f"## `[{section_name}]`", ""]
        if doc:
            out += [doc[0], ""]
        out += ["| key | default | environment | meaning |", "|---|---|---|---|"]
        section = getattr(defaults, section_name)
        for name, info in type(section).model_fields.items():
            value = getattr(section, name)
            shown = "(none)" if value is None else f"`{_toml_value(value)}`"
            env = f"EDGEPIPE_{section_name.upper()}__{name.upper()}"
            meaning = (info.description or "").replace("|", "\\|")
            out.append(f"| `{section_name}.{name}` | {shown} | `{env}` | {meaning} |")
        out.append("")
    out += _table_reference("ingest", "[[ingest]]", IngestSettings, INGEST_INTRO)
    for fmt, example in INGEST_EXAMPLES.items():
        out += [f"### `{fmt}`", "", "```toml", example.strip(), "```", ""]
    out += _table_reference("kinds", "[kinds.NAME]", KindSettings, KINDS_INTRO)
    out += _table_reference("kinds.NAME.metrics", "[kinds.NAME.metrics.METRIC]", MetricSettings, "")
    out += ["```toml", KINDS_EXAMPLE.strip(), "```", ""]
    out += _table_reference("links", "[[links]]", LinkSettings, LINKS_INTRO)
    out += ["```toml", LINKS_EXAMPLE.strip(), "```", ""]
    return "\n".join(out)


def _table_reference(key: str, title: str, model: type[BaseModel], intro: str) -> list[str]:
    out = [f"## `{title}`", ""]
    if intro:
        out += [intro.strip(), ""]
    out += ["| key | default | meaning |", "|---|---|---|"]
    for name, info in model.model_fields.items():
        shown = "(required)" if info.is_required() else f"`{_toml_value(info.default)}`" if info.default is not None else "(none)"
        meaning = (info.description or "").replace("|", "\\|")
        out.append(f"| `{key}.{name}` | {shown} | {meaning} |")
    out.append("")
    return out


INGEST_INTRO = """
Each `[[ingest]]` entry subscribes to a topic pattern and turns the messages in its format into
readings before validation (docs/protocol.md "Ingest adapters" has the mapping rules and
docs/decisions/0008-ingest-adapters.md the reasons). With no entry, the node takes edgepipe's own
protocol on `{root}/{site}/dev/+`; once entries are given, only those are subscribed, so list
`format = "edgepipe"` too to keep it. A field path is a top-level field name or an RFC 6901 JSON
pointer (`/a/b/0`). Metric paths of `ttn` and `chirpstack` are read inside the decoded payload
(`uplink_message.decoded_payload`, `object`); every other path is read in the whole message.
For `influx-line`, `device_field` and `kind_field` name tags and `metrics` name fields.
`[[ingest]]` entries are given in the file (or whole, as JSON, in `EDGEPIPE_INGEST`).
`edgepipe sim --format F` publishes in each format; simulators/formats.py has the entry
that reads it.
"""

KINDS_INTRO = """
Device kinds: the built-in ones (pipeline/protocol/catalog.py) plus every `[kinds.NAME]`, which
adds a kind or replaces the built-in one of that name. The edge publishes its catalogue retained on
`{root}/{site}/edge/catalog` (docs/protocol.md).
"""

INGEST_EXAMPLES = {
    "edgepipe": """
[[ingest]]
format = "edgepipe"          # edgepipe's own readings on {root}/{site}/dev/+
""",
    "json": """
[[ingest]]
format = "json"
topic = "sensors/{site}/{device}/state"   # captures the device id; {site} is the node's site
kind = "air_quality"
timestamp_field = "/meta/time"            # Unix ms, or an ISO 8601 string
timestamp_unit = "ms"
metrics = { pm25 = "/pm/2_5", no2 = "no2_ppb" }
scale = { no2 = 1.88 }                    # ppb -> µg/m³
ignore = ["rssi", "firmware"]
""",
    "ttn": """
[[ingest]]
format = "ttn"                            # The Things Stack v3 MQTT uplinks
topic = "v3/+/devices/+/up"               # the default
kind = "soil_probe"
metrics = { moisture = "soil_moisture", soil_temp = "soil_temperature" }
ignore = ["battery"]
""",
    "chirpstack": """
[[ingest]]
format = "chirpstack"                     # ChirpStack v4 MQTT integration, JSON
topic = "application/+/device/+/event/up" # the default
kind_field = "/deviceInfo/deviceProfileName"
device_field = "/deviceInfo/devEui"        # the default
""",
    "zigbee2mqtt": """
[[ingest]]
format = "zigbee2mqtt"
topic = "zigbee2mqtt/#"                   # the default; the device is the friendly name
kind = "fridge"
metrics = { temp = "temperature", door = "contact" }
ignore = ["battery", "linkquality", "voltage"]
""",
    "influx-line": """
[[ingest]]
format = "influx-line"                    # as Telegraf's outputs.mqtt writes it
topic = "telegraf/#"                      # the default
device_field = "host"                     # the tag naming the device (default: device)
kind = "noise_meter"                      # default: the measurement name
metrics = { noise = "dba" }
""",
}

KINDS_EXAMPLE = """
[kinds.cold_room]
domain = "retail"

[kinds.cold_room.metrics.temp]
unit = "°C"
resolution = 0.1
low = -40.0
high = 30.0
tolerance = 0.3

[kinds.cold_room.metrics.door]
unit = "open"
resolution = 1.0
low = 0.0
high = 1.0
"""

LINKS_INTRO = """
Cross-device detection follows these links (docs/detection.md "Links from configuration").
Relation `waters`: the source metric, a flow that is 0 while closed, waters the target metric, a
soil moisture, of the devices each source device is learned to water; a leak (an unusual opening
its detector flags, below half its usual flow) then raises alerts with cause `leak` on the
target devices whose moisture climbs above their trend. One stage per link; its kinds' readings
are put in event-time order (`aggregate.lateness_s`). Without `[[links]]` the built-in link below
applies; entries given in the file replace it (list it too to keep it), and `links = []` (a
top-level key, before any table) turns cross-device detection off. Source and target name kinds
and metrics of the catalogue (built-ins and `[kinds.NAME]`); given whole, as JSON, in
`EDGEPIPE_LINKS`.
"""

LINKS_EXAMPLE = """
[[links]]                                  # the built-in link, the default
relation = "waters"
source = "irrigation_valve.flow"
target = "soil_probe.moisture"

[[links]]                                  # valves and probes of a kind of one's own
relation = "waters"
source = "valve_v2.water_flow"             # needs [kinds.valve_v2] with metric water_flow
target = "probe_v2.vwc"
"""
