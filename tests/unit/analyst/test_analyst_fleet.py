"""FleetAnalyst, specified: windows of a site's devices in, cloud alerts out, never the edge's."""

from __future__ import annotations

import random

from fleetkit import MINUTE_MS, T0, drift, window

from pipeline.analyst.fleet import FleetAnalyst
from pipeline.protocol import SCHEMA_VERSION, Aggregate, AlertData, Health
from pipeline.protocol.messages import Escalation

WARM = 300
DRIFT_AT = WARM + 20


def analyst() -> FleetAnalyst:
    return FleetAnalyst(horizon=None)  # the horizon needs days of windows: specified on its own


def feed(a: FleetAnalyst, first: int, last: int, shuffle: int | None = None, **kw: object) -> list[AlertData]:
    """Windows ``first``..``last`` one batch each (optionally in shuffled order within a batch)."""
    out = []
    for i in range(first, last):
        aggs: list[Aggregate] = window(i, **kw)  # type: ignore[arg-type]
        if shuffle is not None:
            random.Random(shuffle + i).shuffle(aggs)
        out += [alert.data for alert in a.add_aggregates(aggs)]
    return out


def first_raises(alerts: list[AlertData]) -> list[AlertData]:
    """Raises as users count them: an escalation repeats an open alert's id."""
    return [x for x in alerts if x.state == "raised" and x.alert_id.endswith(f".{x.reading_ts}")]


def edge_alert(device: str, ts: int, state: str = "raised", metric: str = "moisture") -> AlertData:
    return AlertData(
        v=SCHEMA_VERSION, alert_id=f"farm.{device}.{metric}.{ts}", site="farm", device=device, kind="soil_probe",
        metric=metric, state=state, severity="warning", score=0.9, value=1.0, reading_ts=ts, reason="anomaly",
        model_version="edge-1",
    )  # fmt: skip


def test_a_probe_drifting_from_its_peers_raises_one_cloud_alert() -> None:
    a = analyst()
    feed(a, 0, DRIFT_AT)
    alerts = feed(a, DRIFT_AT, DRIFT_AT + 40, offset=drift("p3", DRIFT_AT, 0.1))

    raised = first_raises(alerts)
    assert [(x.device, x.metric, x.source) for x in raised] == [("p3", "moisture", "cloud")]
    assert raised[0].alert_id.startswith("cloud.farm.p3.moisture.")
    assert raised[0].reason.startswith("peers: ")
    assert raised[0].reading_ts > T0 + DRIFT_AT * MINUTE_MS


def test_the_cloud_event_says_cloud_in_its_source() -> None:
    a = analyst()
    feed(a, 0, DRIFT_AT)
    events = []
    for i in range(DRIFT_AT, DRIFT_AT + 40):
        events += a.add_aggregates(window(i, offset=drift("p3", DRIFT_AT, 0.1)))

    assert events and all(e.source == "edgepipe/farm/cloud" and e.id.startswith("cloud.") for e in events)


def test_a_change_of_the_whole_fleet_raises_nothing() -> None:
    a = analyst()
    alerts = feed(a, 0, DRIFT_AT + 60, fleet=lambda i: 30.0 + (8.0 if i >= DRIFT_AT else 0.0))

    assert alerts == []


def test_what_the_edge_already_raised_on_the_device_and_metric_is_not_raised_again() -> None:
    a = analyst()
    feed(a, 0, DRIFT_AT)
    a.add_alert(edge_alert("p3", T0 + (DRIFT_AT + 5) * MINUTE_MS))
    alerts = feed(a, DRIFT_AT, DRIFT_AT + 40, offset=drift("p3", DRIFT_AT, 0.1))

    assert alerts == []
    assert a.counters.held > 0


def test_an_edge_alert_on_another_metric_does_not_hold_the_device() -> None:
    a = analyst()
    feed(a, 0, DRIFT_AT)
    a.add_alert(edge_alert("p3", T0 + (DRIFT_AT + 5) * MINUTE_MS, metric="soil_temp"))
    alerts = feed(a, DRIFT_AT, DRIFT_AT + 40, offset=drift("p3", DRIFT_AT, 0.1))

    assert [x.device for x in first_raises(alerts)] == ["p3"]


def test_a_device_the_edge_reports_silent_is_held() -> None:
    a = analyst()
    feed(a, 0, DRIFT_AT)
    a.add_alert(edge_alert("p3", T0 + DRIFT_AT * MINUTE_MS, metric="_device"))  # dropout: a device-level alert
    alerts = feed(a, DRIFT_AT, DRIFT_AT + 40, offset=drift("p3", DRIFT_AT, 0.1))

    assert alerts == []


def test_the_clouds_own_alerts_seen_again_hold_nothing() -> None:
    a = analyst()
    feed(a, 0, DRIFT_AT)
    own = edge_alert("p3", T0 + (DRIFT_AT + 5) * MINUTE_MS)
    from msgspec.structs import replace

    a.add_alert(replace(own, source="cloud"))
    alerts = feed(a, DRIFT_AT, DRIFT_AT + 40, offset=drift("p3", DRIFT_AT, 0.1))

    assert [x.device for x in first_raises(alerts)] == ["p3"]


def test_an_offline_site_is_not_judged() -> None:
    a = analyst()
    feed(a, 0, DRIFT_AT)
    a.add_health(Health(v=1, site="farm", node="edge-farm", ts=T0, status="offline"))
    alerts = feed(a, DRIFT_AT, DRIFT_AT + 40, offset=drift("p3", DRIFT_AT, 0.1))

    assert alerts == []


def test_alerts_depend_on_event_time_not_on_the_order_aggregates_arrive_in() -> None:
    in_order, shuffled = analyst(), analyst()
    kw = {"offset": drift("p3", DRIFT_AT, 0.1)}

    assert feed(in_order, 0, DRIFT_AT + 40, **kw) == feed(shuffled, 0, DRIFT_AT + 40, shuffle=3, **kw)


def test_an_aggregate_of_a_window_already_judged_is_counted_late_and_ignored() -> None:
    a = analyst()
    feed(a, 0, 10)
    a.add_aggregates(window(2))

    assert a.counters.late == 12  # all of window 2's devices, judged when window 4 arrived


def test_a_restart_replaying_the_same_windows_ends_in_the_same_state() -> None:
    """What ``restore`` relies on: the replay holds the alert open, so going live raises nothing new."""
    live, restarted = analyst(), analyst()
    kw = {"offset": drift("p3", DRIFT_AT, 0.1)}
    first = feed(live, 0, DRIFT_AT + 40, **kw)
    feed(restarted, 0, DRIFT_AT + 40, **kw)  # the replay, output dropped

    assert len(first_raises(first)) == 1
    after_live = feed(live, DRIFT_AT + 40, DRIFT_AT + 60, **kw)
    assert after_live == feed(restarted, DRIFT_AT + 40, DRIFT_AT + 60, **kw)
    assert {x.alert_id for x in after_live} <= {first_raises(first)[0].alert_id}  # the same alert, escalated at most


def escalation(agg: Aggregate, score: float = 0.6) -> Escalation:
    return Escalation(1, agg.site, agg.device, agg.kind, agg.metric, agg.start, agg.end, score, [agg.start], [agg.mean])


def shifted(a: FleetAnalyst, flag: bool) -> list[AlertData]:
    """p3 reads 0.8 (about 3 noise sd) above its place among its peers from DRIFT_AT on."""
    out = []
    for i in range(DRIFT_AT + 40):
        aggs = window(i, offset=lambda d, j: 0.8 if d == "p3" and j >= DRIFT_AT else 0.0)
        if flag and i >= DRIFT_AT:
            a.add_escalation(escalation(aggs[3]))
        out += [x.data for x in a.add_aggregates(aggs)]
    return first_raises(out)


def test_a_window_the_edge_was_unsure_about_gets_a_second_opinion_at_a_lower_bar() -> None:
    alone, asked = analyst(), analyst()

    assert shifted(alone, flag=False) == []  # not enough for the peers on their own
    raised = shifted(asked, flag=True)
    assert [x.device for x in raised] == ["p3"]
    assert "second opinion on an edge score of 0.60" in raised[0].reason
    assert asked.counters.escalations == 40 and asked.counters.escalations_raised >= 1


def test_an_escalation_of_a_window_already_judged_is_late() -> None:
    a = analyst()
    feed(a, 0, 10)
    a.add_escalation(escalation(window(2)[0]))

    assert (a.counters.late, a.counters.escalations) == (1, 0)


def test_windows_held_for_the_edge_and_for_an_offline_site_are_counted_apart() -> None:
    a = analyst()
    a.add_alert(edge_alert("p3", T0 + 5 * MINUTE_MS))  # open from minute 5 on, never cleared
    feed(a, 0, 20)  # windows 0..17 judged (delay 2), all within 10 minutes of the open alert
    edge_held = a.counters.held_edge
    a.add_health(Health(v=SCHEMA_VERSION, site="farm", node="edge-farm", ts=T0, status="offline"))
    feed(a, 20, 30)

    assert edge_held == 18  # p3's windows 0..17
    assert a.counters.held_offline == 10 * 12  # windows 18..27: every device of the offline site
    assert a.counters.held == a.counters.held_edge + a.counters.held_offline


def test_devices_are_counted_per_site_once_over_their_metrics() -> None:
    a = analyst()
    feed(a, 0, 5)
    feed(a, 0, 5, site="city", devices=4, metric="pm25")
    feed(a, 0, 5, site="city", devices=4, metric="pm10")

    assert a.devices_by_site() == {"farm": 12, "city": 4}
    assert a.pending_windows == 2 + 2 + 2  # the last two windows of each group wait for later ones
