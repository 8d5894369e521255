"""``edgepipe``: edgepipe's own readings on ``{root}/{site}/dev/{device}`` (docs/protocol.md).

The edge node does not call this adapter: native readings keep their direct path through
the validator (the node's hot path, unchanged). It is here so that the format is in the
registry like any other, with the same contract and the same property tests.
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.errors import ProtocolError
from pipeline.ingest.base import Decoded, Refused
from pipeline.ingest.fields import TopicPattern
from pipeline.protocol.catalog import BUILTIN, Catalog
from pipeline.protocol.json_codec import decode
from pipeline.protocol.messages import Reading
from pipeline.protocol.topics import DEFAULT_ROOT


class EdgepipeAdapter:
    format: ClassVar[str] = "edgepipe"

    def __init__(self, site: str, root: str = DEFAULT_ROOT, catalog: Catalog = BUILTIN) -> None:
        self.site = site
        self.catalog = catalog
        self.pattern = TopicPattern.parse(f"{root}/{{site}}/dev/{{device}}")

    def subscription(self) -> str:
        return self.pattern.subscription(self.site)

    def decode_one(self, topic: str, payload: bytes, arrival_ms: int, retained: bool = False) -> Decoded:
        try:
            return Decoded(readings=[decode(payload, Reading, max_bytes=65536)])
        except ProtocolError as exc:
            return Decoded(refused=[Refused(exc.reason, exc.detail, payload)])
