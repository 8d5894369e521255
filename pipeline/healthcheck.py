"""Container health checks (compose.yaml): is this container's process connected?

``python -m pipeline.healthcheck --tcp 8883 [--tcp 8086] [--http URL]`` exits 0 when, for
every ``--tcp PORT``, some socket in the container holds an established TCP connection to
that remote port (read from ``/proc/net/tcp`` and ``tcp6``), and every ``--http URL``
answers 2xx; else 1, with one line saying what is missing.

Why not log in to the broker to check: with ``use_username_as_clientid`` a second session
under the process's own account would log the process itself out, and a health check should
hold no credentials. The process's own connection is the better signal anyway: paho
reconnects within seconds, so a connection that stays missing means a real fault.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

ESTABLISHED = "01"
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def established_remote_ports(tables: Sequence[str] = TABLES) -> set[int]:
    """Remote ports of every established TCP connection in this network namespace."""
    ports: set[int] = set()
    for table in tables:
        try:
            with open(table) as f:
                next(f, None)  # header
                for row in f:
                    cols = row.split()
                    if len(cols) > 3 and cols[3] == ESTABLISHED:
                        ports.add(int(cols[2].rsplit(":", 1)[1], 16))
        except (OSError, ValueError, IndexError):
            continue
    return ports


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """True when ``url`` answers a 2xx within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own URL
            return 200 <= int(resp.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.healthcheck", description=__doc__)
    parser.add_argument("--tcp", type=int, action="append", default=[], metavar="PORT")
    parser.add_argument("--http", action="append", default=[], metavar="URL")
    args = parser.parse_args(argv)
    if not args.tcp and not args.http:
        parser.error("give at least one --tcp PORT or --http URL")
    missing = [
        f"no connection to port {p}" for p in args.tcp if p not in established_remote_ports()
    ]
    missing += [f"{url} does not answer 2xx" for url in args.http if not http_ok(url)]
    if missing:
        print("unhealthy: " + "; ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
