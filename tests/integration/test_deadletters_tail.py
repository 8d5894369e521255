"""`edgepipe deadletters`, a real process, prints one readable line per dead letter of a real node."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nodekit import edge_settings, edgepipe_process, new_site, now_ms, reading, running_node

from pipeline.bench.common import wait_for
from pipeline.mqtt import MqttClient
from pipeline.protocol import Topics
from pipeline.services import Mosquitto

TOPICS = Topics()
WAIT_S = 30.0
DEVICE = "weather_station-0001"
WEATHER = {"air_temp": 12.0}
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 ✗ (\w+) +(\S+) (\d+) B: (.*) \| (.*)$")
PROBE = b""  # an empty payload: dead-lettered as `empty`, until the tail shows it is listening


@contextmanager
def tail(url: str, tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`edgepipe deadletters` with its stdout in a file; killed (by its pid) if still running."""
    out = tmp_path / f"tail-{time.monotonic_ns()}.out"
    with edgepipe_process(out, "deadletters", "--broker", url, *args) as running:
        yield running


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def test_one_readable_line_per_dead_letter_until_sigterm(mosquitto: Mosquitto, tmp_path: Path) -> None:
    site = new_site()
    device = MqttClient(mosquitto.url)
    device.connect(timeout=10)
    topic = TOPICS.reading(site, DEVICE)
    t0 = now_ms()
    try:
        with (
            running_node(edge_settings(mosquitto.url, tmp_path, site)) as node,
            tail(mosquitto.url, tmp_path, "--site", site, "--timeout", "300") as (proc, out),
        ):
            device.publish(topic, reading(DEVICE, "weather_station", t0, WEATHER), qos=1)
            # Dead letters are QoS 0 and not retained: probe until the tail is listening.
            deadline = time.monotonic() + WAIT_S
            while not lines_of(out) and time.monotonic() < deadline:
                device.publish(topic, PROBE, qos=1)
                wait_for(lambda: bool(lines_of(out)), 0.3, 0.05)
            assert lines_of(out), "the tail printed nothing within 30 s"
            letters = [
                (b"{oops", "bad_json"),
                (b"[1, 2]", "not_object"),
                (reading(DEVICE, "weather_station", t0 + 1000, {"air_temp": 900.0}), "out_of_range"),
                (reading(DEVICE, "soil_probe", t0 + 2000, {"moisture": 30.0}), "kind_changed"),
            ]
            for payload, _ in letters:
                device.publish(topic, payload, qos=1)

            def real() -> list[str]:
                return [line for line in lines_of(out) if " empty " not in line]

            assert wait_for(lambda: len(real()) >= len(letters), WAIT_S, 0.1), lines_of(out)
            assert wait_for(lambda: node.counters.dead_lettered >= len(letters) + 1, WAIT_S)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(WAIT_S) == 0, lines_of(out)
        shown = real()
        assert len(shown) == len(letters), shown  # one line each, nothing else printed
        for line, (payload, reason) in zip(shown, letters, strict=True):
            match = LINE.match(line)
            assert match, line
            assert match.group(1) == reason and match.group(2) == f"{site}/{DEVICE}"
            assert int(match.group(3)) == len(payload)
            assert match.group(5) == payload.decode()[:60]
        assert "weather_station" in shown[-1] and "soil_probe" in shown[-1]  # the detail says why
    finally:
        device.close(1)


def test_reason_filter_count_and_json(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Only the reason asked for, as raw JSON, and the tail ends by itself after --count."""
    site = new_site()
    device = MqttClient(mosquitto.url)
    device.connect(timeout=10)
    topic = TOPICS.reading(site, DEVICE)
    t0 = now_ms()
    try:
        with (
            running_node(edge_settings(mosquitto.url, tmp_path, site)),
            tail(mosquitto.url, tmp_path, "--site", site, "--reason", "kind_changed", "--count", "2", "--json")
            as (proc, out),
        ):
            device.publish(topic, reading(DEVICE, "weather_station", t0, WEATHER), qos=1)
            for i in range(1, 200):  # bounded: about 60 s at most
                if proc.poll() is not None:
                    break
                device.publish(topic, b"{oops", qos=1)
                device.publish(topic, reading(DEVICE, "soil_probe", t0 + i * 1000, {"moisture": 30.0}), qos=1)
                wait_for(lambda: proc.poll() is not None, 0.3, 0.05)
            assert proc.wait(WAIT_S) == 0, lines_of(out)
        letters = [json.loads(line) for line in lines_of(out)]
        assert len(letters) == 2
        assert all(d["reason"] == "kind_changed" and d["site"] == site for d in letters)
    finally:
        device.close(1)
