"""The registry has every configured format, and the router picks the entry by topic."""

from __future__ import annotations

from typing import get_args

from ingestkit import entry

from pipeline.config import INGEST_FORMATS, IngestFormat
from pipeline.ingest.base import Adapter
from pipeline.ingest.registry import ADAPTERS, NATIVE
from pipeline.ingest.router import IngestRouter


def test_every_format_the_config_accepts_is_registered_and_nothing_else() -> None:
    assert set(ADAPTERS) | {NATIVE} == set(INGEST_FORMATS) == set(get_args(IngestFormat))


def test_every_adapter_satisfies_the_adapter_protocol() -> None:
    for fmt, cls in ADAPTERS.items():
        keys: dict[str, object] = {"kind": "fridge"}
        if fmt == "json":
            keys |= {"topic": "x/{device}"}
        assert isinstance(cls(entry(fmt, **keys), site="retail"), Adapter)


def test_no_entries_means_native_only() -> None:
    router = IngestRouter([], site="farm")
    assert router.native and not router.foreign
    assert router.subscriptions() == ["edgepipe/v1/farm/dev/+"]


def test_configured_entries_replace_the_native_one_unless_listed() -> None:
    ttn = entry("ttn", kind="soil_probe")
    assert IngestRouter([ttn], site="farm").subscriptions() == ["v3/+/devices/+/up"]
    both = IngestRouter([entry("edgepipe"), ttn], site="farm")
    assert both.subscriptions() == ["edgepipe/v1/farm/dev/+", "v3/+/devices/+/up"]


def test_the_first_matching_entry_wins() -> None:
    specific = entry("json", topic="s/special/{device}", kind="fridge")
    general = entry("json", topic="s/+/{device}", kind="freezer")
    router = IngestRouter([specific, general], site="retail")
    assert router.route("s/special/a") is router.adapters[0]
    assert router.route("s/other/a") is router.adapters[1]
    assert router.route("elsewhere") is None
