"""Why an alert was raised: the cause that starts every alert's ``reason`` (docs/protocol.md)."""

from __future__ import annotations

from enum import StrEnum


class Cause(StrEnum):
    """Alert causes; the wire carries the value as the first word of the alert's ``reason``.

    A ``StrEnum``: ``Cause.STUCK == "stuck"`` and ``f"{Cause.STUCK}: ..."`` is ``"stuck: ..."``,
    so the reason strings on the wire are unchanged from when causes were bare strings.
    """

    ANOMALY = "anomaly"  # the value is unusual for its series
    STUCK = "stuck"  # the value repeats far longer than the series usually repeats any value
    RELATION = "relation"  # linked metrics of a device no longer move together
    LEAK = "leak"  # a valve flows partly at an unscheduled time, or a probe it waters soaks
    DROPOUT = "dropout"  # the device is silent far longer than its usual interval
    PEERS = "peers"  # (cloud analyst) the device left its place among its kind's devices at its site
    HORIZON = "horizon"  # (cloud analyst) the device left its own previous days at the same hour


DEVICE_METRIC = "_device"  # the metric of a device-level alert (dropout): a valid id, reserved
