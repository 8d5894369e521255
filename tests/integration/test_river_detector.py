"""Through a real node and broker: a kind configured to run river's HalfSpaceTrees raises on a spike.

The TOML a user writes (``[detect.kinds.noise_meter]``) reaches the node through
``load_settings``; the other kinds keep the edge detector.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from nodekit import new_site, now_ms, reading, running_node

from pipeline.bench.common import wait_for
from pipeline.config import load_settings
from pipeline.detect.edge_residual import EdgeResidualDetector
from pipeline.detect.river_model import RiverModel
from pipeline.mqtt import MqttClient
from pipeline.protocol import Alert, Topics, decode
from pipeline.services import Mosquitto

TOPICS = Topics()
MINUTE_MS = 60_000
READINGS = 1600
SPIKE_AT = 1500  # the reading that is a spike: 110 dBA in a street of 50-60
SPIKE_DBA = 110.0
WAIT_S = 60.0
MAX_FALSE_RAISES = 3  # before the spike, over a day of normal data (measured: see the test)

CONFIG = """
[detect.kinds.noise_meter]
detector = "river.anomaly.HalfSpaceTrees"
params = { n_trees = 10, height = 8, limits = { value = [-15.0, 15.0], delta = [-15.0, 15.0] } }
preprocess = "river.preprocessing.StandardScaler"
"""


def street_noise(i: int, rng: random.Random) -> float:
    """dBA of a street: a daily swing and noise, on the meter's 0.1 dB grid."""
    daily = 5.0 * math.sin(2 * math.pi * (i % 1440) / 1440)
    return round(55.0 + daily + rng.gauss(0.0, 0.5), 1)


def test_a_kind_configured_with_half_space_trees_raises_on_a_spike(mosquitto: Mosquitto, tmp_path: Path) -> None:
    site = new_site()
    config = tmp_path / "edgepipe.toml"
    config.write_text(CONFIG)
    settings = load_settings(
        config,
        overrides={
            "mqtt.url": mosquitto.url,
            "edge.site": site,
            "edge.state_dir": str(tmp_path / "state"),
            "edge.batch_interval_s": 0.2,
        },
    )
    meter, probe = "noise_meter-0001", "soil_probe-0001"
    t0 = now_ms() - READINGS * MINUTE_MS  # event time: one reading a minute up to now
    rng = random.Random(7)
    device = MqttClient(mosquitto.url)
    device.connect(timeout=10)
    watcher = MqttClient(mosquitto.url)
    watcher.connect(timeout=10)
    watcher.subscribe(TOPICS.alerts(site), qos=1)
    try:
        with running_node(settings) as node:
            for i in range(READINGS):
                ts = t0 + i * MINUTE_MS
                noise = SPIKE_DBA if i == SPIKE_AT else street_noise(i, rng)
                device.publish(TOPICS.reading(site, meter), reading(meter, "noise_meter", ts, {"noise": noise}), qos=1)
                if i % 10 == 0:
                    moisture = {"moisture": 30.0 + rng.gauss(0.0, 0.1)}
                    device.publish(TOPICS.reading(site, probe), reading(probe, "soil_probe", ts, moisture), qos=1)
            expected = READINGS + READINGS // 10
            assert wait_for(lambda: node.counters.accepted == expected, WAIT_S), node.counters.accepted
            assert isinstance(node.detectors[(meter, "noise")], RiverModel)
            assert isinstance(node.detectors[(probe, "moisture")], EdgeResidualDetector)
            spike_ts = t0 + SPIKE_AT * MINUTE_MS
            alerts: list[Alert] = []

            def spike_alert_arrived() -> bool:
                while not watcher.messages.empty():
                    alerts.append(decode(watcher.messages.get().payload, Alert))
                return any(a.data.reading_ts == spike_ts and a.data.state == "raised" for a in alerts)

            assert wait_for(spike_alert_arrived, WAIT_S), [(a.data.reading_ts, a.data.state) for a in alerts]
            raised = [a.data for a in alerts if a.data.state == "raised" and a.data.device == meter]
            spike = next(a for a in raised if a.reading_ts == spike_ts)
            assert (spike.metric, spike.value) == ("noise", SPIKE_DBA)
            false_raises = [a for a in raised if a.reading_ts < spike_ts]
            assert len(false_raises) <= MAX_FALSE_RAISES, [(a.reading_ts, a.value, a.score) for a in false_raises]
    finally:
        device.close(1)
        watcher.close(1)
