"""Why a payload was refused: the reason code carried by every dead letter."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Dead-letter reason codes (docs/protocol.md lists what each means)."""

    BAD_TOPIC = "bad_topic"  # wrong level count, unknown message type, invalid id in the topic
    TOO_LARGE = "too_large"  # payload over the size limit for its type
    NOT_UTF8 = "not_utf8"
    EMPTY = "empty"
    BAD_JSON = "bad_json"
    TOO_DEEP = "too_deep"  # JSON nested deeper than allowed
    NOT_OBJECT = "not_object"
    UNKNOWN_VERSION = "unknown_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"  # NaN, Infinity, or a number that overflows a double
    BAD_ID = "bad_id"  # a device or site id outside ^[A-Za-z0-9_-]{1,64}$
    TOPIC_MISMATCH = "topic_mismatch"  # the id in the payload differs from the topic's
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_METRIC = "unknown_metric"
    OUT_OF_RANGE = "out_of_range"  # outside the metric's physical range
    NO_METRICS = "no_metrics"
    FUTURE_TS = "future_ts"
    STALE_TS = "stale_ts"
    DUPLICATE = "duplicate"  # seq not newer than the last accepted one from the device
    KIND_CHANGED = "kind_changed"  # a device's reading names another kind than it was first seen with
    BAD_SIGNATURE = "bad_signature"
    UNSIGNED = "unsigned"  # a model delta or merged model without a signature
    UNKNOWN_SITE = "unknown_site"  # a model delta from a site with no key configured
    REPLAYED = "replayed"  # a model delta not newer than the last one applied (site, kind)
    BAD_SHAPE = "bad_shape"  # model statistics of the wrong length or inconsistent counts
    NORM_TOO_LARGE = "norm_too_large"  # a model delta that weighs far more than usual
    RATE_TOO_HIGH = "rate_too_high"  # a model delta with more readings than its site could learn
    SHARE_TOO_LARGE = "share_too_large"  # a model delta that would let one site dominate a merge
    STORE_REJECTED = "store_rejected"  # the store refused this record (e.g. InfluxDB type conflict)
    HANDLER_ERROR = "handler_error"  # a bug in our own code, caught so the loop survives
    # ingest adapters (foreign formats, docs/protocol.md "Ingest adapters")
    BAD_TIMESTAMP = "bad_timestamp"  # a foreign timestamp that is not a time (or out of any range)
    BAD_LINE = "bad_line"  # an InfluxDB line-protocol line that does not parse
    NO_INGEST_ROUTE = "no_ingest_route"  # a message on a subscribed topic no [[ingest]] entry maps
    ADAPTER_ERROR = "adapter_error"  # an ingest adapter failed on a payload (a bug, caught)
