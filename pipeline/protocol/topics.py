"""Build and parse every topic under the root (default ``edgepipe/v1``).

The site comes first so that one broker ACL line per role confines a site's devices and
edge node to their own subtree. Parsing checks the exact level count and every id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pipeline.errors import ProtocolError
from pipeline.protocol.reasons import Reason

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_ROOT = "edgepipe/v1"


def is_valid_id(value: str) -> bool:
    """True for a site, device or kind id that is safe in topics, tags and line protocol."""
    return ID_PATTERN.fullmatch(value) is not None


class TopicKind(StrEnum):
    READING = "dev"
    LABELS = "labels"
    ALERT = "alerts"
    DEADLETTER = "deadletter"
    EDGE_BATCH = "edge/batch"
    EDGE_AGG = "edge/agg"
    EDGE_MODEL = "edge/model"
    EDGE_HEALTH = "edge/health"
    EDGE_CATALOG = "edge/catalog"
    EDGE_ESCALATION = "edge/escalation"
    CLOUD_MODEL = "cloud/model"
    CLOUD_ACK = "cloud/ack"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: its kind, the site (or ``cloud``), and the device or device kind."""

    kind: TopicKind
    site: str
    subject: str = ""


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic builder and parser bound to one root."""

    root: str = DEFAULT_ROOT

    def reading(self, site: str, device: str) -> str:
        return f"{self.root}/{site}/dev/{device}"

    def readings(self, site: str = "+") -> str:
        return f"{self.root}/{site}/dev/+"

    def labels(self, site: str) -> str:
        return f"{self.root}/{site}/labels"

    def alert(self, site: str, device: str) -> str:
        return f"{self.root}/{site}/alerts/{device}"

    def alerts(self, site: str = "+") -> str:
        return f"{self.root}/{site}/alerts/+"

    def deadletter(self, site: str) -> str:
        return f"{self.root}/{site}/deadletter"

    def edge(self, site: str, what: str) -> str:
        """``what`` is one of batch, agg, model, health, catalog."""
        return f"{self.root}/{site}/edge/{what}"

    def edges(self, what: str = "+") -> str:
        return f"{self.root}/+/edge/{what}"

    def cloud_model(self, kind: str) -> str:
        return f"{self.root}/cloud/model/{kind}"

    def cloud_ack(self, site: str) -> str:
        return f"{self.root}/cloud/ack/{site}"

    def cloud_health(self, worker: str) -> str:
        return f"{self.root}/cloud/health/{worker}"

    def parse(self, topic: str) -> Topic:
        """Parse a topic under this root, or raise ``ProtocolError(BAD_TOPIC)``."""
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            raise ProtocolError(Reason.BAD_TOPIC, f"not under {self.root}: {topic!r}")
        levels = topic[len(prefix) :].split("/")
        site = levels[0]
        if not is_valid_id(site):
            raise ProtocolError(Reason.BAD_TOPIC, f"invalid site id in {topic!r}")
        rest = levels[1:]
        parsed = _parse_rest(site, rest)
        if parsed is None:
            raise ProtocolError(Reason.BAD_TOPIC, f"unknown topic {topic!r}")
        return parsed


def _parse_rest(site: str, rest: list[str]) -> Topic | None:
    match rest:
        case ["dev", device] if is_valid_id(device):
            return Topic(TopicKind.READING, site, device)
        case ["alerts", device] if is_valid_id(device):
            return Topic(TopicKind.ALERT, site, device)
        case ["labels"]:
            return Topic(TopicKind.LABELS, site)
        case ["deadletter"]:
            return Topic(TopicKind.DEADLETTER, site)
        case ["edge", ("batch" | "agg" | "model" | "health" | "catalog" | "escalation") as what]:
            return Topic(TopicKind(f"edge/{what}"), site)
        case ["model", kind] if site == "cloud" and is_valid_id(kind):
            return Topic(TopicKind.CLOUD_MODEL, site, kind)
        case ["ack", edge_site] if site == "cloud" and is_valid_id(edge_site):
            return Topic(TopicKind.CLOUD_ACK, site, edge_site)
    return None
