"""Exception tree of edgepipe.

    EdgepipeError
    ├── ConfigError        a setting is invalid; the CLI prints it on one line and exits 2
    ├── ProtocolError      a payload or topic does not follow docs/protocol.md; carries a Reason
    ├── StoreError         the store cannot be opened, written or read
    └── ServiceError       a required external program (mosquitto, influxd) is missing or failed

Stages raise these; the CLI turns them into exit codes, message loops turn
``ProtocolError`` into dead letters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.protocol.reasons import Reason


class EdgepipeError(Exception):
    """Base of every error edgepipe raises on purpose."""


class ConfigError(EdgepipeError):
    """A bad setting: names the dotted key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str, *, show_value: bool = True) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        # show_value=False for a whole misspelled section: its content would bury the key
        shown = f"{key} = {value!r}" if show_value else key
        super().__init__(f"config error: {shown}: {allowed}")


class ProtocolError(EdgepipeError):
    """A payload that cannot be accepted, with the typed reason why."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class StoreError(EdgepipeError):
    """The store could not do what was asked."""


class ServiceError(EdgepipeError):
    """An external program the command needs is missing or failed to start."""
