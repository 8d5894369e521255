"""The wire protocol: topics, message types, reasons and codecs (docs/protocol.md)."""

from __future__ import annotations

from pipeline.protocol.batch_codec import decode_batch, encode_batch
from pipeline.protocol.json_codec import ReadingLimits, decode, decode_reading, encode
from pipeline.protocol.messages import (
    SCHEMA_VERSION,
    Ack,
    Aggregate,
    AggregateBatch,
    Alert,
    AlertData,
    Batch,
    DeadLetter,
    Health,
    Label,
    Reading,
)
from pipeline.protocol.reasons import Reason
from pipeline.protocol.topics import Topic, TopicKind, Topics, is_valid_id

__all__ = [
    "SCHEMA_VERSION",
    "Ack",
    "Aggregate",
    "AggregateBatch",
    "Alert",
    "AlertData",
    "Batch",
    "DeadLetter",
    "Health",
    "Label",
    "Reading",
    "ReadingLimits",
    "Reason",
    "Topic",
    "TopicKind",
    "Topics",
    "decode",
    "decode_batch",
    "decode_reading",
    "encode",
    "encode_batch",
    "is_valid_id",
]
