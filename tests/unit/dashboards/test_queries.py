"""The peer band, specified on a handful of peers whose spread is known exactly."""

from __future__ import annotations

import math

import pytest

from dashboards.queries import PEER_BAND_COLUMNS, peer_band_of, to_ms
from pipeline.cloud.store import DeviceBucket

T0 = 1_800_000_000_000
MIN = 60_000


def buckets(ts: int, **means: float) -> list[DeviceBucket]:
    return [DeviceBucket(ts, device, mean, 60) for device, mean in means.items()]


def test_the_band_is_the_other_devices_quartiles_and_median_per_window() -> None:
    found = buckets(T0, me=100.0, a=1.0, b=2.0, c=3.0, d=4.0, e=5.0) + buckets(
        T0 + MIN, me=0.0, a=10.0, b=20.0
    )

    band = peer_band_of(found, "me", MIN)

    assert list(band.columns) == PEER_BAND_COLUMNS
    assert list(to_ms(band["start"])) == [T0, T0 + MIN]
    assert list(to_ms(band["end"])) == [T0 + MIN, T0 + 2 * MIN]
    # 1..5 (the device's own 100 left out): quartiles 2 and 4 (linear), median 3
    assert band.iloc[0][["low", "median", "high", "peers"]].tolist() == [2.0, 3.0, 4.0, 5]
    # two peers: 10 and 20 (the device's 0 left out)
    assert band.iloc[1][["low", "median", "high", "peers"]].tolist() == [12.5, 15.0, 17.5, 2]


def test_a_window_with_fewer_than_two_peers_or_no_finite_mean_has_no_band() -> None:
    found = (
        buckets(T0, me=1.0, a=2.0)  # one peer
        + buckets(T0 + MIN, me=1.0, a=2.0, b=math.nan)  # one finite peer
        + buckets(T0 + 2 * MIN, a=2.0, b=4.0)  # the device itself silent: the band still shows
    )

    band = peer_band_of(found, "me", MIN)

    assert list(to_ms(band["start"])) == [T0 + 2 * MIN]
    assert band.iloc[0]["median"] == pytest.approx(3.0)


def test_no_peer_at_all_gives_an_empty_band_with_its_columns() -> None:
    band = peer_band_of(buckets(T0, me=1.0), "me", MIN)

    assert band.empty and list(band.columns) == PEER_BAND_COLUMNS
