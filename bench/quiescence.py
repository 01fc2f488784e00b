"""A quiet host before each sample: the engines' own work after the last instance has ended.

Removing a container returns before the engine has finished with it: dockerd and
containerd go on cleaning up (the shim, the overlay mount, the network namespace) for
tens of milliseconds, and a native process started meanwhile pays for it (18-21 ms to
READY after a docker sample against 6 ms after another process, on the dev machine).
So before a sample, bench waits until the daemons its backends work through (each
declares them: ``Capabilities.engine_processes``) have used less than a small share of
one core over a short window, read from their CPU time in /proc, under a timeout. How
long it waited, and whether the host went quiet, is recorded on the sample.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# quiet = the engines used under this share of one core over the window
QUIET_CORE_FRACTION = 0.02
WINDOW_S = 0.02
TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Quiet:
    """How the wait for a quiet host went."""

    waited_s: float
    quiet: bool  # False: the timeout came first
    engine_pids: int  # how many engine processes were watched


def engine_pids(names: Iterable[str], proc: str = "/proc") -> list[int]:
    """The pids of running processes whose command name is one of ``names``."""
    wanted = set(names)
    found: list[int] = []
    if not wanted:
        return found
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            comm = Path(entry.path, "comm").read_text().strip()
        except OSError:
            continue
        if comm in wanted:
            found.append(int(entry.name))
    return found


def cpu_seconds(pids: Iterable[int], proc: str = "/proc") -> dict[int, float]:
    """CPU seconds of each of these processes, every thread's, to the nanosecond.

    Read from each task's ``schedstat`` (run time in ns); /proc/PID/stat's utime and
    stime count 10 ms ticks, too coarse for a window of tens of milliseconds. A process
    that is gone is left out.
    """
    found: dict[int, float] = {}
    for pid in pids:
        try:
            tasks = os.scandir(Path(proc, str(pid), "task"))
        except OSError:
            continue
        total_ns = 0
        with tasks:
            for task in tasks:
                try:
                    total_ns += int(Path(task.path, "schedstat").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
        found[pid] = total_ns / 1e9
    return found


def wait_for_quiet(
    names: Iterable[str],
    *,
    window_s: float = WINDOW_S,
    max_core_fraction: float = QUIET_CORE_FRACTION,
    timeout_s: float = TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    cpu: Callable[[list[int]], dict[int, float]] = cpu_seconds,
    scan: Callable[[Iterable[str]], list[int]] = engine_pids,
) -> Quiet:
    """Wait until the named engines used under ``max_core_fraction`` of a core over a window.

    Returns at once when there is nothing to watch; otherwise after one quiet window at
    the least, or at the timeout (then ``quiet`` is False). The engines are looked for
    again every window, and each process is compared with itself: one that exits (a
    container's conmon) or starts during a window neither hides nor adds work.
    """
    wanted = sorted(set(names))
    started = clock()
    before = cpu(scan(wanted))
    if not before:
        return Quiet(0.0, True, 0)
    while True:
        sleep(window_s)
        after = cpu(scan(wanted))
        used = sum(after[pid] - before[pid] for pid in after.keys() & before.keys())
        if used <= max_core_fraction * window_s:
            return Quiet(clock() - started, True, len(after))
        if clock() - started >= timeout_s:
            return Quiet(clock() - started, False, len(after))
        before = after
