"""The ``edgepipe`` command: one entry point for every role.

Exit codes: 0 success, 2 usage or configuration error, 1 runtime failure. Settings are loaded
once here (file, environment, flags) and passed down; nothing below reads the environment.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import click

from pipeline import __version__
from pipeline.config import (
    Settings,
    SimSettings,
    load_settings,
    reference_markdown,
    sample_config,
    settings_as_toml,
)
from pipeline.errors import ConfigError, EdgepipeError
from pipeline.protocol.messages import ALERT_SOURCES
from pipeline.protocol.reasons import Reason
from pipeline.protocol.topics import is_valid_id
from simulators.fleet import MAX_RATE, MAX_TS_MS

F = Callable[..., Any]

# The flag that sets each setting (or simulator option): an error in a value given as a
# flag names the flag, which is what the user typed, not the setting it overrides.
FLAG_OF_KEY = {
    "mqtt.url": "--broker",
    "store.url": "--store",
    "edge.site": "--site",
    "dashboard.port": "--port",
    "sim.sites": "--sites",
    "sim.devices_per_site": "--devices-per-site",
    "sim.rate": "--rate",
    "sim.speed": "--speed",
    "sim.seed": "--seed",
    "sim.qos": "--qos",
    "sim.bad_rate": "--bad-rate",
    "sim.duration": "--duration",
    "sim.start_ms": "--start",
    "sim.replay": "--replay",
    "sim.site": "--site",
    "sim.device": "--device",
    "sim.kind": "--kind",
    "sim.inject": "--inject",
}


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf (click lets nan through every bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _id_option(*, wildcard: bool = False) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that refuses a site or device id a topic cannot carry ('/', '#', ...)."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or (wildcard and value == "+") or is_valid_id(value):
            return value
        allowed = "letters, digits, '_' and '-', 1 to 64 characters"
        if wildcard:
            allowed += " (or '+' for every site)"
        raise click.BadParameter(f"{value!r}: {allowed}")

    return check


def _setting_default(name: str) -> str:
    """The default of ``sim.NAME`` for --help: the flag overrides that setting."""
    default = SimSettings.model_fields[name].default
    shown = ",".join(default) if isinstance(default, list) else default
    return f"{shown}, setting sim.{name}"


def _config_option(f: F) -> F:
    return click.option(
        "--config",
        "config_file",
        envvar="EDGEPIPE_CONFIG",
        type=click.Path(dir_okay=False),
        help="TOML settings file (also $EDGEPIPE_CONFIG).",
    )(f)


def _broker_option(f: F) -> F:
    return click.option(
        "--broker", help="Broker URL: mqtt://[user:pass@]host:port, mqtts:// for TLS."
    )(f)


def _store_option(f: F) -> F:
    return click.option(
        "--store",
        help="sqlite:///PATH or influxdb://[user:pass@]host:port/DATABASE[?token=..&org=..].",
    )(f)


def _verbose_option(f: F) -> F:
    return click.option("-v", "--verbose", is_flag=True, help="Log more.")(f)


def _log_format_option(f: F) -> F:
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        help="Log lines as text, or one JSON object per line for log shippers (default: log.format).",
    )(f)


def _settings(
    config_file: str | None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> Settings:
    """Load the settings with ``overrides`` (dotted key: flag value, None when not given).

    ``flags`` names the flag of a key where it is not the one in ``FLAG_OF_KEY``.
    """
    overrides = overrides or {}
    with _naming_flags(overrides, flags):
        return load_settings(config_file, overrides, other_env=_option_envvars())


@contextmanager
def _naming_flags(given: dict[str, Any], flags: dict[str, str] | None = None) -> Iterator[None]:
    """Turn a ConfigError about a value the user gave as a flag into a usage error naming it."""
    try:
        yield
    except ConfigError as exc:
        flag = (flags or {}).get(exc.key) or FLAG_OF_KEY.get(exc.key)
        if flag is None or given.get(exc.key) is None:
            raise
        value = exc.value
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        detail = exc.allowed if repr(shown) in exc.allowed else f"{shown!r}: {exc.allowed}"
        raise click.BadParameter(detail, param_hint=f"'{flag}'") from None


def _option_envvars() -> set[str]:
    """Environment variables the command line's own options read (not settings, not unknown)."""
    names: set[str] = set()

    def visit(command: click.Command) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(command, "commands", {}).values():
            visit(sub)

    visit(cli)
    return names


def _logging(verbose: bool, fmt: Literal["text", "json"] = "text") -> None:
    from pipeline.logs import configure_logging

    configure_logging(verbose, fmt)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so that long-running roles stop cleanly."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgepipe")
def cli() -> None:
    """edgepipe: an edge-to-cloud IoT analytics pipeline.

    Devices publish readings over MQTT; one edge node per site validates and selects them,
    detects anomalies and ships compressed batches through a store-and-forward queue; the
    cloud tier stores everything in InfluxDB or SQLite; a Streamlit dashboard shows it.

    Quick look: edgepipe demo --duration 20
    """


# -- config ---------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Show, check or print a sample of the settings.

    Example: edgepipe config check --config edgepipe.toml
    """


@config.command("show")
@_config_option
def config_show(config_file: str | None) -> None:
    """Print the effective settings (file + EDGEPIPE_* environment) as TOML.

    Example: edgepipe config show --config edgepipe.toml
    """
    click.echo(settings_as_toml(_settings(config_file)), nl=False)


@config.command("check")
@_config_option
def config_check(config_file: str | None) -> None:
    """Validate the settings; exit 2 naming the first bad key.

    Example: edgepipe config check --config edgepipe.toml
    """
    _settings(config_file)
    click.echo("config ok")


@config.command("sample")
@click.option("--markdown", is_flag=True, help="Print the reference table of docs/configuration.md instead.")
def config_sample(markdown: bool) -> None:
    """Print a commented settings file with every key and its default.

    Example: edgepipe config sample > edgepipe.toml
    """
    click.echo(reference_markdown() if markdown else sample_config(), nl=False)


# -- roles ----------------------------------------------------------------------------------


@cli.command()
@_config_option
@_broker_option
@click.option("--site", help="The site this node serves (a farm*, retail* or city* name).")
@_verbose_option
@_log_format_option
def edge(
    config_file: str | None, broker: str | None, site: str | None, verbose: bool, log_format: str | None
) -> None:
    """Run the edge node of one site until SIGINT or SIGTERM.

    Logs a summary every log.summary_interval_s and its final counters when it stops;
    serves Prometheus /metrics when edge.metrics_port is set.

    Example: edgepipe edge --site farm --broker mqtt://127.0.0.1:1883
    """
    from pipeline.edge.node import EdgeNode

    settings = _settings(
        config_file, {"mqtt.url": broker, "edge.site": site, "log.format": log_format}
    )
    _logging(verbose, settings.log.format)
    node = EdgeNode(settings)
    stop = _stop_on_signals()
    node.start()
    node.run(stop)


@cli.command()
@_config_option
@_broker_option
@_store_option
@_verbose_option
@_log_format_option
def cloud(
    config_file: str | None, broker: str | None, store: str | None, verbose: bool, log_format: str | None
) -> None:
    """Run a cloud ingest worker: edge topics into the store, until SIGINT or SIGTERM.

    Logs a summary every log.summary_interval_s and its final counters when it stops;
    serves Prometheus /metrics when cloud.metrics_port is set.

    Example: edgepipe cloud --store influxdb://127.0.0.1:8086/edgepipe
    """
    from pipeline.cloud.ingest import IngestWorker
    from pipeline.cloud.store import open_store

    settings = _settings(
        config_file, {"mqtt.url": broker, "store.url": store, "log.format": log_format}
    )
    _logging(verbose, settings.log.format)
    worker = IngestWorker(settings, open_store(settings.store.url))
    stop = _stop_on_signals()
    worker.start()
    worker.run(stop)


@cli.command()
@_config_option
@_broker_option
@_store_option
@click.option(
    "--shard",
    help="i/n: judge the sites whose id hashes to shard i of n (N analysts split a fleet).",
    show_default="0/1, setting analyst.shard",
)
@click.option("--client-id", help="MQTT client id of this analyst (one per process).")
@_verbose_option
@_log_format_option
def analyst(
    config_file: str | None,
    broker: str | None,
    store: str | None,
    shard: str | None,
    client_id: str | None,
    verbose: bool,
    log_format: str | None,
) -> None:
    """Run a fleet analyst: cloud detectors over the sites' aggregates, until SIGINT or SIGTERM.

    Compares each device with its kind's peers at its site and with its own previous days,
    and publishes alerts with source "cloud" on {site}/alerts/{device}; never what the edge
    already raised. On start it replays analyst.restore_hours of the store's aggregates.
    Logs a summary every log.summary_interval_s and serves Prometheus /metrics when
    analyst.metrics_port is set (docs/analyst.md, docs/operations.md).

    Example: edgepipe analyst --store sqlite:///edgepipe.db --shard 0/2
    """
    from pipeline.analyst.role import AnalystRole
    from pipeline.cloud.store import open_store

    settings = _settings(
        config_file,
        {
            "mqtt.url": broker,
            "store.url": store,
            "analyst.shard": shard,
            "analyst.client_id": client_id,
            "log.format": log_format,
        },
        {"analyst.shard": "--shard", "analyst.client_id": "--client-id"},
    )
    _logging(verbose, settings.log.format)
    role = AnalystRole(settings, open_store(settings.store.url))
    stop = _stop_on_signals()
    role.start()
    role.run(stop)


@cli.command()
@_config_option
@_broker_option
@click.option(
    "--sites",
    help="Comma-separated sites; the domain is the word a name starts with (farm-2 is a farm).",
    show_default=_setting_default("sites"),
)
@click.option(
    "--devices-per-site",
    type=click.IntRange(1, 100_000),
    help="Devices simulated at each site.",
    show_default=_setting_default("devices_per_site"),
)
@click.option(
    "--rate",
    type=FiniteFloatRange(0, MAX_RATE, min_open=True),
    help="Readings per simulated second per device.",
    show_default=_setting_default("rate"),
)
@click.option(
    "--duration",
    type=FiniteFloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Wall seconds to run; the run covers duration x speed simulated seconds (a --replay"
    " lasts its rows' span / --speed).",
)
@click.option(
    "--speed",
    type=FiniteFloatRange(min=0, min_open=True),
    help="Simulated seconds per wall second. Above 1, and without --start, the simulated clock"
    " starts (speed - 1) x duration seconds in the past and catches up with the wall clock at"
    " the end (edges refuse readings from the future): readings and alerts carry simulated"
    " time, hours old at --speed 60. The start line on stderr shows the span.",
    show_default=_setting_default("speed"),
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    help="Random seed: the same seed and --start give the same stream.",
    show_default=_setting_default("seed"),
)
@click.option(
    "--qos",
    type=click.IntRange(0, 1),
    help="MQTT QoS of the readings (labels always go at QoS 1).",
    show_default=_setting_default("qos"),
)
@click.option(
    "--bad-rate",
    type=FiniteFloatRange(0, 1),
    help="Fraction of readings replaced by malformed payloads.",
    show_default=_setting_default("bad_rate"),
)
@click.option(
    "--start",
    "start_ms",
    type=click.IntRange(0, MAX_TS_MS),
    help="Simulated start, Unix ms (default: early enough to end at the wall clock).",
)
@click.option("--out", type=click.File("w", lazy=False), help="Also write 'topic<TAB>payload' lines here.")
@click.option(
    "--labels-out",
    type=click.File("w", lazy=False),
    help="Write ground-truth labels here as JSON lines, each as it is published.",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False),
    help="Publish a CSV as one device: a timestamp column, one column per metric of --kind"
    " (without it: one value column), an optional anomaly/label column published as labels.",
)
@click.option(
    "--kind",
    "replay_kind",
    help="Device kind of --replay's metric columns: a built-in kind or a [kinds.NAME] of --config.",
)
@click.option("--site", "replay_site", default="replay", show_default=True, callback=_id_option(), help="Site of --replay.")
@click.option("--device", "replay_device", default="replay-1", show_default=True, callback=_id_option(), help="Device of --replay.")
@click.option(
    "--format",
    "payload_format",
    type=click.Choice(["edgepipe", "json", "ttn", "chirpstack", "zigbee2mqtt", "influx-line"]),
    help="Publish as that system would (default: sim.format, edgepipe); the edge needs the matching [[ingest]].",
)
@click.option(
    "--inject",
    multiple=True,
    help="An anomaly at a given time, beside the random ones: ANOMALY@SECONDS:DEVICE[.METRIC] in"
    " simulated seconds from the start (spike, dip, level_shift, drift, stuck, noise_burst),"
    " e.g. spike@12:soil_probe-0001.moisture; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def sim(
    config_file: str | None,
    broker: str | None,
    sites: str | None,
    devices_per_site: int | None,
    rate: float | None,
    duration: float,
    speed: float | None,
    seed: int | None,
    qos: int | None,
    bad_rate: float | None,
    start_ms: int | None,
    out: Any,
    labels_out: Any,
    replay: str | None,
    replay_site: str,
    replay_device: str,
    replay_kind: str | None,
    payload_format: str | None,
    inject: tuple[str, ...],
    as_json: bool,
) -> None:
    """Simulate farm, retail and city devices publishing readings.

    Publishes to --broker (default: mqtt.url in the settings, mqtt://127.0.0.1:1883) and
    says on stderr which broker and what simulated time span; with --out and no --broker it
    only writes the stream. The same --seed and --start give the same stream, labels included.
    The summary's counts are defined in docs/summaries.md.

    Example: edgepipe sim --sites farm,retail --devices-per-site 200 --rate 1 --duration 60
    """
    from pipeline.simulate import run_sim

    if replay_kind is not None and replay is None:
        raise click.UsageError("--kind names the kind of a --replay file; give --replay too.")
    fleet_flags = {
        "--sites": sites,
        "--devices-per-site": devices_per_site,
        "--rate": rate,
        "--seed": seed,
        "--bad-rate": bad_rate,
        "--inject": inject or None,
    }
    _check_replay_flags(replay, fleet_flags)
    if replay is not None and payload_format not in (None, "edgepipe"):
        raise click.BadParameter("a --replay is published in edgepipe's format only", param_hint="'--format'")
    overrides = {
        "mqtt.url": broker,
        "sim.sites": [s.strip() for s in sites.split(",")] if sites is not None else None,
        "sim.devices_per_site": devices_per_site,
        "sim.rate": rate,
        "sim.speed": speed,
        "sim.seed": seed,
        "sim.qos": qos,
        "sim.bad_rate": bad_rate,
        "sim.format": payload_format,
        "sim.inject": list(inject) if inject else None,
    }
    settings = _settings(config_file, overrides)
    if broker is None and out is None:
        broker = settings.mqtt.url
    given = {**overrides, "sim.duration": duration, "sim.start_ms": start_ms, "sim.replay": replay}
    given.update({"sim.site": replay_site, "sim.device": replay_device, "sim.kind": replay_kind})
    with _naming_flags(given):
        report = run_sim(
            settings,
            publish=broker is not None,
            duration=duration,
            start_ms=start_ms,
            out=out,
            labels_out=labels_out,
            replay=replay,
            replay_site=replay_site,
            replay_device=replay_device,
            replay_kind=replay_kind,
            stop=_stop_on_signals(),
            announce=lambda line: click.echo(f"sim: {line}", err=True),
        )
    _print_report(report, as_json)


def _check_replay_flags(replay: str | None, fleet_flags: Mapping[str, object]) -> None:
    """Refuse the flags of the other mode: they would be ignored without a word, and a user
    typing `--sites farm` beside `--replay` (or `--site farm` without it) would find the
    readings published somewhere else than meant."""
    source = click.get_current_context().get_parameter_source
    if replay is not None:
        for flag, value in fleet_flags.items():
            if value is not None:
                raise click.UsageError(
                    f"{flag} is for the simulated fleet, not a --replay"
                    " (its site is --site, its device --device)."
                )
        if source("duration") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError(
                "--duration is for the simulated fleet: a --replay lasts its rows' span / --speed."
            )
        return
    for flag, name in (("--site", "replay_site"), ("--device", "replay_device")):
        if source(name) is not click.core.ParameterSource.DEFAULT:
            fleet = " (the simulated fleet's sites are --sites)" if flag == "--site" else ""
            raise click.UsageError(
                f"{flag} is the {flag[2:]} of a --replay file; give --replay too{fleet}."
            )


@cli.command()
@_config_option
@_broker_option
@click.option("--site", default="+", show_default=True, callback=_id_option(wildcard=True), help="Only this site ('+' for all).")
@click.option(
    "--severity",
    type=click.Choice(["info", "warning", "critical"]),
    help="Only alerts at or above this severity.",
)
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many alerts.")
@click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option(
    "--source",
    type=click.Choice(ALERT_SOURCES),
    help="Only alerts raised by the edge nodes or by the fleet analyst (cloud).",
)
@click.option("--json", "as_json", is_flag=True, help="Print each alert as raw CloudEvents JSON.")
def alerts(
    config_file: str | None,
    broker: str | None,
    site: str,
    severity: str | None,
    source: str | None,
    count: int | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Tail the alert topics and print each alert on one line as it arrives.

    A line reads: time, site/device (marked "(cloud)" when the fleet analyst raised it),
    metric, severity, state (raised/cleared), score, reason.

    Example: edgepipe alerts --site farm --severity warning
    """
    from pipeline.tail import tail_alerts

    settings = _settings(config_file, {"mqtt.url": broker})
    tail_alerts(
        settings,
        site=site,
        severity=severity,
        source=source,
        count=count,
        timeout=timeout,
        as_json=as_json,
        stop=_stop_on_signals(),
        echo=click.echo,
    )


@cli.command()
@_config_option
@_broker_option
@click.option("--site", default="+", show_default=True, callback=_id_option(wildcard=True), help="Only this site ('+' for all).")
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    type=click.Choice([r.value for r in Reason if r is not Reason.DUPLICATE]),
    metavar="REASON",
    help="Only dead letters with this reason, e.g. bad_json (repeatable; docs/protocol.md lists them).",
)
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many dead letters.")
@click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print each dead letter as its raw JSON.")
def deadletters(
    config_file: str | None,
    broker: str | None,
    site: str,
    reasons: tuple[str, ...],
    count: int | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Tail the dead-letter topics and print each refused payload readably as it arrives.

    One line each: time, reason, site/device, size, what was wrong, the payload's start.

    Example: edgepipe deadletters --site farm --reason bad_json --reason kind_changed
    """
    from pipeline.tail import tail_dead_letters

    settings = _settings(config_file, {"mqtt.url": broker})
    tail_dead_letters(
        settings,
        site=site,
        reasons=reasons,
        count=count,
        timeout=timeout,
        as_json=as_json,
        stop=_stop_on_signals(),
        echo=click.echo,
    )


@cli.command()
@_config_option
@_store_option
@click.option("--port", type=click.IntRange(1, 65535), help="HTTP port (default from settings).")
def dashboard(config_file: str | None, store: str | None, port: int | None) -> None:
    """Serve the Streamlit dashboard over the store, until SIGINT or SIGTERM.

    The process becomes Streamlit once the settings are checked: its signals stop Streamlit.

    Example: edgepipe dashboard --store sqlite:///edgepipe.db --port 8501
    """
    from pipeline.dashboard_server import serve_dashboard

    settings = _settings(config_file, {"store.url": store, "dashboard.port": port})
    serve_dashboard(settings)


@cli.command()
@_config_option
@_broker_option
@_store_option
@click.option("--duration", type=FiniteFloatRange(1, 3600), default=20.0, show_default=True, help="Seconds of simulated traffic.")
@click.option("--devices", type=click.IntRange(1, 1000), default=6, show_default=True, help="Simulated devices.")
@click.option("--site", default="farm", show_default=True, help="The demo's site (a farm*, retail* or city* name).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@_verbose_option
def demo(
    config_file: str | None,
    broker: str | None,
    store: str | None,
    duration: float,
    devices: int,
    site: str,
    as_json: bool,
    verbose: bool,
) -> None:
    """Run simulator, edge node and cloud tier together and report what reached the store.

    With no --broker it starts a local Mosquitto (or an embedded broker when Mosquitto is not
    installed); with no --store it uses SQLite. The summary's counts, and the identities
    between them, are defined in docs/summaries.md.

    Example: edgepipe demo --duration 20 --json
    """
    from pipeline.demo import run_demo

    overrides = {"mqtt.url": broker, "store.url": store, "edge.site": site, "sim.sites": [site]}
    settings = _settings(config_file, overrides, {"sim.sites": "--site"})
    if verbose:
        _logging(verbose)
    report = run_demo(
        settings,
        own_broker=broker is None and not _configured_broker(config_file),
        duration=duration,
        devices=devices,
        stop=_stop_on_signals(),
    )
    _print_report(report, as_json)
    if report["lost"]:
        sys.exit(1)


def _topic_filter(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An MQTT topic filter: '+' and '#' fill a whole level, '#' only as the last."""
    levels = value.split("/")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
            raise click.BadParameter(f"{value!r}: '+' and '#' fill a whole level, '#' only the last")
    if not value or "\x00" in value:
        raise click.BadParameter(f"{value!r}: not an MQTT topic filter")
    return value


@cli.command()
@_config_option
@_broker_option
@click.option("--topic", "topic_filter", default="#", show_default=True, callback=_topic_filter, help="MQTT topic filter to listen to.")
@click.option(
    "--seconds",
    type=FiniteFloatRange(0, 3600, min_open=True),
    default=30.0,
    show_default=True,
    help="How long to listen.",
)
@click.option(
    "--max-messages",
    type=click.IntRange(1, 1_000_000),
    default=50_000,
    show_default=True,
    help="Stop listening after this many messages.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    callback=lambda ctx, param, value: _absent_file(value),
    help="Write the proposal to this new file (default: stdout).",
)
@click.option("--all-kinds", is_flag=True, help="Also propose [kinds.*] tables for kinds the catalogue already has.")
def discover(
    config_file: str | None,
    broker: str | None,
    topic_filter: str,
    seconds: float,
    max_messages: int,
    out: str | None,
    all_kinds: bool,
) -> None:
    """Listen to a broker and propose the [[ingest]] and [kinds.*] settings for what it carries.

    Groups messages by topic shape and payload format (edgepipe, The Things Stack, ChirpStack,
    Zigbee2MQTT, InfluxDB line protocol, any JSON), prints the proposal (TOML) and a summary
    on stderr. Units and ranges cannot be heard: each guess has a `todo` line that config
    check refuses until it is reviewed and deleted (docs/onboarding.md). Ctrl-C ends the
    listening early; the proposal is made from what was heard. Exit 1 when nothing was heard.

    Example: edgepipe discover --broker mqtt://127.0.0.1:1883 --seconds 60 --out devices.toml
    """
    from pipeline.mqtt import parse_broker_url
    from pipeline.onboard import NothingHeard, listen, propose

    settings = _settings(config_file, {"mqtt.url": broker})
    shown = parse_broker_url(settings.mqtt.url)  # printed and written without its password

    def say(line: str) -> None:
        click.echo(f"discover: {line}", err=True)

    samples = listen(settings, topic_filter, seconds, max_messages, _stop_on_signals(), say)
    if not samples:
        raise click.ClickException(
            f"nothing heard on {topic_filter!r} from {shown} in {seconds:g} s: no proposal"
            " (is anything publishing there? try a longer --seconds or another --topic)"
        )
    source = f"{len(samples)} messages on {shown}, topic filter {topic_filter!r}, {seconds:g} s"
    try:
        outcome = propose(settings, samples, source, all_kinds)
    except NothingHeard as exc:
        raise click.ClickException(f"{len(samples)} messages heard, none of them readings: {exc}") from None
    for line in outcome.lines:
        say(line)
    if out is None:
        click.echo(outcome.text, nl=False)
        return
    try:
        with open(out, "x") as f:
            f.write(outcome.text)
    except OSError as exc:
        raise click.ClickException(f"{out}: {exc.strerror}") from None
    say(f"proposal written to {out}; {_discover_next_step(outcome.text, out)}")


def _discover_next_step(text: str, out: str) -> str:
    """What to do with the written proposal: review its todo lines, if it has any (every kind
    already known leaves none, and 'edit its todo lines' would send the user looking)."""
    todos = sum(1 for line in text.splitlines() if line.startswith("todo = "))
    check = f"edgepipe config check --config {out}"
    if todos:
        return f"next: edit its {todos} todo line{'s' if todos > 1 else ''}, then {check}"
    edge = f"edgepipe edge --site SITE --config {out}"
    return f"nothing to review (no todo line): next {check}, then {edge}"


def _absent_file(value: str | None) -> str | None:
    """Checked before listening: a new file in an existing folder (a proposal never overwrites)."""
    if value is None:
        return value
    if Path(value).exists():
        raise click.BadParameter(f"{value!r} exists; discover writes a new file", param_hint="'--out'")
    return _new_file(value)


@cli.group()
def priors() -> None:
    """The priors of the built-in kinds that new detectors start from (docs/detection.md).

    Example: edgepipe priors learn --out pipeline/learn/priors/builtin.json
    """


@priors.command("learn")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Write the priors file here (the package's: pipeline/learn/priors/builtin.json).",
)
def priors_learn(out: str) -> None:
    """Learn the built-in kinds' priors from the simulators, at 1 Hz, 1/min and 1/15 min.

    A fleet the quality bench never sees (its own seed, twelve windows of 2025), through the
    statistics model sync learns; deterministic: the same code writes the same file.

    Example: edgepipe priors learn --out pipeline/learn/priors/builtin.json
    """
    from pipeline.bench.priors import how_learned, learn_kind_priors
    from pipeline.learn.kind_priors import encode_priors

    learned = learn_kind_priors(echo=lambda line: click.echo(line, err=True))
    data = encode_priors(learned, how_learned())
    try:
        Path(out).write_bytes(data)
    except OSError as exc:
        raise click.ClickException(f"{out}: {exc.strerror}") from None
    click.echo(f"{len(learned)} kind metrics, {len(data)} bytes -> {out}")


def _configured_broker(config_file: str | None) -> bool:
    """True when the user chose a broker through the file or environment."""
    return _settings(config_file).mqtt.url != Settings().mqtt.url


@cli.command()
@_config_option
@click.option("--csv", "csv_file", type=click.Path(exists=True, dir_okay=False), help="One timestamp,value CSV.")
@click.option("--nab-dir", type=click.Path(exists=True, file_okay=False), help="A NAB data folder.")
@click.option("--out", required=True, type=click.Path(), help="Output CSV (with --csv) or folder (with --nab-dir).")
def detect(config_file: str | None, csv_file: str | None, nab_dir: str | None, out: str) -> None:
    """Replay timestamp,value CSV files through the edge detector, offline.

    Writes timestamp,value,anomaly_score per file (same relative paths under --out).

    Example: edgepipe detect --nab-dir ../shared/nab/data --out results/
    """
    from pipeline.replay import detect_csv, detect_nab_dir

    _settings(config_file)
    if (csv_file is None) == (nab_dir is None):
        raise click.UsageError("give exactly one of --csv or --nab-dir")
    if csv_file is not None and Path(out).is_dir():
        raise click.BadParameter(f"{out!r} is a folder; with --csv it is the output file", param_hint="'--out'")
    if nab_dir is not None and Path(out).exists() and not Path(out).is_dir():
        raise click.BadParameter(f"{out!r} is a file; with --nab-dir it is the output folder", param_hint="'--out'")
    try:
        if csv_file is not None:
            rows = detect_csv(csv_file, out)
            click.echo(f"scored {rows} rows -> {out}")
        else:
            assert nab_dir is not None
            files, rows = detect_nab_dir(nab_dir, out)
            click.echo(f"scored {rows} rows in {files} files -> {out}")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None


@cli.command()
@click.option("--quick", is_flag=True, help="A reduced run (under 2 minutes).")
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False),
    callback=lambda ctx, param, value: _new_file(value),
    help="Write all results as one JSON object.",
)
@click.option("--quality", "only_quality", is_flag=True, help="Run only the alert-quality part (simulated data and NAB).")
@click.option(
    "--nab-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="NAB folder for quality.nab.* (default: ../shared/nab next to the repository, when it exists).",
)
def bench(quick: bool, json_file: str | None, only_quality: bool, nab_dir: str | None) -> None:
    """Measure throughput, latency, size and alert quality against same-run baselines; print medians.

    Example: edgepipe bench --quick --json bench.json
    """
    from pipeline.bench import run_bench

    if nab_dir is None:
        default = Path(__file__).resolve().parent.parent.parent / "shared" / "nab"
        nab_dir = str(default) if default.is_dir() else None
    results = run_bench(quick=quick, echo=click.echo, nab_dir=nab_dir, only_quality=only_quality)
    if json_file:
        with open(json_file, "w") as f:
            json.dump(results, f, indent=2)


def _new_file(value: str | None) -> str | None:
    """Checked before a long run, not after it: a file that can be written where it is named."""
    if value is not None and not Path(value).absolute().parent.is_dir():
        raise click.BadParameter(f"{value!r}: no such folder")
    return value


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report))
        return
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, list):  # one item a line (the demo's matched alerts); none: "none"
            items = [str(v) for v in value] or ["none"]
            click.echo(f"{key:<{width}}  " + f"\n{'':<{width}}  ".join(items))
        else:
            click.echo(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps errors to exit codes (2 usage/config, 1 runtime)."""
    try:
        result = cli.main(args=argv, prog_name="edgepipe", standalone_mode=False)
    except click.UsageError as exc:
        # one line naming the flag, like a config error, not click's three-line usage block
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        message = " ".join(exc.format_message().split())
        click.echo(f"edgepipe: {message}{where}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"edgepipe: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)
    except ConfigError as exc:
        click.echo(f"edgepipe: {exc}", err=True)
        sys.exit(2)
    except EdgepipeError as exc:
        click.echo(f"edgepipe: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        # e.g. a state_dir that cannot be created: the path and why, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"edgepipe: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
