"""Host processes as bench's backends see them: alive or not, pidfiles, command lines.

Small readers of /proc shared by every backend (each tolerates the process being gone).
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

import psutil


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited; it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def read_pid_file(path: Path) -> int | None:
    """The positive pid a pidfile holds, or None (absent, empty, garbage)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def cmdline_of(pid: int) -> list[str]:
    """A process's argv from /proc (empty once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def processes_mentioning(text: str) -> list[int]:
    """Host pids whose command line contains ``text`` (a container's shim, conmon, cleanup)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(text in arg for arg in cmdline):
            found.append(proc.pid)
    return found


def wait_for_pid_exit(pid: int, deadline: float) -> bool:
    """Block until ``pid`` exited (True) or the monotonic ``deadline`` passed (False).

    A pidfd wakes the moment the process exits (polling with sleeps would add up to a
    sleep's length to every exit stamp); a process already gone counts as exited.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        exited, _, _ = select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(pidfd)
    return bool(exited)
