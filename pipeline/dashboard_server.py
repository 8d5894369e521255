"""``edgepipe dashboard``: serve the Streamlit app over the configured store."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import dashboards
from pipeline.config import Settings
from pipeline.errors import ServiceError

APP = Path(dashboards.__file__).parent / "app.py"


def dashboard_command(settings: Settings, port: int | None = None) -> list[str]:
    """The command line that serves the dashboard (also used by tests and compose.yaml)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(port or settings.dashboard.port),
        "--server.address",
        settings.dashboard.address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--",
        "--store",
        settings.store.url,
    ]


def serve_dashboard(settings: Settings) -> NoReturn:
    """Become Streamlit (exec), once the settings are checked.

    Why exec rather than a child process: a SIGTERM or SIGINT sent to ``edgepipe dashboard``
    (by systemd, compose, a shell) then reaches Streamlit itself, which stops and frees its
    port; a parent that died on it would leave Streamlit running, holding the port.
    """
    command = dashboard_command(settings)
    print(f"edgepipe dashboard on http://{settings.dashboard.address}:{settings.dashboard.port}/", flush=True)
    sys.stderr.flush()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        raise ServiceError(f"cannot start Streamlit ({command[0]}): {exc}") from None
