"""Ingest adapters: foreign device payloads turned into edgepipe readings before validation.

This package is pure (no MQTT, no disk, no clock): ``registry.ADAPTERS`` maps a format name
(the ``format`` of an ``[[ingest]]`` entry) to its adapter class, and ``router.IngestRouter``
picks the entry whose topic pattern a message matches. docs/decisions/0008-ingest-adapters.md
says why adapters run before validation and how foreign ids become edgepipe ids.
"""

from __future__ import annotations
