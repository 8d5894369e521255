"""Start and stop real ``mosquitto`` and ``influxd`` processes on free loopback ports.

Used by the test fixtures (``tests/conftest.py``), by ``edgepipe demo`` and by
``edgepipe bench``. No pytest imports here: this is runtime code.

Rules this module keeps, and why:

* Everything binds to 127.0.0.1 on a port picked by :func:`free_port`. Other brokers and
  databases may run on the same machine, so 1883 and 8086 are never assumed.
* Every file a service writes (config, persistence, logs) lives in the work directory the
  caller gives, so runs cannot see each other's state.
* A service is only ever signalled through the PID of the process this object started.
  Never ``pkill``/``killall``: they would hit other people's brokers.
* A missing binary raises :class:`~pipeline.errors.ServiceError` naming the ``apt-get``
  command that installs it, so a fresh machine tells you what to do instead of skipping.

Example::

    with Mosquitto(workdir) as broker, Influxd(workdir) as influx:
        influx.create_database("edgepipe")
        print(broker.url, influx.url)
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from pipeline.errors import ServiceError

__all__ = [
    "Influxd",
    "Mosquitto",
    "Service",
    "TlsFiles",
    "free_port",
    "write_password_file",
]

LOOPBACK = "127.0.0.1"
MOSQUITTO_INSTALL = "apt-get install -y mosquitto mosquitto-clients"
INFLUXD_INSTALL = "apt-get install -y influxdb"

# Services still running when the interpreter exits are stopped (by their own PID).
_LIVE: weakref.WeakSet[Service] = weakref.WeakSet()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it (bind to port 0). There is a small race until the service binds
    it; :meth:`Service.start` retries with a new port when an auto-picked one is taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def _find_binary(name: str, fallback: str, install: str) -> str:
    """Locate ``name`` on PATH or at ``fallback`` (``/usr/sbin`` is not on a user's PATH)."""
    found = shutil.which(name)
    if found:
        return found
    if os.path.isfile(fallback) and os.access(fallback, os.X_OK):
        return fallback
    raise ServiceError(f"{name} not found on PATH or at {fallback}; install it with: {install}")


def _tail(path: Path, lines: int = 30) -> str:
    """Last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log at {path})"


def _listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (Linux ``/proc``).

    A TCP connect alone can reach another program that grabbed the port in the race
    after :func:`free_port`, so readiness also checks that the listener is ours.
    Returns None where ``/proc`` cannot tell (not Linux).
    """
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                next(f, None)
                for row in f:
                    cols = row.split()
                    if (
                        len(cols) > 9
                        and cols[3] == "0A"
                        and int(cols[1].rsplit(":", 1)[1], 16) == port
                    ):
                        inodes.add(f"socket:[{cols[9]}]")
        fds = os.listdir(f"/proc/{pid}/fd")
    except (OSError, ValueError, IndexError):
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def write_password_file(path: str | os.PathLike[str], users: Mapping[str, str]) -> Path:
    """Write a mosquitto password file for ``users`` (name → password) with ``mosquitto_passwd``.

    The hashing is mosquitto's own, so the file is exactly what the broker expects.
    """
    tool = _find_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd", MOSQUITTO_INSTALL)
    target = Path(path)
    target.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        args = [tool, "-b", *(["-c"] if i == 0 else []), str(target), user, password]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise ServiceError(f"mosquitto_passwd failed for {user!r}: {done.stderr.strip()}")
    if not users:
        target.touch()
    target.chmod(0o600)
    return target


class Service:
    """A child process owned by this object: start, probe, signal, stop, restart.

    Subclasses write their config in :meth:`_prepare` and say how to probe readiness in
    :meth:`_ready`. The process runs in its own session so that a Ctrl-C in the terminal
    reaches the Python parent first, which then stops the service in order.
    """

    name = "service"
    ready_timeout = 10.0

    def __init__(self, workdir: str | os.PathLike[str], port: int | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._started_once = False

    # -- to override -------------------------------------------------------------------

    def _prepare(self) -> None:
        """Write config files for the current settings; called before every start."""
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """True when the service answers; called repeatedly by :meth:`wait_ready`."""
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _listens(self) -> bool:
        """False while the port's listener is not (yet) our own process."""
        return self._proc is not None and _listens(self._proc.pid, self.port) is not False

    @property
    def log_path(self) -> Path:
        """The file holding the service's own log (and its stdout/stderr)."""
        return self.workdir / f"{self.name}.log"

    @property
    def _output_path(self) -> Path:
        return self.workdir / f"{self.name}.out"

    def _pick_new_ports(self) -> None:
        self._port = free_port()

    # -- public ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The main TCP port on 127.0.0.1; stays the same across :meth:`restart`."""
        return self._port

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        """PID of the current (or last) process; ServiceError if never started."""
        if self._proc is None:
            raise ServiceError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the process exists (also when stopped by SIGSTOP)."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the service log and of its stdout/stderr, for error messages."""
        return f"{_tail(self.log_path, lines)}\n--- stdout/stderr ---\n{_tail(self._output_path, lines)}"

    def start(self, timeout: float | None = None) -> None:
        """Start the process and wait until it answers.

        On the very first start with an auto-picked port, a port taken in the meantime
        is replaced by a new one (up to 3 tries). Later starts keep their port.
        """
        if self.running:
            raise ServiceError(f"{self.name} is already running as pid {self.pid}")
        tries = 3 if not (self._fixed_port or self._started_once) else 1
        for attempt in range(tries):
            if attempt:
                self._pick_new_ports()
            self._prepare()
            self._spawn()
            try:
                self.wait_ready(self.ready_timeout if timeout is None else timeout)
            except ServiceError:
                exited = not self.running
                self.stop()
                if exited and attempt + 1 < tries:
                    continue
                raise
            self._started_once = True
            return

    def _spawn(self) -> None:
        self._close_output()
        self._output = open(self._output_path, "ab")  # closed in stop()
        self._proc = subprocess.Popen(
            self._command(),
            cwd=self.workdir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _LIVE.add(self)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until the service answers; ServiceError with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None:
                raise ServiceError(f"{self.name} was never started")
            code = self._proc.poll()
            if code is not None:
                raise ServiceError(
                    f"{self.name} exited with code {code} before it was ready "
                    f"(port {self.port}); log tail:\n{self.log_tail()}"
                )
            if self._listens() and self._ready():
                return
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"{self.name} (pid {self._proc.pid}) not ready on port {self.port} "
                    f"after {timeout:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to this service's own PID (SIGKILL crash, SIGSTOP hang, SIGCONT...).

        After SIGKILL the process is reaped, so :attr:`running` is False on return.
        """
        if self._proc is None or self._proc.poll() is not None:
            raise ServiceError(f"{self.name} is not running")
        # Popen.send_signal does nothing once the child is reaped, so a recycled PID
        # can never be hit.
        self._proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self._proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the same PID. Idempotent.

        SIGCONT follows SIGTERM so that a service frozen with SIGSTOP can also exit cleanly.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        elif proc is not None:
            proc.wait()
        self._close_output()
        _LIVE.discard(self)

    def restart(self, timeout: float | None = None) -> None:
        """Stop (if running) and start again with the same port, config and data dir."""
        self.stop()
        self.start(timeout)

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self.running and self._proc else "stopped"
        return f"{type(self).__name__}(port={self.port}, {state}, workdir={str(self.workdir)!r})"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a TLS listener: the CA that signed the server certificate, the
    certificate and its private key."""

    ca: Path
    cert: Path
    key: Path


class Mosquitto(Service):
    """A private mosquitto broker with persistence, listening on 127.0.0.1 only.

    By default anonymous, with no ACL: what most tests want. The secured broker of
    docs/operations.md is ``Mosquitto(workdir, users={...}, acl=Path("deploy/acl").read_text(),
    tls=(ca, cert, key))``: ``users`` (name → password) become a hashed password file,
    ``acl`` the ACL file, and ``tls`` turns the one listener into TLS (>= 1.2, URL
    ``mqtts://``). With a password file anonymous access is off and the username is the
    client id (``use_username_as_clientid``, RELIABILITY.md S3) unless the keywords say
    otherwise. ``extra_config`` is appended verbatim to the generated ``mosquitto.conf`` for
    options the constructor does not name.
    """

    name = "mosquitto"
    ready_timeout = 10.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        *,
        password_file: str | os.PathLike[str] | None = None,
        acl_file: str | os.PathLike[str] | None = None,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
        tls: TlsFiles | tuple[str | os.PathLike[str], ...] | None = None,
        allow_anonymous: bool | None = None,
        use_username_as_clientid: bool | None = None,
        max_queued_messages: int = 100_000,
        max_queued_bytes: int = 0,
        message_size_limit: int = 65536,
        autosave_interval: int = 1,
        extra_config: str = "",
    ) -> None:
        self.binary = _find_binary("mosquitto", "/usr/sbin/mosquitto", MOSQUITTO_INSTALL)
        super().__init__(workdir, port)
        if users is not None and password_file is not None:
            raise ValueError("give users or password_file, not both")
        if acl is not None and acl_file is not None:
            raise ValueError("give acl or acl_file, not both")
        if users is not None:
            password_file = write_password_file(self.workdir / "passwd", users)
        if acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(acl)
        self.password_file = Path(password_file).resolve() if password_file else None
        self.acl_file = Path(acl_file).resolve() if acl_file else None
        if tls is not None and not isinstance(tls, TlsFiles):
            ca, cert, key = (Path(p).resolve() for p in tls)
            tls = TlsFiles(ca, cert, key)
        self.tls = tls
        self.allow_anonymous = (
            self.password_file is None if allow_anonymous is None else allow_anonymous
        )
        self.use_username_as_clientid = (
            self.password_file is not None
            if use_username_as_clientid is None
            else use_username_as_clientid
        )
        self.max_queued_messages = max_queued_messages
        self.max_queued_bytes = max_queued_bytes
        self.message_size_limit = message_size_limit
        self.autosave_interval = autosave_interval
        self.extra_config = extra_config

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def data_dir(self) -> Path:
        """Persistence location; kept across :meth:`restart`."""
        return self.workdir / "data"

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``, or ``mqtts://`` when the listener is TLS."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{LOOPBACK}:{self.port}"

    def config_text(self) -> str:
        """The mosquitto.conf this broker runs with."""
        lines = [
            "# written by pipeline.services.Mosquitto",
            "per_listener_settings false",
            f"listener {self.port} {LOOPBACK}",
        ]
        if self.tls:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
                "tls_version tlsv1.2",
            ]
        lines.append(f"allow_anonymous {'true' if self.allow_anonymous else 'false'}")
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        if self.use_username_as_clientid:
            lines.append("use_username_as_clientid true")
        if os.geteuid() == 0:
            # As root, mosquitto would drop to user "mosquitto", which cannot write our
            # work dir. It then only logs a warning about running as root.
            lines.append("user root")
        lines += [
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_on_changes true",
            f"autosave_interval {self.autosave_interval}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"message_size_limit {self.message_size_limit}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.extra_config:
            lines += ["", "# extra_config", self.extra_config.rstrip("\n")]
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                return True
        except OSError:
            return False


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string for our plain values


def rewrite_toml(text: str, changes: Mapping[str, Mapping[str, object]]) -> str:
    """Set ``changes[section][key] = value`` in TOML ``text``, keeping everything else.

    A line-based edit of influxd's own output (no TOML writer in the stdlib). Section
    ``""`` is the top level. Keys missing from a section are added at its end; missing
    sections are appended. Arrays of tables (``[[udp]]``) are never matched.
    """
    pending = {sec: dict(kv) for sec, kv in changes.items()}
    out: list[str] = []
    section = ""

    def flush(sec: str) -> None:
        # Missing keys go before the blank lines that end the section.
        trailing: list[str] = []
        while out and not out[-1].strip():
            trailing.append(out.pop())
        indent = "  " if sec else ""
        for key, value in pending.pop(sec, {}).items():
            out.append(f"{indent}{key} = {_toml_value(value)}")
        out.extend(trailing)

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            flush(section)
            section = stripped if stripped.startswith("[[") else stripped.strip("[]").strip()
            out.append(line)
            continue
        key, sep, _ = stripped.partition("=")
        key = key.strip()
        if sep and not stripped.startswith("#") and key in pending.get(section, {}):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{key} = {_toml_value(pending[section].pop(key))}")
            continue
        out.append(line)
    flush(section)
    for sec in list(pending):
        out += ["", f"[{sec}]"]
        flush(sec)
    return "\n".join(out) + "\n"


INFLUX_PRIVILEGES = ("READ", "WRITE", "ALL")


def _influx_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _influx_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Influxd(Service):
    """A private InfluxDB 1.x server: data, meta and WAL in the work dir, HTTP on a free port.

    The config is ``influxd config -config /dev/null`` (the built-in defaults, not
    ``/etc/influxdb/influxdb.conf``) rewritten for this work dir. ``config_overrides``
    sets further keys, e.g. ``{"http": {"auth-enabled": True, "max-body-size": 1000}}``.
    ``credentials`` (user, password) are sent with :meth:`query` and :meth:`write`.
    ``INFLUXDB_*`` variables, which influxd would apply over its config, are not passed on.

    ``admin`` (user, password) runs the server as a deployment should: ``auth-enabled``,
    with that admin created at the first start (influxd lets the first admin be created
    without credentials) and used as ``credentials``; :meth:`create_user` then adds users
    with per-database grants, e.g. a WRITE-only writer and a READ-only reader.
    """

    name = "influxd"
    ready_timeout = 30.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        *,
        rpc_port: int | None = None,
        config_overrides: Mapping[str, Mapping[str, object]] | None = None,
        credentials: tuple[str, str] | None = None,
        admin: tuple[str, str] | None = None,
    ) -> None:
        self.binary = _find_binary("influxd", "/usr/bin/influxd", INFLUXD_INSTALL)
        super().__init__(workdir, port)
        self.rpc_port = rpc_port if rpc_port is not None else free_port()
        self.config_overrides = {k: dict(v) for k, v in (config_overrides or {}).items()}
        if admin is not None:
            if credentials is not None:
                raise ValueError("give admin or credentials, not both")
            self.config_overrides.setdefault("http", {})["auth-enabled"] = True
            credentials = admin
        self.admin = admin
        self.credentials = credentials

    @property
    def config_path(self) -> Path:
        return self.workdir / "influxdb.conf"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _pick_new_ports(self) -> None:
        self._port = free_port()
        self.rpc_port = free_port()

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def base_config(self) -> str:
        """influxd's built-in default config (``influxd config -config /dev/null``)."""
        done = subprocess.run(
            [self.binary, "config", "-config", os.devnull],
            capture_output=True,
            text=True,
            timeout=30,
            env=self._env(),
            check=False,
        )
        if done.returncode != 0 or "[http]" not in done.stdout:
            raise ServiceError(
                f"`influxd config` failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
            )
        return done.stdout

    def config_text(self) -> str:
        """The config this server runs with."""
        base = self.base_config()
        top: dict[str, object] = {"bind-address": f"{LOOPBACK}:{self.rpc_port}"}
        # Debian's 1.6.7 build spells it `reporting-enabled`; upstream `reporting-disabled`.
        if any(line.startswith("reporting-enabled") for line in base.splitlines()):
            top["reporting-enabled"] = False
        else:
            top["reporting-disabled"] = True
        changes: dict[str, dict[str, object]] = {
            "": top,
            "meta": {"dir": str(self.workdir / "meta"), "logging-enabled": False},
            "data": {
                "dir": str(self.workdir / "data"),
                "wal-dir": str(self.workdir / "wal"),
                "query-log-enabled": False,
            },
            "monitor": {"store-enabled": False},
            "http": {
                "bind-address": f"{LOOPBACK}:{self.port}",
                "log-enabled": False,
                "pprof-enabled": False,
                "unix-socket-enabled": False,
                "bind-socket": str(self.workdir / "influxd.sock"),
            },
            "continuous_queries": {"log-enabled": False},
            "logging": {"level": "warn", "suppress-logo": True},
        }
        for sec, kv in self.config_overrides.items():
            changes.setdefault(sec, {}).update(kv)
        return rewrite_toml(base, changes)

    def _prepare(self) -> None:
        self.config_path.write_text(self.config_text())

    def _command(self) -> list[str]:
        return [self.binary, "-config", str(self.config_path)]

    def start(self, timeout: float | None = None) -> None:
        """Start (see :meth:`Service.start`); with ``admin``, create it on the first start."""
        first = not self._started_once
        super().start(timeout)
        if self.admin is not None and first:
            name, password = self.admin
            self._statement(
                f"CREATE USER {_influx_ident(name)} WITH PASSWORD {_influx_string(password)} "
                "WITH ALL PRIVILEGES"
            )

    def create_user(self, name: str, password: str, grants: Mapping[str, str] | None = None) -> None:
        """``CREATE USER`` (not an admin), then ``GRANT`` each privilege on its database.

        ``grants`` maps a database to ``READ``, ``WRITE`` or ``ALL``. Needs ``admin``.
        """
        self._statement(f"CREATE USER {_influx_ident(name)} WITH PASSWORD {_influx_string(password)}")
        for database, privilege in (grants or {}).items():
            if privilege not in INFLUX_PRIVILEGES:
                raise ValueError(f"privilege {privilege!r} is not one of {INFLUX_PRIVILEGES}")
            self._statement(f"GRANT {privilege} ON {_influx_ident(database)} TO {_influx_ident(name)}")

    def drop_user(self, name: str) -> None:
        self._statement(f"DROP USER {_influx_ident(name)}")

    def _statement(self, q: str) -> None:
        """Run one InfluxQL statement; ServiceError if the server reports an error for it."""
        errors = [r["error"] for r in self.query(q).get("results", []) if "error" in r]
        if errors:
            raise ServiceError(f"influxd refused {q.split(' WITH PASSWORD')[0]!r}: {errors[0]}")

    @property
    def log_path(self) -> Path:
        # influxd logs to stderr, which Service sends to this file.
        return self._output_path

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                return bool(resp.status == 204)
        except (OSError, urllib.error.URLError):
            return False

    def _request(self, path: str, params: dict[str, str], body: bytes | None) -> bytes:
        if self.credentials:
            params = {**params, "u": self.credentials[0], "p": self.credentials[1]}
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace").strip()
            e.close()
            raise ServiceError(f"influxd {path} returned HTTP {e.code}: {detail}") from None
        except OSError as e:
            raise ServiceError(f"influxd {path} failed: {e}") from None

    def query(self, q: str, db: str | None = None, *, epoch: str | None = None) -> dict[str, Any]:
        """POST ``q`` (InfluxQL) to ``/query`` and return the parsed JSON.

        Statement errors stay in ``result["results"][i]["error"]``; HTTP errors raise.
        """
        params = {"q": q}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        data = self._request("/query", params, b"")
        result: dict[str, Any] = json.loads(data)
        return result

    def write(self, db: str, lines: str, precision: str = "ms") -> None:
        """POST line protocol to ``/write``; ServiceError unless it answers 204."""
        self._request("/write", {"db": db, "precision": precision}, lines.encode())

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE`` (idempotent in InfluxDB 1.x)."""
        self._statement(f"CREATE DATABASE {_influx_ident(name)}")


@atexit.register
def _stop_leftovers() -> None:
    """Stop services the program forgot, so no broker outlives the process that owned it."""
    for service in list(_LIVE):
        try:
            service.stop(timeout=5)
        except Exception:  # best effort at exit
            pass
