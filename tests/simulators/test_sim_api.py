"""The simulators' public API: options, report, publisher seam, registry, ids and topics."""

from __future__ import annotations

import inspect
import json
import re
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simstream import MONDAY, Stream, simulate

import simulators
from pipeline.errors import ConfigError
from pipeline.protocol.catalog import KINDS, kinds_of_domain
from pipeline.protocol.json_codec import decode_reading
from simulators import SimOptions, default_start_ms, parse_anomaly_rates, run
from simulators.domains import DOMAINS, MODELS

ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class RecordingPublisher:
    """A test double with MqttClient's publish signature."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, payload, qos, retain))


def test_public_api_is_exported() -> None:
    for name in ("SimOptions", "SimReport", "Publisher", "run", "replay", "default_start_ms"):
        assert name in simulators.__all__
        assert hasattr(simulators, name)


def test_a_fake_with_publish_is_a_publisher() -> None:
    assert isinstance(RecordingPublisher(), simulators.Publisher)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        pytest.param({"sites": ("mall",)}, "sim.sites", id="site-without-domain"),
        pytest.param({"sites": ("farm/1",)}, "sim.sites", id="site-not-an-id"),
        pytest.param({"sites": ("farm", "farm")}, "sim.sites", id="site-twice"),
        pytest.param({"rate": 0.0}, "sim.rate", id="rate-zero"),
        pytest.param({"rate": 5000.0}, "sim.rate", id="rate-below-a-millisecond"),
        pytest.param({"duration": -1.0}, "sim.duration", id="duration-negative"),
        pytest.param({"bad_rate": 1.5}, "sim.bad_rate", id="bad-rate-above-one"),
        pytest.param({"qos": 3}, "sim.qos", id="qos-3"),
        pytest.param({"anomaly_rates": {"meteor": 1.0}}, "sim.anomaly_rates", id="unknown-anomaly"),
        pytest.param({"topic_root": "edgepipe/#"}, "sim.topic_root", id="wildcard-root"),
    ],
)
def test_invalid_options_name_their_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SimOptions(**changes)  # type: ignore[arg-type]
    assert raised.value.key == key


def test_anomaly_rates_parse_from_the_command_line_form() -> None:
    assert parse_anomaly_rates("spike=2, dropout=0") == {"spike": 2.0, "dropout": 0.0}
    with pytest.raises(ConfigError):
        parse_anomaly_rates("meteor=1")


def test_report_has_the_fields_the_cli_prints(sim: Callable[..., Stream]) -> None:
    report = sim(devices_per_site=2, duration=5).report.to_dict()
    for key in (
        "readings_published",
        "bad_published",
        "payloads_published",
        "payloads_acknowledged",
        "labels",
        "labels_acknowledged",
        "seconds",
    ):
        assert key in report
    assert report["payloads_published"] == report["readings_published"] + report["bad_published"]
    # the caller fills the acknowledged counts from its MQTT client
    assert report["payloads_acknowledged"] is report["labels_acknowledged"] is None


def test_readings_and_labels_go_through_the_publisher_at_their_qos() -> None:
    publisher = RecordingPublisher()
    options = SimOptions(
        devices_per_site=5, rate=1 / 60, duration=6 * 3600, start_ms=MONDAY, qos=0, anomaly_rate=2
    )
    report = run(options, publisher)
    readings = [s for s in publisher.sent if "/dev/" in s[0]]
    labels = [s for s in publisher.sent if s[0].endswith("/labels")]
    assert len(readings) == report.readings_published
    assert len(labels) == report.labels > 0
    assert {qos for _, _, qos, _ in readings} == {0}
    assert {qos for _, _, qos, _ in labels} == {1}
    assert not any(retain for *_, retain in publisher.sent)


def test_every_catalog_kind_has_a_model_that_names_real_metrics() -> None:
    simulated = {k for k in KINDS if k != "replay"}
    assert set(MODELS) == simulated
    for name, model in MODELS.items():
        metrics = KINDS[name].metrics
        assert set(model.scales) == set(metrics)
        assert set(model.generic) <= set(metrics)


def test_each_domain_mixes_exactly_its_catalog_kinds() -> None:
    for name, domain in DOMAINS.items():
        assert set(domain.mix) == {k.name for k in kinds_of_domain(name)}


def test_every_reading_passes_the_validator(week: Stream) -> None:
    for topic, payload in week.publications:
        _, _, site, _, device = topic.split("/")
        now = json.loads(payload)["ts"]  # the edge's clock agrees with the device's
        reading = decode_reading(payload, site=site, device=device, now_ms=now)
        assert reading.ts >= MONDAY


def test_device_ids_are_valid_and_name_their_kind(week: Stream) -> None:
    for (_, device), rows in week.readings.items():
        assert ID.match(device)
        assert device.rsplit("-", 1)[0] == rows[0]["kind"]
        assert re.fullmatch(r"\d{4}", device.rsplit("-", 1)[1])


def test_each_site_has_a_mix_of_kinds(week: Stream) -> None:
    for site in week.options.sites:
        kinds = {rows[0]["kind"] for (s, _), rows in week.readings.items() if s == site}
        assert len(kinds) >= 3


def test_seq_and_ts_strictly_increase_per_device(week: Stream) -> None:
    for rows in week.readings.values():
        seqs = [r["seq"] for r in rows]
        stamps = [r["ts"] for r in rows]
        assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False))
        assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False))


def test_metrics_are_rounded_to_their_resolution(week: Stream) -> None:
    for rows in week.readings.values():
        metrics = KINDS[rows[0]["kind"]].metrics
        for row in rows:
            for name, value in row["metrics"].items():
                steps = value / metrics[name].resolution
                assert abs(steps - round(steps)) < 1e-6, (name, value)
                assert len(repr(value)) <= 12  # 23.4, never 23.400000000000002


def test_readings_use_the_device_topic_under_the_root(sim: Callable[..., Stream]) -> None:
    stream = sim(sites=("city-2",), devices_per_site=3, duration=3, topic_root="acme/v1")
    topics = {t for t, _ in stream.publications}
    assert topics == {
        "acme/v1/city-2/dev/traffic_counter-0001",
        "acme/v1/city-2/dev/air_quality-0001",
        "acme/v1/city-2/dev/streetlight-0001",
    }


def test_the_run_covers_duration_times_speed(sim: Callable[..., Stream]) -> None:
    stream = sim(sites=("farm",), devices_per_site=1, rate=2, duration=10, speed=6)
    assert stream.report.readings_published == 2 * 10 * 6
    assert stream.report.sim_seconds == pytest.approx(60)


def test_default_start_keeps_readings_at_or_before_the_wall_clock() -> None:
    now = MONDAY + 123_456
    paced = SimOptions(duration=60, speed=60, realtime=True)
    unpaced = SimOptions(duration=60, speed=60, realtime=False)
    assert default_start_ms(paced, now) == (now - 59 * 60_000) // 60_000 * 60_000
    assert default_start_ms(unpaced, now) <= now - 3600_000
    assert default_start_ms(SimOptions(realtime=True), now) == now // 60_000 * 60_000


def test_a_stop_event_ends_the_run_and_closes_open_labels() -> None:
    stop = threading.Event()

    class StopAfter(RecordingPublisher):
        def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
            super().publish(topic, payload, qos, retain)
            if len(self.sent) >= 50:
                stop.set()

    options = SimOptions(devices_per_site=5, rate=1, duration=3600, start_ms=MONDAY)
    report = run(options, StopAfter(), stop=stop)
    assert report.stopped
    assert report.readings_published < 100


def test_mqtt_client_fits_the_publisher_seam() -> None:
    from pipeline.mqtt import MqttClient

    ours = inspect.signature(simulators.Publisher.publish).parameters
    theirs = inspect.signature(MqttClient.publish).parameters
    assert list(ours) == list(theirs)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    site=st.sampled_from(["farm", "farm-2", "retail_east", "city-Lyon"]),
    rate=st.sampled_from([1 / 600, 1 / 60, 1.0]),
)
def test_any_seed_and_site_give_valid_readings(seed: int, site: str, rate: float) -> None:
    stream = simulate(
        sites=(site,),
        devices_per_site=10,
        rate=rate,
        duration=60 / rate,  # 60 readings per device
        seed=seed,
        anomaly_rate=5.0,
    )
    assert stream.report.readings_published > 0
    for topic, payload in stream.publications:
        if "/dev/" in topic:
            device = topic.rsplit("/", 1)[1]
            now = json.loads(payload)["ts"]
            decode_reading(payload, site=site, device=device, now_ms=now)
