"""The InfluxDB 2.x/3.x token path: writes through influxdb-client's v2 write API.

A store URL with a token (``influxdb://host:port/BUCKET?token=..&org=..``) writes through
influxdb-client's SYNCHRONOUS write API to ``/api/v2/write`` (decision 0006) and reads over
``/query`` with ``Authorization: Token``. A 2.x server cannot be installed on these
machines (and influxd 1.6.7, the one we can run, answers ``/api/v2/write`` with 404), so a
translating loopback proxy in front of the real 1.6.7 stands in for it
(``tests/influx_v2_proxy.py``): it checks the token, maps ``/api/v2/write?org=..&bucket=B``
onto ``/write?db=B`` and passes ``/query`` and ``/ping`` through. The whole store contract
also runs through it (``any_store``'s ``influx-v2``); here: the path the writes take,
the values read back against the v1 path, and each error class from the client's
exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from influx_v2_proxy import InfluxV2Proxy

from pipeline.cloud.store import (
    InfluxStore,
    PartialWriteError,
    StoreConfigError,
    StoreUnavailable,
    open_store,
)
from pipeline.errors import StoreError
from pipeline.protocol.messages import Aggregate, Alert, AlertData, Reading
from pipeline.services import Influxd, free_port

TOKEN = "s3cret-token"
SITE = "shop1"
T0 = 1_700_000_000_000


def readings() -> list[Reading]:
    return [
        Reading(v=1, device=f"fridge{i % 3}", kind="fridge", ts=T0 + i * 1000, seq=i,
                metrics={"temp": 4.0 + i / 8, "door": float(i % 2)})
        for i in range(50)
    ]  # fmt: skip


def aggregates() -> list[Aggregate]:
    return [
        Aggregate(v=1, site=SITE, device="fridge1", kind="fridge", metric="temp",
                  start=T0 + w * 60_000, end=T0 + (w + 1) * 60_000, count=600, min=3.5,
                  max=4.5, mean=4.0 + w / 4, std=0.25, last=4.25, anomalies=w)
        for w in range(5)
    ]  # fmt: skip


def alerts() -> list[Alert]:
    out = []
    for i, state in enumerate(["raised", "cleared", "raised"]):
        data = AlertData(
            v=1, alert_id=f"a{i // 2}", site=SITE, device="fridge1", kind="fridge",
            metric="temp", state=state, severity="warning", score=0.9, value=11.5,
            reading_ts=T0 + i * 5000, reason="score 0.90 above 0.80", model_version="hst-3",
        )  # fmt: skip
        out.append(Alert(id=f"a{i}-{state}", source=f"edgepipe/{SITE}", type="edgepipe.alert",
                         time="2023-11-14T22:13:20Z", subject="fridge1", data=data))  # fmt: skip
    return out


@pytest.fixture
def proxy(influxdb: Influxd) -> Iterator[InfluxV2Proxy]:
    """A fresh 2.x stand-in (own counters and failure switch) in front of the session influxd."""
    with InfluxV2Proxy(influxdb.port, TOKEN) as p:
        yield p


@pytest.fixture
def v2_store(proxy: InfluxV2Proxy, influx_db: str) -> Iterator[Callable[..., InfluxStore]]:
    """Open token stores on ``influx_db`` through ``proxy``; all closed at teardown."""
    opened: list[InfluxStore] = []

    def make(token: str = TOKEN, timeout: float = 5.0) -> InfluxStore:
        url = f"influxdb://127.0.0.1:{proxy.port}/{influx_db}?token={token}&org=acme&timeout={timeout}"
        store = open_store(url)
        assert isinstance(store, InfluxStore)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def write_all(store: InfluxStore) -> None:
    store.write_readings(SITE, readings())
    store.write_aggregates(aggregates())
    store.write_alerts(alerts())


def read_all(store: InfluxStore) -> tuple[object, ...]:
    end = T0 + 3_600_000
    return (
        store.count_readings(SITE),
        store.query_readings(SITE, "fridge1", "temp", T0, end),
        store.query_readings(SITE, "fridge2", "door", T0, end, every_ms=10_000),
        store.query_aggregates(SITE, "fridge1", "temp", T0, end),
        store.query_alerts(SITE, T0),
        store.devices(SITE),
    )


def test_writes_go_to_api_v2_write_and_read_back_as_the_v1_path_wrote_them(
    influxdb: Influxd, proxy: InfluxV2Proxy, v2_store: Callable[..., InfluxStore]
) -> None:
    store = v2_store()
    write_all(store)

    # Three writes, three POSTs to the v2 write API, none to /write; reads are /query.
    assert proxy.paths["/api/v2/write"] == 3
    assert proxy.paths["/write"] == 0
    assert proxy.forwarded["/write"] == 3
    got = read_all(store)
    assert proxy.paths["/query"] >= len(got)

    v1_db = "v1_twin"
    influxdb.create_database(v1_db)
    twin = InfluxStore("127.0.0.1", influxdb.port, v1_db)
    try:
        write_all(twin)
        assert got == read_all(twin)
    finally:
        twin.close()
        influxdb.query(f'DROP DATABASE "{v1_db}"')
    assert got[0] == 50
    assert len(got[4]) == 3  # type: ignore[arg-type]


def test_a_wrong_token_is_a_configuration_fault_on_writes_and_reads(
    v2_store: Callable[..., InfluxStore],
) -> None:
    store = v2_store(token="wrong")

    with pytest.raises(StoreConfigError, match="/api/v2/write answered HTTP 401"):
        store.write_readings(SITE, readings())
    with pytest.raises(StoreConfigError, match="401"):
        store.count_readings(SITE)


def test_a_503_is_unavailable_with_its_retry_after_and_passes_once_the_server_is_back(
    proxy: InfluxV2Proxy, v2_store: Callable[..., InfluxStore]
) -> None:
    store = v2_store()
    proxy.fail_with(503, retry_after="7")

    with pytest.raises(StoreUnavailable, match="HTTP 503") as raised:
        store.write_readings(SITE, readings())
    assert raised.value.retry_after == 7.0
    assert proxy.paths["/api/v2/write"] == 1  # the client did not retry: the worker does

    proxy.fail_with(429)
    with pytest.raises(StoreUnavailable, match="HTTP 429"):
        store.write_aggregates(aggregates())

    proxy.fail_with(None)
    store.write_readings(SITE, readings())
    assert store.count_readings(SITE) == 50


def test_a_refused_connection_is_unavailable(influx_db: str) -> None:
    store = open_store(f"influxdb://127.0.0.1:{free_port()}/{influx_db}?token={TOKEN}&org=acme")
    try:
        with pytest.raises(StoreUnavailable, match="/api/v2/write"):
            store.write_readings(SITE, readings())
    finally:
        store.close()


def test_a_400_partial_write_isolates_exactly_the_bad_lines_as_the_v1_path_does(
    influxdb: Influxd, influx_db: str, v2_store: Callable[..., InfluxStore]
) -> None:
    # 1.x fixes a field's type per shard: once "door" is a string, a float "door" is refused.
    influxdb.write(influx_db, f'readings,device=x,kind=fridge,site={SITE} door="open" {T0}')
    store = v2_store()
    batch = [
        Reading(v=1, device=f"good{i % 4}", kind="fridge", ts=T0 + 1 + i, seq=i,
                metrics={"temp": 4.0})
        for i in range(40)
    ]  # fmt: skip
    for at, device in ((5, "bad1"), (25, "bad2")):
        batch.insert(at, Reading(v=1, device=device, kind="fridge", ts=T0 + 500 + at, seq=at,
                                 metrics={"door": 1.0}))  # fmt: skip

    with pytest.raises(PartialWriteError) as raised:
        store.write_readings(SITE, batch)

    refused = sorted(line.split(",")[1] for line, _ in raised.value.rejected)
    assert refused == ["device=bad1", "device=bad2"]
    assert all("conflict" in why for _, why in raised.value.rejected)
    assert store.count_readings(SITE) == 40


def test_a_closed_store_refuses_writes_without_sending(
    proxy: InfluxV2Proxy, v2_store: Callable[..., InfluxStore]
) -> None:
    store = v2_store()
    store.close()

    with pytest.raises(StoreError, match="closed"):
        store.write_readings(SITE, readings())
    assert proxy.paths["/api/v2/write"] == 0
