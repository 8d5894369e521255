"""`edgepipe sim --format F` feeds a real edge node through a real Mosquitto, for every F:
every good reading is accepted, every malformed payload is refused, nothing unaccounted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from nodekit import new_site, running_node

from pipeline.bench.common import wait_for
from pipeline.config import IngestSettings, load_settings
from pipeline.mqtt import MqttClient
from pipeline.protocol import Topics
from pipeline.services import Mosquitto
from simulators.formats import FORMATS, ingest_entry

WAIT_S = 60.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_simulated_fleet_in_each_format_is_taken_whole(mosquitto: Mosquitto, tmp_path: Path, fmt: str) -> None:
    site = new_site()
    settings = load_settings(
        overrides={
            "mqtt.url": mosquitto.url,
            "edge.site": site,
            "edge.state_dir": str(tmp_path / "state"),
            "edge.detect": False,
        }
    )
    entry = IngestSettings.model_validate(ingest_entry(fmt, site))
    settings = settings.model_copy(update={"ingest": [entry]})
    watcher = MqttClient(mosquitto.url)
    watcher.connect(timeout=10)
    watcher.subscribe(Topics().edge(site, "catalog"), qos=1)
    with running_node(settings) as node:
        # The node publishes its catalogue after its SUBSCRIBEs, on the same connection: once
        # the broker has it, the subscriptions are in place (no timed wait).
        watcher.messages.get(timeout=WAIT_S)
        watcher.close(1)
        done = subprocess.run(
            [
                sys.executable, "-m", "pipeline", "sim", "--broker", mosquitto.url, "--format", fmt,
                "--sites", site, "--devices-per-site", "6", "--rate", "2", "--duration", "3",
                "--bad-rate", "0.3", "--seed", "7", "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        sent = report["payloads_published"]
        assert report["readings_published"] > 0 and report["bad_published"] > 0
        assert wait_for(lambda: node.counters.received >= sent, WAIT_S), (sent, node.summary())
        c = node.counters
        assert c.accepted == report["readings_published"], (report, node.summary())
        assert c.dead_lettered == report["bad_published"], dict(c.dead_letters)
        assert c.unaccounted == 0 and c.duplicates == 0
        if fmt != "edgepipe":
            assert sum(c.ingest_readings.values()) == report["readings_published"]
