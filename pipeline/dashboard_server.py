"""``edgepipe dashboard``: serve the Streamlit app over the configured store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dashboards
from pipeline.config import Settings

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


def serve_dashboard(settings: Settings) -> int:
    print(f"edgepipe dashboard on http://{settings.dashboard.address}:{settings.dashboard.port}/", flush=True)
    try:
        return subprocess.call(dashboard_command(settings))
    except KeyboardInterrupt:
        return 0
