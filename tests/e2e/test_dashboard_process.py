"""``edgepipe dashboard`` as a process: a SIGTERM stops Streamlit and frees the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.services import free_port

START_TIMEOUT_S = 90.0  # Streamlit's first start imports a lot; generous on a busy machine
STOP_TIMEOUT_S = 30.0


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Streamlit binds it
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_sigterm_to_edgepipe_dashboard_frees_its_port_and_leaves_no_child(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "dashboard.log"
    command = [sys.executable, "-m", "pipeline", "dashboard", "--port", str(port)]
    command += ["--store", f"sqlite:///{tmp_path / 'store.db'}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    seen: set[int] = set()
    try:
        started = _wait(lambda: proc.poll() is not None or _answers(port), START_TIMEOUT_S)
        assert started and proc.poll() is None, f"dashboard did not answer:\n{log.read_text()}"
        seen.update(_children(proc.pid))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
        assert _wait(lambda: _port_free(port), STOP_TIMEOUT_S), f"port {port} still held"
        assert not [pid for pid in seen if _alive(pid)], "a child of edgepipe dashboard survived"
    finally:
        for pid in [*seen, *_children(proc.pid)]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    if proc.returncode not in (0, -signal.SIGTERM):
        pytest.fail(f"edgepipe dashboard ended with {proc.returncode}:\n{log.read_text()}")
