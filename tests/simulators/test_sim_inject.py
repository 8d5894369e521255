"""Anomalies asked for by time (``SimOptions.inject``, ``edgepipe sim --inject``).

The demo relies on one: it must start at the tick asked for, on the device and metric asked
for, be labelled like a random one, and change nothing else of the stream.
"""

from __future__ import annotations

import pytest
from simstream import simulate

from pipeline.errors import ConfigError
from simulators import SimOptions, parse_inject

FARM = {"sites": ("farm",), "devices_per_site": 6, "rate": 2.0, "duration": 20.0, "anomaly_rate": 0.0}


@pytest.mark.parametrize("anomaly", ["spike", "dip", "level_shift", "drift", "stuck", "noise_burst"])
def test_an_injected_anomaly_starts_when_asked_on_its_metric_and_is_labelled(anomaly: str) -> None:
    planned = parse_inject(f"{anomaly}@12:soil_probe-0002.moisture")
    stream = simulate(**FARM, inject=(planned,))
    assert len(stream.labels) == 1
    label = stream.labels[0]
    assert (label["device"], label["metrics"], label["anomaly"]) == ("soil_probe-0002", ["moisture"], anomaly)
    first = stream.readings[("farm", "soil_probe-0002")][0]["ts"]
    assert label["start"] - first == 12_000  # tick 24 at 2 Hz; the device's offset cancels


def test_only_the_labelled_window_differs_from_the_run_without_it() -> None:
    clean = simulate(**FARM)
    stream = simulate(**FARM, inject=(parse_inject("spike@12:soil_probe-0001.moisture"),))
    label = stream.labels[0]
    changed = [
        (key, a["ts"])
        for key, rows in stream.readings.items()
        for a, b in zip(rows, clean.readings[key], strict=True)
        if a != b
    ]
    assert changed and all(key == ("farm", "soil_probe-0001") for key, _ in changed)
    assert all(label["start"] <= ts <= label["end"] for _, ts in changed)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param("spike@25:soil_probe-0001", "a time from 0", id="after-the-end"),
        pytest.param("door_open@1:soil_probe-0001", "an anomaly of", id="domain-event"),
        pytest.param("spike@1:soil_probe-0009", "a device", id="no-such-device"),
        pytest.param("spike@1:soil_probe-0001.flow", "a device", id="metric-of-another-kind"),
    ],
)
def test_an_impossible_injection_is_refused_naming_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        SimOptions(**FARM, inject=(parse_inject(text),))
    assert caught.value.key == "sim.inject"


@pytest.mark.parametrize("text", ["spike", "spike@x:soil_probe-0001", "spike@3", "@3:soil_probe-0001x"])
def test_a_malformed_injection_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="ANOMALY@SECONDS"):
        SimOptions(**FARM, inject=(parse_inject(text),))
