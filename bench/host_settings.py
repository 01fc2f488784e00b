"""Host knobs a run may set (KSM, THP, CPU idle latency, cgroup moves), always given back.

``changed_settings`` writes sysfs values and restores the previous ones on every exit
path, interrupts included. While they are changed, what to restore is also written to
``/run/bench/host-settings/<owner>.json``, so that after a run killed with SIGKILL
``bench clean`` can give the host its settings back (``restore_abandoned``).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SAVED_DIR = Path("/run/bench/host-settings")
KSM_DIR = Path("/sys/kernel/mm/ksm")
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def read_setting(path: Path) -> str | None:
    """A sysfs value as written back (THP's ``always [madvise] never`` -> ``madvise``)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if "[" in text and "]" in text:
        return text[text.index("[") + 1 : text.index("]")]
    return text


def _write(path: Path, value: str) -> None:
    path.write_text(value)


@contextlib.contextmanager
def changed_settings(
    wanted: Mapping[Path, str], owner: str, saved_dir: Path = SAVED_DIR
) -> Iterator[dict[str, str | None]]:
    """Set sysfs files for the duration; yield what they were; restore them afterwards."""
    previous: dict[str, str | None] = {str(path): read_setting(path) for path in wanted}
    record = saved_dir / f"{owner}.json"
    changed = {k: v for k, v in previous.items() if v is not None and v != wanted[Path(k)]}
    if changed:
        saved_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"pid": os.getpid(), "restore": changed}))
    try:
        for path, value in wanted.items():
            if previous[str(path)] is not None and previous[str(path)] != value:
                _write(path, value)
        yield previous
    finally:
        for name, value in changed.items():
            with contextlib.suppress(OSError):
                _write(Path(name), str(value))
        with contextlib.suppress(OSError):
            record.unlink()


def restore_abandoned(saved_dir: Path = SAVED_DIR, favor_dir: Path | None = None) -> list[str]:
    """Give back settings a killed run changed (its process is gone); return what was done.

    That is the sysfs values it had written, and the favordynmods hierarchy it had
    mounted (``cgroup_fast_moves``).
    """
    done: list[str] = []
    favor_dir = FAVOR_DYNMODS_DIR if favor_dir is None else favor_dir
    if favor_dir.is_dir():
        for mountpoint in sorted(favor_dir.iterdir()):
            if mountpoint.name.isdigit() and Path(f"/proc/{mountpoint.name}").exists():
                continue
            if _unmount(mountpoint):
                done.append(f"unmounted {mountpoint}")
    if not saved_dir.is_dir():
        return done
    for record in sorted(saved_dir.glob("*.json")):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        pid = int(data.get("pid", 0))
        if pid and Path(f"/proc/{pid}").exists():
            continue
        for name, value in (data.get("restore") or {}).items():
            with contextlib.suppress(OSError):
                _write(Path(name), str(value))
                done.append(f"{name}={value}")
        with contextlib.suppress(OSError):
            record.unlink()
    return done


def ksm_counters(ksm_dir: Path = KSM_DIR) -> dict[str, int]:
    """KSM's counters now: pages_shared, pages_sharing, full_scans (absent ones left out)."""
    counters: dict[str, int] = {}
    for name in ("pages_shared", "pages_sharing", "full_scans", "pages_unshared"):
        with contextlib.suppress(OSError, ValueError):
            counters[name] = int((ksm_dir / name).read_text())
    return counters


CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")


@contextlib.contextmanager
def low_latency(enabled: bool, path: Path = CPU_DMA_LATENCY) -> Iterator[dict[str, Any]]:
    """Keep the CPUs out of deep idle states while the block runs (``bench run --tune``).

    The idea of pyperf's ``system tune``: a PM QoS request of 0 us written to
    ``/dev/cpu_dma_latency`` holds for as long as the file stays open, so a process
    started after a pause does not first wait for an idle CPU to wake (on the dev
    machines it changed nothing measurable: a fork and exec after a 300 ms pause took
    1.23 ms with it and 1.26 ms without). The kernel drops the
    request when the file is closed, also when bench is killed: nothing to restore.
    Yields what was done, for run.json.
    """
    if not enabled:
        yield {"tune": False}
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        yield {"tune": False, "reason": f"cannot open {path}: {exc.strerror}"}
        return
    try:
        os.write(fd, struct.pack("i", 0))
        yield {"tune": True, "cpu_dma_latency_us": 0, "held_through": str(path)}
    finally:
        os.close(fd)


FAVOR_DYNMODS_DIR = Path("/run/bench/favordynmods")
FAVOR_DYNMODS_NAME = "bench-favordynmods"


def _unmount(mountpoint: Path) -> bool:
    """Unmount (when mounted) and remove a favordynmods mountpoint; True when it is gone."""
    subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
    try:
        mountpoint.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


@contextlib.contextmanager
def cgroup_fast_moves(enabled: bool, base: Path = FAVOR_DYNMODS_DIR) -> Iterator[dict[str, Any]]:
    """Make a move into a cgroup cost the same after a pause as back to back (``--tune``).

    Every move of a process into a cgroup (the process backend's helper writing
    ``cgroup.procs``, runc doing the same) takes the kernel's global
    ``cgroup_threadgroup_rwsem`` for writing. That per-CPU rwsem returns to its
    reader-friendly mode one RCU grace period after the last writer, and the next writer
    then waits a whole grace period: on the dev machines a move took 13-16 ms after a
    pause of 50 ms or more and 0.03-0.2 ms back to back (``tests/perf/cgroup_attach.py``).
    So a start paid it only when nothing had moved a process just before: the native
    floor was faster after a container than after a pause. The kernel's ``favordynmods``
    flag keeps the rwsem writer-friendly (forks and exits take its slower shared path
    instead). A v1 hierarchy's flags cannot change on remount, so bench mounts an empty
    named v1 hierarchy with the flag (no controller, nothing ever moved into it) at
    ``/run/bench/favordynmods/<pid>`` for the run, and unmounts it after; the flag acts
    on the one global rwsem. A run killed with SIGKILL leaves the mount behind, and
    ``bench clean`` removes it. The unmount does not always give the mode back: on the
    dev machines' kernel (6.18) moves stayed cheap after pauses long after it, until
    reboot, so the record says so (``outlives_run``). Yields what was done, for run.json.
    """
    if not enabled:
        yield {}
        return
    mountpoint = base / str(os.getpid())
    try:
        mountpoint.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        yield {"cgroup_favordynmods": False, "reason": f"cannot create {mountpoint}: {exc}"}
        return
    options = f"none,name={FAVOR_DYNMODS_NAME},favordynmods"
    done = subprocess.run(
        ["mount", "-t", "cgroup", "-o", options, "cgroup", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _unmount(mountpoint)
        reason = done.stderr.strip() or f"mount exited {done.returncode}"
        yield {
            "cgroup_favordynmods": False,
            "reason": f"cannot mount a favordynmods hierarchy: {reason}",
        }
        return
    try:
        yield {
            "cgroup_favordynmods": True,
            "held_through": str(mountpoint),
            "outlives_run": "the kernel may keep moves cheap after the unmount, until reboot",
        }
    finally:
        _unmount(mountpoint)
