"""Stopping the lab hosts bench started (``bench clean``), also those whose state was lost.

A lab host is found by its state directory (``/run/bench/labhosts/<name>/``) or, when
that was lost, by its QEMU's ``-name bench-labhost-<name>``; it is stopped by its pid.
Lab hosts the user keeps (``bench labhost up``) or a live process owns are spared unless
``everything`` (``bench clean --all``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import psutil

from bench.fleet.labhost import (
    QEMU_NAME_PREFIX,
    STATE_ROOT,
    _qemu_alive,
    _terminate,
    read_state,
    running_labhosts,
    stop,
)


def stray_qemus() -> list[tuple[int, str]]:
    """QEMU processes of lab hosts (by their ``-name``) that no state directory accounts for."""
    known = {h.pid for h in running_labhosts()}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if not cmdline or "qemu-system" not in os.path.basename(cmdline[0]):
            continue
        for index, arg in enumerate(cmdline[:-1]):
            named = arg == "-name" and cmdline[index + 1].startswith(QEMU_NAME_PREFIX)
            if named and process.info["pid"] not in known:
                found.append((int(process.info["pid"]), cmdline[index + 1]))
    return found


def _alive_check(pid: int, create_time: float, name: str) -> Callable[[], bool]:
    return lambda: _qemu_alive(pid, create_time, name)


def leftovers(everything: bool = True) -> list[str]:
    """Names of lab hosts bench started that run now (with a state dir or stray).

    Without ``everything``, those held by the user or a live owner are left out.
    """
    names = [
        f"{QEMU_NAME_PREFIX}{h.name}" for h in running_labhosts() if everything or not h.held()
    ]
    names.extend(name for _pid, name in stray_qemus())
    return sorted(set(names))


def held_labhosts() -> list[str]:
    """Names of running lab hosts that the user or a live owner holds."""
    return sorted(f"{QEMU_NAME_PREFIX}{h.name}" for h in running_labhosts() if h.held())


def remove_all(everything: bool = True) -> list[str]:
    """Stop the lab hosts bench started (``bench clean``); return what was stopped.

    Without ``everything``, lab hosts the user keeps or a live process owns are spared.
    State directories of lab hosts that no longer run are removed.
    """
    stopped = []
    if STATE_ROOT.is_dir():
        for directory in sorted(STATE_ROOT.iterdir()):
            host = read_state(directory.name)
            if host is None:
                shutil.rmtree(directory, ignore_errors=True)
                continue
            if host.alive() and not everything and host.held():
                continue
            if stop(host):
                stopped.append(f"{QEMU_NAME_PREFIX}{host.name}")
    for pid, name in stray_qemus():
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.Error:
            continue
        short = name.removeprefix(QEMU_NAME_PREFIX)
        _terminate(pid, _alive_check(pid, create_time, short))
        stopped.append(name)
    return sorted(stopped)
