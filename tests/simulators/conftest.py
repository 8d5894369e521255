"""Fixtures for the simulator tests: shared runs, computed once per session, as fast as possible."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from simstream import Stream, simulate


@pytest.fixture
def sim() -> Callable[..., Stream]:
    return simulate


@pytest.fixture(scope="session")
def week() -> Stream:
    """Seven clean days of 20 devices per domain, one reading per 10 minutes."""
    return simulate(devices_per_site=20, rate=1 / 600, duration=7 * 86_400, anomaly_rate=0.0)


@pytest.fixture(scope="session")
def anomalous() -> Stream:
    """Two days at one reading per minute with many anomalies (1 per device-hour)."""
    return simulate(devices_per_site=20, rate=1 / 60, duration=2 * 86_400, anomaly_rate=1.0)


@pytest.fixture(scope="session")
def clean() -> Stream:
    """The same run as ``anomalous`` with anomalies switched off."""
    return simulate(devices_per_site=20, rate=1 / 60, duration=2 * 86_400, anomaly_rate=0.0)
