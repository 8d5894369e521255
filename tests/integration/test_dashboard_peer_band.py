"""The explorer's peer band read from a real store (SQLite and InfluxDB 1.6.7, fixture
``any_store``): one query for the kind, the device itself left out, in its own windows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from dashboards import queries
from pipeline.cloud.store import Store, open_store
from pipeline.protocol.messages import Aggregate
from pipeline.services import Influxd

T0 = 1_800_000_000_000  # a multiple of every bucket width used below
MIN = 60_000
HOUR = 3_600_000
PROBES = 6
ME = "p3"


def probe_window(device: int, i: int, *, site: str = "farm", kind: str = "soil_probe") -> Aggregate:
    """Window ``i`` of probe ``device``: 30 + its index + 0.1 a window; p3 drifts 1 a window."""
    mean = 30.0 + device + 0.1 * i + (1.0 * i if f"p{device}" == ME else 0.0)
    start = T0 + i * MIN
    return Aggregate(
        v=1, site=site, device=f"p{device}", kind=kind, metric="moisture", start=start, end=start + MIN,
        count=60, min=mean - 1, max=mean + 1, mean=mean, std=0.5, last=mean, anomalies=0,
    )  # fmt: skip


def write_fleet(store: Store, windows: int) -> None:
    store.write_aggregates([probe_window(d, i) for d in range(PROBES) for i in range(windows)])
    store.write_aggregates(
        [probe_window(9, i, kind="weather_station") for i in range(windows)]
    )  # another kind
    store.write_aggregates(
        [probe_window(8, i, site="farm-2") for i in range(windows)]
    )  # another site


def expected(means: list[float]) -> tuple[float, float, float]:
    low, median, high = np.quantile(means, [0.25, 0.5, 0.75])
    return float(low), float(median), float(high)


def test_a_short_range_has_a_band_per_window_of_the_other_probes(any_store: Store) -> None:
    write_fleet(any_store, 10)

    view = queries.series_view(
        any_store, "farm", ME, "moisture", T0, T0 + 10 * MIN, kind="soil_probe"
    )

    band = view.peers
    assert list(queries.to_ms(band["start"])) == [T0 + i * MIN for i in range(10)]
    assert (band["peers"] == PROBES - 1).all()
    for i, row in enumerate(band.itertuples()):
        peers = [30.0 + d + 0.1 * i for d in range(PROBES) if f"p{d}" != ME]
        assert (row.low, row.median, row.high) == pytest.approx(expected(peers))
    # the device's own line leaves the band as it drifts: inside at first, above it at the end
    own = view.aggregates["mean"].to_numpy()
    assert own[0] <= band["high"].iloc[0] and own[-1] > band["high"].iloc[-1]


def test_a_long_range_has_the_band_in_the_same_buckets_as_the_device(any_store: Store) -> None:
    write_fleet(any_store, 60)

    view = queries.series_view(
        any_store, "farm", ME, "moisture", T0, T0 + 24 * HOUR, kind="soil_probe"
    )

    assert view.every_ms == 300_000
    band = view.peers
    assert list(queries.to_ms(band["start"])) == list(queries.to_ms(view.aggregates["start"]))
    assert list(queries.to_ms(band["end"])) == list(queries.to_ms(view.aggregates["end"]))
    for b, row in enumerate(band.itertuples()):  # five windows a bucket: the middle one's mean
        peers = [30.0 + d + 0.1 * (5 * b + 2) for d in range(PROBES) if f"p{d}" != ME]
        assert (row.low, row.median, row.high) == pytest.approx(expected(peers))


def test_without_a_kind_or_with_no_peer_there_is_no_band(any_store: Store) -> None:
    write_fleet(any_store, 3)

    assert queries.series_view(any_store, "farm", ME, "moisture", T0, T0 + 3 * MIN).peers.empty
    alone = queries.series_view(
        any_store, "farm", "p9", "moisture", T0, T0 + 3 * MIN, kind="weather_station"
    )
    assert alone.peers.empty and not alone.aggregates.empty


def test_a_band_past_influxdbs_row_limit_is_left_out_and_the_device_still_drawn(
    influxd_factory: Callable[..., Influxd],
) -> None:
    server = influxd_factory(config_overrides={"http": {"max-row-limit": 8}})
    server.create_database("peers")
    store = open_store(f"influxdb://127.0.0.1:{server.port}/peers")
    try:
        write_fleet(store, 3)  # the device's own 3 windows fit; its 5 peers' 15 do not

        view = queries.series_view(
            store, "farm", ME, "moisture", T0, T0 + 3 * MIN, kind="soil_probe"
        )
    finally:
        store.close()

    assert len(view.aggregates) == 3 and view.peers.empty
    assert "max-row-limit" in view.peers_refused
