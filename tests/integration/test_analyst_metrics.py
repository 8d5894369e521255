"""/metrics of a real fleet analyst, fed through a real Mosquitto, scraped over HTTP.

The analyst restores an hour of a site from the store, then reads live windows with a
drifting probe, an edge alert on another probe, a site of another shard and a malformed
payload; every figure it exposes is checked against what was fed, not just that it answers.
"""

from __future__ import annotations

import socket
import sys
import threading
import uuid
from pathlib import Path

from test_analyst import DEADLINE_S, drain, running, settings, wait_for, watching
from test_metrics_endpoint import scrape, total

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "analyst"))
from fleetkit import MINUTE_MS, T0, drift, window  # noqa: E402
from nodekit import edgepipe_process  # noqa: E402

from pipeline.analyst.role import AnalystRole, shard_of
from pipeline.cloud.store.sqlite import SQLiteStore
from pipeline.mqtt import MqttClient
from pipeline.protocol import (
    SCHEMA_VERSION,
    Aggregate,
    AggregateBatch,
    Alert,
    AlertData,
    Topics,
    encode,
)
from pipeline.services import Mosquitto, free_port

RESTORED = 360  # six hours of one-minute windows in the store before the start
LIVE = 50  # then fifty live windows
DRIFT_AT = RESTORED + 5  # p3 drifts away from its peers in the live windows
EDGE_ALERT_AT = RESTORED + 10  # the edge raises on p5 at this window's start, never clears
LAG_S = 90  # the analyst's clock: this long after the newest live window's end
PROBES = 12
SITE = "farm"
OTHER = "city"


def _publish(url: str, topics: Topics, site: str, first: int, last: int) -> int:
    publisher = MqttClient(url, client_id=f"edge-{uuid.uuid4().hex[:8]}")
    publisher.connect(timeout=5)
    sent = 0
    try:
        for i in range(first, last):
            aggs = window(i, site=site, offset=drift("p3", DRIFT_AT, 0.1))
            publisher.publish(
                topics.edge(site, "agg"), encode(AggregateBatch(1, site, i + 1, aggs)), qos=1
            )
            sent += len(aggs)
        assert publisher.flush(DEADLINE_S), "the broker did not take every batch"
    finally:
        publisher.close()
    return sent


def _edge_alert(ts: int) -> Alert:
    data = AlertData(
        v=SCHEMA_VERSION, alert_id=f"{SITE}.p5.moisture.{ts}", site=SITE, device="p5", kind="soil_probe",
        metric="moisture", state="raised", severity="warning", score=0.9, value=1.0, reading_ts=ts,
        reason="anomaly: test", model_version="edge-1",
    )  # fmt: skip
    return Alert(
        id=data.alert_id,
        source=f"edgepipe/{SITE}/edge",
        type="edgepipe.alert",
        time="",
        subject="p5",
        data=data,
    )


def test_the_analyst_metrics_move_with_what_it_restored_read_suppressed_and_raised(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    assert shard_of(SITE, 2) == 1 and shard_of(OTHER, 2) == 0
    root = f"t-{uuid.uuid4().hex[:8]}"
    topics = Topics(root)
    store = SQLiteStore(tmp_path / "store.db")
    for i in range(RESTORED):
        store.write_aggregates(window(i, site=SITE, offset=drift("p3", DRIFT_AT, 0.1)))
    newest_end = T0 + (RESTORED + LIVE) * MINUTE_MS
    now = newest_end + LAG_S * 1000
    role = AnalystRole(
        settings(
            mosquitto.url,
            root,
            tmp_path,
            **{"analyst.shard": "1/2", "analyst.metrics_port": free_port()},
        ),
        store,
        now_ms=lambda: now,
    )
    with watching(mosquitto.url, topics.alerts(SITE)) as received, running(role):
        assert role.metrics is not None
        url = role.metrics.url
        before = scrape(url)
        assert before["edgepipe_analyst_restore_aggregates_total"] == PROBES * RESTORED
        assert (
            before["edgepipe_analyst_restoring"] == 0
            and before["edgepipe_analyst_restore_seconds"] > 0
        )
        assert (
            total(before, "edgepipe_analyst_aggregates_total") == 0
        )  # restored ones are not live ones
        open_before = before["edgepipe_analyst_open_alerts"]

        edge = MqttClient(mosquitto.url, client_id=f"edge-{uuid.uuid4().hex[:8]}")
        edge.connect(timeout=5)
        edge.publish(
            topics.alert(SITE, "p5"), encode(_edge_alert(T0 + EDGE_ALERT_AT * MINUTE_MS)), qos=1
        )
        edge.publish(topics.edge(SITE, "agg"), b"\xff\x00 not an aggregate", qos=1)
        assert edge.flush(10)
        edge.close()
        wait_for(lambda: role.analyst.counters.edge_alerts == 1, "the edge alert to be read")
        sent = _publish(mosquitto.url, topics, SITE, RESTORED, RESTORED + LIVE)
        _publish(mosquitto.url, topics, OTHER, 0, 1)
        wait_for(
            lambda: (
                total(scrape(url), "edgepipe_analyst_aggregates_total") == sent
                and scrape(url)["edgepipe_analyst_other_shard_messages_total"] == 1
                and total(scrape(url), "edgepipe_analyst_refused_total") == 1
            ),
            "the live aggregates, the other shard's batch and the bad payload in /metrics",
        )
        alerts = [
            a for a in drain(received, role.published + 1) if a.data.source == "cloud"
        ]  # + the edge's
        # the gauges of the detectors' state are the loop's, replaced whole every 5 s: wait for one more
        stale = role.state_figures
        wait_for(lambda: role.state_figures is not stale, "the loop to refresh the state's gauges")
        m = scrape(url)

    store.close()
    assert m[f'edgepipe_analyst_aggregates_total{{site="{SITE}"}}'] == PROBES * LIVE
    assert f'edgepipe_analyst_aggregates_total{{site="{OTHER}"}}' not in m  # not this shard's
    assert m[f'edgepipe_analyst_info{{analyst="{role.name}",shard="1/2"}}'] == 1
    # The drift raised on p3, from the peers detector (the only one running here).
    by_label = {k: v for k, v in m.items() if k.startswith("edgepipe_analyst_alerts_total{")}
    assert by_label and all('detector="peers"' in k for k in by_label)
    raised = sum(v for k, v in by_label.items() if 'state="raised"' in k)
    assert raised >= 1 and raised == sum(1 for a in alerts if a.data.state == "raised")
    assert {a.data.device for a in alerts} == {"p3"}
    assert total(m, "edgepipe_analyst_alerts_total") == len(alerts)
    assert m[f'edgepipe_analyst_alerts_published_total{{site="{SITE}"}}'] == len(alerts)
    # The edge's p5 was held: every window of p5 judged from 10 minutes (analyst.suppress_s)
    # before the edge's raise on; the last two windows wait for later ones (delay_windows 2).
    held_from = EDGE_ALERT_AT - 600_000 // MINUTE_MS - 1  # end + suppress_s reaches the raise
    judged_until = RESTORED + LIVE - 2  # windows up to newest - delay_windows are judged
    assert (
        m['edgepipe_analyst_device_windows_suppressed_total{reason="edge_alert"}']
        == judged_until - held_from
    )
    assert m['edgepipe_analyst_device_windows_suppressed_total{reason="site_offline"}'] == 0
    assert m["edgepipe_analyst_windows_judged_total"] == judged_until
    assert m["edgepipe_analyst_pending_windows"] == 2
    assert m[f'edgepipe_analyst_devices{{site="{SITE}"}}'] == PROBES
    assert m["edgepipe_analyst_detector_series"] == PROBES
    assert m[f'edgepipe_analyst_lag_seconds{{site="{SITE}"}}'] == LAG_S
    assert m["edgepipe_analyst_open_alerts"] == open_before + 1  # p3's, the drift goes on
    assert m["edgepipe_analyst_mqtt_connected"] == 1
    assert m["process_resident_memory_bytes"] > 0


def test_a_metrics_port_in_use_names_the_setting_on_one_line_and_exits_2(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = {"EDGEPIPE_ANALYST__METRICS_PORT": port}
        store = f"sqlite:///{tmp_path / 'store.db'}"
        args = ("analyst", "--broker", mosquitto.url, "--store", store)
        with edgepipe_process(tmp_path / "analyst.log", *args, env=env) as (proc, log):
            assert proc.wait(DEADLINE_S) == 2, log.read_text()
    text = log.read_text()
    (line,) = [line for line in text.splitlines() if "analyst.metrics_port" in line]
    assert (
        line.startswith("edgepipe: config error: analyst.metrics_port") and "cannot listen" in line
    )
    assert "Traceback" not in text


class HeldStore(SQLiteStore):
    """A real SQLite store whose replay of one site waits for the test: restore mid-way."""

    def __init__(self, path: Path, held_site: str) -> None:
        super().__init__(path)
        self.held_site = held_site
        self.reached = threading.Event()
        self.release = threading.Event()

    def query_site_aggregates(
        self, site: str, start_ms: int, end_ms: int, limit: int = 1_000_000
    ) -> list[Aggregate]:
        if site == self.held_site:
            self.reached.set()
            assert self.release.wait(DEADLINE_S), "the test never released the replay"
        return super().query_site_aggregates(site, start_ms, end_ms, limit)


def test_the_restore_shows_its_progress_while_it_runs(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = HeldStore(
        tmp_path / "store.db", held_site="retail"
    )  # sorted after farm: replayed second
    for site, windows in (("farm", 30), ("retail", 20)):
        for i in range(windows):
            store.write_aggregates(window(i, site=site))
    now = T0 + 30 * MINUTE_MS
    role = AnalystRole(
        settings(
            mosquitto.url,
            f"t-{uuid.uuid4().hex[:8]}",
            tmp_path,
            **{"analyst.metrics_port": free_port()},
        ),
        store,
        now_ms=lambda: now,
    )
    starting = threading.Thread(target=role.start, kwargs={"timeout": 10}, daemon=True)
    starting.start()
    try:
        assert store.reached.wait(DEADLINE_S), "the replay never reached the second site"
        assert role.metrics is not None
        during = scrape(role.metrics.url)
        assert during["edgepipe_analyst_restoring"] == 1
        assert (
            during["edgepipe_analyst_restore_aggregates_total"] == PROBES * 30
        )  # farm done, retail not
        assert during["edgepipe_analyst_restore_seconds"] > 0
        assert during['edgepipe_analyst_lag_seconds{site="farm"}'] == 0
    finally:
        store.release.set()
        starting.join(DEADLINE_S)
    assert not starting.is_alive()
    after = scrape(role.metrics.url)
    assert after["edgepipe_analyst_restoring"] == 0
    assert after["edgepipe_analyst_restore_aggregates_total"] == PROBES * 50
    assert (
        after['edgepipe_analyst_lag_seconds{site="retail"}'] == 10 * 60
    )  # its newest window ended 10 min before now
    stop = threading.Event()
    stop.set()
    role.run(stop)  # closes the client and /metrics
    store.close()
