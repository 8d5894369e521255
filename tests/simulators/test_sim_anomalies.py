"""Every injected anomaly has a label, and its bounds are exactly where the data deviates.

``anomalous`` and ``clean`` are the same two-day run (one reading a minute) with anomalies
on and off. Anomalies never feed back into the device models, so the two runs must agree
everywhere outside the labelled windows, and differ inside them as each anomaly says.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from simstream import Stream

from pipeline.protocol.catalog import KINDS
from simulators import ANOMALIES
from simulators.anomalies import rates_for
from simulators.domains import MODELS

Window = dict[str, Any]


def windows(stream: Stream, anomaly: str) -> list[Window]:
    return [label for label in stream.labels if label["anomaly"] == anomaly]


def inside(label: Window, anomalous: Stream, clean: Stream) -> list[tuple[dict, dict | None]]:
    """(clean metrics, anomalous metrics or None if not published) per tick of the window."""
    key = (label["site"], label["device"])
    seen = anomalous.by_ts(key)
    truth = clean.between(key, label["start"], label["end"])
    return [(row["metrics"], seen.get(row["ts"])) for row in truth]


def step(label: Window, metric: str) -> float:
    kind = label["device"].rsplit("-", 1)[0]
    return KINDS[kind].metrics[metric].resolution


@pytest.mark.parametrize("anomaly", ANOMALIES)
def test_every_anomaly_kind_is_injected_and_labelled(anomalous: Stream, anomaly: str) -> None:
    assert windows(anomalous, anomaly), f"no {anomaly} in two days"


def test_labels_bound_real_readings_of_their_device(anomalous: Stream, clean: Stream) -> None:
    for label in anomalous.labels:
        stamps = clean.by_ts((label["site"], label["device"]))
        assert label["start"] in stamps and label["end"] in stamps
        assert label["start"] <= label["end"]
        kind = label["device"].rsplit("-", 1)[0]
        assert set(label["metrics"]) <= set(KINDS[kind].metrics)


def test_outside_every_window_the_data_is_untouched(anomalous: Stream, clean: Stream) -> None:
    by_device: dict[tuple[str, str], list[Window]] = {}
    for label in anomalous.labels:
        by_device.setdefault((label["site"], label["device"]), []).append(label)
    for key, rows in clean.readings.items():
        labels = by_device.get(key, [])
        seen = anomalous.by_ts(key)
        for row in rows:
            ts = row["ts"]
            if any(w["start"] <= ts <= w["end"] for w in labels):
                continue
            if any(w["anomaly"] == "theft" and ts > w["end"] for w in labels):
                continue  # the shelf stays short until restocked: see the theft test
            assert seen.get(ts) == row["metrics"], (key, ts)


def test_spikes_read_high_and_dips_read_low_throughout(anomalous: Stream, clean: Stream) -> None:
    for anomaly, sign in (("spike", 1), ("dip", -1)):
        for label in windows(anomalous, anomaly):
            (metric,) = label["metrics"]
            for truth, seen in inside(label, anomalous, clean):
                assert seen is not None
                assert sign * (seen[metric] - truth[metric]) > 0 or (
                    sign < 0 and seen[metric] == 0.0 == truth[metric]
                )


def test_a_level_shift_moves_every_reading_by_the_same_offset(
    anomalous: Stream, clean: Stream
) -> None:
    for label in windows(anomalous, "level_shift"):
        (metric,) = label["metrics"]
        low = KINDS[label["device"].rsplit("-", 1)[0]].metrics[metric].low
        ticks = [(t[metric], s[metric]) for t, s in inside(label, anomalous, clean)]
        diffs = np.array([s - t for t, s in ticks if s != low])  # a count cannot go below 0
        assert np.all(np.abs(diffs) >= step(label, metric) - 1e-9)
        assert np.ptp(diffs) <= 2 * step(label, metric) + 1e-9  # the same offset, rounded


def test_a_drift_starts_at_one_step_and_grows(anomalous: Stream, clean: Stream) -> None:
    for label in windows(anomalous, "drift"):
        (metric,) = label["metrics"]
        diffs = np.abs([s[metric] - t[metric] for t, s in inside(label, anomalous, clean)])
        assert np.all(diffs > 0)
        if len(diffs) > 10:
            assert diffs[-1] > diffs[0] + 2 * step(label, metric)


def test_a_stuck_sensor_repeats_its_last_good_reading_exactly(
    anomalous: Stream, clean: Stream
) -> None:
    for label in windows(anomalous, "stuck"):
        (metric,) = label["metrics"]
        readings = anomalous.readings[(label["site"], label["device"])]
        stamps = [r["ts"] for r in readings]
        first = stamps.index(label["start"])
        last = stamps.index(label["end"])
        held = readings[first - 1]["metrics"][metric]
        assert all(r["metrics"][metric] == held for r in readings[first : last + 1])


def test_a_noise_burst_moves_every_reading(anomalous: Stream, clean: Stream) -> None:
    for label in windows(anomalous, "noise_burst"):
        (metric,) = label["metrics"]
        for truth, seen in inside(label, anomalous, clean):
            assert seen is not None and seen[metric] != truth[metric]


def test_a_dropout_silences_the_device_for_exactly_its_window(
    anomalous: Stream, clean: Stream
) -> None:
    for label in windows(anomalous, "dropout"):
        key = (label["site"], label["device"])
        assert all(seen is None for _, seen in inside(label, anomalous, clean))
        stamps = sorted(clean.by_ts(key))
        before = [ts for ts in stamps if ts < label["start"]]
        after = [ts for ts in stamps if ts > label["end"]]
        seen = anomalous.by_ts(key)
        assert not before or before[-1] in seen
        assert not after or after[0] in seen


def test_a_door_left_open_warms_the_cabinet_and_runs_the_compressor(
    anomalous: Stream, clean: Stream
) -> None:
    for label in windows(anomalous, "door_open"):
        assert label["metrics"] == ["temp", "door", "power"]
        ticks = inside(label, anomalous, clean)
        assert ticks[0][1] is not None and ticks[0][1]["door"] == 1.0
        assert all(seen is not None and seen["power"] > 100 for _, seen in ticks)
        warmest = max(seen["temp"] - truth["temp"] for truth, seen in ticks if seen)
        assert warmest > 1.0


def test_a_leaking_valve_flows_and_wets_its_zone(anomalous: Stream, clean: Stream) -> None:
    leaks = windows(anomalous, "irrigation_leak")
    valves = [w for w in leaks if w["device"].startswith("irrigation_valve")]
    probes = [w for w in leaks if w["device"].startswith("soil_probe")]
    assert valves and probes
    for label in valves:
        for truth, seen in inside(label, anomalous, clean):
            assert seen is not None and seen["flow"] >= truth["flow"] + 2.5
    for label in probes:
        assert any(label["start"] >= v["start"] for v in valves)
        for truth, seen in inside(label, anomalous, clean):
            assert seen is not None and seen["moisture"] > truth["moisture"]


def test_a_theft_takes_stock_without_sales_until_the_next_restock(
    anomalous: Stream, clean: Stream
) -> None:
    for label in windows(anomalous, "theft"):
        key = (label["site"], label["device"])
        seen = anomalous.by_ts(key)
        gap = [
            truth["stock"] - seen[ts]["stock"]
            for ts, truth in sorted(clean.by_ts(key).items())
            if ts >= label["start"] and ts in seen
        ]
        window = len(inside(label, anomalous, clean))
        assert all(g >= 1 for g in gap[:window])
        assert all(a <= b for a, b in zip(gap[:window], gap[1:window], strict=False))
        assert len(set(gap[window:][:5])) <= 1  # afterwards the shelf just stays short


def test_an_accident_collapses_traffic(anomalous: Stream, clean: Stream) -> None:
    for label in windows(anomalous, "accident"):
        for truth, seen in inside(label, anomalous, clean):
            assert seen is not None
            assert seen["speed"] < truth["speed"]
            assert seen["vehicles"] <= truth["vehicles"]


def test_a_pollution_episode_raises_both_pollutants(anomalous: Stream, clean: Stream) -> None:
    for label in windows(anomalous, "pollution_episode"):
        for truth, seen in inside(label, anomalous, clean):
            assert seen is not None
            assert seen["pm25"] > truth["pm25"] and seen["no2"] > truth["no2"]


def test_labels_are_also_written_as_json_lines(anomalous: Stream) -> None:
    published = [p.decode() for t, p in anomalous.publications if t.endswith("/labels")]
    assert published == anomalous.labels_text.splitlines()
    assert anomalous.report.labels == len(published)


def test_an_anomaly_rate_of_zero_injects_nothing(clean: Stream) -> None:
    assert clean.labels == [] and clean.report.labels == 0


def test_anomaly_rates_are_shared_and_can_be_set_per_kind() -> None:
    rates = rates_for(MODELS["fridge"], 0.8, {"spike": 3.0})
    assert rates["spike"] == 3.0
    assert rates["door_open"] == pytest.approx(0.8 / len(rates))
    assert "accident" not in rates


def test_one_kind_can_be_the_only_anomaly(sim: Any) -> None:
    stream = sim(
        sites=("city",),
        devices_per_site=10,
        rate=1 / 60,
        duration=12 * 3600,
        anomaly_rate=0.0,
        anomaly_rates={"accident": 2.0},
    )
    assert {label["anomaly"] for label in stream.labels} == {"accident"}
