"""What `edgepipe edge` logs, run as a real process on a real broker and stopped with SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nodekit import edgepipe_process, new_site, now_ms, reading

from pipeline.bench.common import wait_for
from pipeline.mqtt import MqttClient
from pipeline.protocol import Topics
from pipeline.services import Mosquitto

TOPICS = Topics()
WAIT_S = 30.0
DEVICE = "soil_probe-0001"
WARNINGS_PER_MIN = 2
BAD_JSON = 3  # one more than the budget: one is counted, not logged
GOOD = 6
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


@contextmanager
def edge_process(
    url: str, site: str, tmp_path: Path, *args: str, **env_extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`edgepipe edge` for ``site``, its stderr in a file; killed (by its pid) if still running."""
    env = {
        "EDGEPIPE_EDGE__STATE_DIR": str(tmp_path / "state"),
        "EDGEPIPE_LOG__SUMMARY_INTERVAL_S": "0.5",
        "EDGEPIPE_LOG__WARNINGS_PER_MIN": str(WARNINGS_PER_MIN),
        **env_extra,
    }
    with edgepipe_process(tmp_path / "edge.log", "edge", "--broker", url, "--site", site, *args, env=env) as running:
        yield running


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def _feed(url: str, site: str) -> int:
    """Garbage and good readings from one device; how many messages were sent."""
    device = MqttClient(url)
    device.connect(timeout=10)
    topic = TOPICS.reading(site, DEVICE)
    payloads = [b"{oops"] * BAD_JSON + [b""]
    t0 = now_ms()
    payloads += [reading(DEVICE, "soil_probe", t0 + i * 1000, {"moisture": 30.0 + i}) for i in range(GOOD)]
    try:
        for payload in payloads:
            device.publish(topic, payload, qos=1)
        assert device.flush(10)
    finally:
        device.close(1)
    return len(payloads)


def _run_and_stop(mosquitto: Mosquitto, tmp_path: Path, fmt: str) -> tuple[list[str], int]:
    site = new_site()
    with edge_process(mosquitto.url, site, tmp_path, "--log-format", fmt) as (proc, log_path):
        assert wait_for(lambda: "edge node started" in log_path.read_text(), WAIT_S, 0.1), _lines(log_path)
        sent = _feed(mosquitto.url, site)
        counted = f'"received": {sent},' if fmt == "json" else f"received={sent} "
        assert wait_for(
            lambda: any("summary" in line and counted in line for line in _lines(log_path)), WAIT_S, 0.1
        ), _lines(log_path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT_S) == 0
    return _lines(log_path), sent


def test_json_logs_tell_dead_letters_summaries_and_the_stop_one_object_per_line(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    lines, sent = _run_and_stop(mosquitto, tmp_path, "json")
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # every line parses
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    warnings = [r for r in records if r["msg"] == "dead letter"]
    assert all(r["level"] == "WARNING" for r in warnings)
    by_reason = [r["reason"] for r in warnings]
    assert by_reason.count("bad_json") == WARNINGS_PER_MIN and by_reason.count("empty") == 1
    (suppressed,) = [r for r in records if r["msg"] == "dead letters not logged"]
    assert (suppressed["reason"], suppressed["suppressed"]) == ("bad_json", BAD_JSON - WARNINGS_PER_MIN)
    assert any(r["msg"] == "summary" and r["received"] == sent for r in records)
    assert any(r["msg"].startswith("mqtt ") and "connected to" in r["msg"] for r in records)
    stop = records[-1]
    assert stop["msg"] == "edge node stopped", records[-3:]
    assert (stop["received"], stop["accepted"], stop["dead_letters"]) == (sent, GOOD, BAD_JSON + 1)
    assert stop["dead_letters_by_reason"] == {"bad_json": BAD_JSON, "empty": 1}


def test_text_logs_say_the_same_on_readable_lines(mosquitto: Mosquitto, tmp_path: Path) -> None:
    lines, sent = _run_and_stop(mosquitto, tmp_path, "text")
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert any("WARNING" in line and "dead letter reason=bad_json" in line for line in lines)
    assert any("dead letters not logged reason=bad_json suppressed=1" in line for line in lines)
    assert "edge node stopped" in lines[-1] and f"received={sent}" in lines[-1]
    assert f"accepted={GOOD}" in lines[-1]


def test_a_metrics_port_in_use_names_the_setting_on_one_line_and_exits_2(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        with edge_process(mosquitto.url, new_site(), tmp_path, EDGEPIPE_EDGE__METRICS_PORT=port) as (proc, log):
            assert proc.wait(WAIT_S) == 2, log.read_text()
    (line,) = [line for line in _lines(log) if "edge.metrics_port" in line]
    assert line.startswith("edgepipe: config error: edge.metrics_port") and "cannot listen" in line
    assert "Traceback" not in log.read_text()
