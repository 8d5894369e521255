"""RELIABILITY.md R2: a hung InfluxDB cannot hang the writer: every request has a finite timeout."""

from __future__ import annotations

import math

from pipeline.cloud.store import open_store
from pipeline.cloud.store.influx import InfluxStore
from pipeline.services import free_port


def test_the_influx_store_has_finite_connect_and_read_timeouts_by_default() -> None:
    store = open_store(f"influxdb://127.0.0.1:{free_port()}/edgepipe")  # nothing listens
    assert isinstance(store, InfluxStore)
    timeout = store._pool.timeout  # noqa: SLF001 - the pool's default, used by every request
    connect, read = timeout.connect_timeout, timeout.read_timeout
    print(f"\ndefault InfluxStore timeouts: connect {connect} s, read {read} s")
    assert isinstance(connect, float) and isinstance(read, float)
    assert math.isfinite(connect) and math.isfinite(read)
    assert read == store.timeout == 30.0
    store.close()
