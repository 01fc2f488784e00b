"""Per-instance cgroups that bench itself creates (the process backend's own cgroup).

Every cgroup bench makes lives under a ``bench`` parent so ``bench clean`` can find it:
``/sys/fs/cgroup/<controller>/bench/<name>`` on v1, ``/sys/fs/cgroup/bench/<name>`` on a
v2 host nobody else manages, and ``<delegated scope>/bench/<name>`` on a v2 host run by
systemd, which owns the root (``bench.cgroups.delegation``: bench never creates cgroups
at that root nor writes its ``cgroup.subtree_control`` there).
A backend other than the process baseline tags its cgroups with an owner suffix
(``<name>.<owner>``, e.g. ``bench-a1b2c3-4.qemu-microvm``), so each backend finds, lists
and sweeps only its own; instance names never contain a dot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.cgroups import delegation
from bench.cgroups.layout import CgroupLayout

# the parent of bench's instance cgroups, and the v2 controllers it enables: one
# definition, shared with the delegated subtree of a systemd host
BENCH_PARENT = delegation.INSTANCES_PARENT
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V2_CONTROLLERS = delegation.DELEGATED_CONTROLLERS
CFS_PERIOD_US = 100_000


@dataclass
class InstanceCgroup:
    """The cgroup directories of one instance: controller -> directory (v2: key 'unified')."""

    name: str
    layout: CgroupLayout
    dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, layout: CgroupLayout, name: str, owner: str | None = None) -> InstanceCgroup:
        """Create the instance's cgroup in every resource hierarchy bench uses.

        ``owner`` (a backend name) becomes the directory's suffix, see the module docstring.
        """
        if owner is not None:
            name = f"{name}.{owner}"
        group = cls(name, layout)
        try:
            if layout.version == 1:
                for controller in V1_CONTROLLERS:
                    mount = layout.v1_controller_dir(controller)
                    if mount is None:
                        continue
                    directory = Path(mount) / BENCH_PARENT / name
                    _mkdir_child(directory)
                    group.dirs[controller] = directory
            else:
                directory = v2_instance_parent(layout) / name
                _mkdir_child_v2(layout, directory)
                group.dirs["unified"] = directory
        except BaseException:
            group.remove()
            raise
        return group

    def procs_files(self) -> list[Path]:
        """Return the cgroup.procs files a process writes to join this cgroup."""
        return [d / "cgroup.procs" for d in dict.fromkeys(self.dirs.values())]

    def join_self(self) -> None:
        """Move the calling process into this cgroup (used between fork and exec)."""
        for procs in self.procs_files():
            with open(procs, "w") as handle:
                handle.write("0")

    def set_memory_limit(self, limit_bytes: int) -> None:
        """Set a hard memory limit (v1 memory.limit_in_bytes, v2 memory.max)."""
        if self.layout.version == 1:
            (self.dirs["memory"] / "memory.limit_in_bytes").write_text(str(limit_bytes))
        else:
            (self.dirs["unified"] / "memory.max").write_text(str(limit_bytes))

    def set_cpu_quota(self, cores: float, period_us: int = CFS_PERIOD_US) -> None:
        """Set a CFS quota of ``cores`` CPUs (v1 cpu.cfs_quota_us, v2 cpu.max)."""
        quota_us = max(1000, round(cores * period_us))
        if self.layout.version == 1:
            (self.dirs["cpu"] / "cpu.cfs_period_us").write_text(str(period_us))
            (self.dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(quota_us))
        else:
            (self.dirs["unified"] / "cpu.max").write_text(f"{quota_us} {period_us}")

    def set_pids_limit(self, limit: int) -> None:
        """Set the maximum number of tasks (pids.max on both layouts)."""
        directory = self.dirs["pids"] if self.layout.version == 1 else self.dirs["unified"]
        (directory / "pids.max").write_text(str(limit))

    def pids(self) -> set[int]:
        """Return the pids currently in the cgroup (empty once it is gone)."""
        found: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in procs.read_text().split())
        return found

    def remove(self, timeout_s: float = 5.0) -> None:
        """Kill whatever is left inside, remove the directories, and bench's parent if empty."""
        directories = list(self.dirs.values())
        remove_cgroup_dirs(directories, timeout_s)
        self.dirs.clear()
        remove_empty_parents({d.parent for d in directories})


def _mkdir_child(directory: Path) -> None:
    """Create an instance cgroup, and bench's parent if needed.

    Another instance's removal may rmdir the parent in between (it removes it once empty):
    then create it again.
    """
    for _attempt in range(5):
        directory.parent.mkdir(exist_ok=True)
        try:
            directory.mkdir(exist_ok=False)
            return
        except FileNotFoundError:
            continue
    directory.mkdir(parents=True, exist_ok=False)


def remove_empty_parents(parents: set[Path]) -> None:
    """Remove bench's parent cgroups that hold no instance any more (busy ones stay)."""
    for parent in parents:
        if parent.name != BENCH_PARENT:
            continue
        with contextlib.suppress(OSError):
            parent.rmdir()


def v2_instance_parent(layout: CgroupLayout) -> Path:
    """Where instance cgroups go on a v2 host (a delegated subtree under systemd)."""
    if delegation.needs_delegation(layout):
        return delegation.delegated_subtree(layout).instances_parent
    assert layout.v2_mount is not None
    return Path(layout.v2_mount) / BENCH_PARENT


def _mkdir_child_v2(layout: CgroupLayout, directory: Path) -> None:
    """Create a v2 instance cgroup, and bench's parent with the controllers enabled.

    As on v1, another instance's removal may rmdir the parent in between: then again.
    """
    wanted = " ".join(f"+{c}" for c in V2_CONTROLLERS)
    parent = directory.parent
    for attempt in range(5):
        if not parent.is_dir():
            if not delegation.needs_delegation(layout):
                # bench's own hierarchy (no systemd): the root hands the controllers down
                assert layout.v2_mount is not None
                with contextlib.suppress(OSError):
                    (Path(layout.v2_mount) / "cgroup.subtree_control").write_text(wanted)
            parent.mkdir(exist_ok=True)
        try:
            (parent / "cgroup.subtree_control").write_text(wanted)
            directory.mkdir(exist_ok=False)
            return
        except FileNotFoundError:
            if attempt == 4:
                raise


def remove_cgroup_dirs(directories: list[Path], timeout_s: float = 5.0) -> None:
    """SIGKILL every process in the given cgroup dirs, then rmdir them once empty."""
    deadline = time.monotonic() + timeout_s
    for directory in dict.fromkeys(directories):
        if not directory.exists():
            continue
        while True:
            try:
                pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                # EBUSY while killed tasks are still exiting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


def _bench_parents(layout: CgroupLayout) -> list[Path]:
    parents: list[Path] = []
    if layout.version == 1:
        for controller in V1_CONTROLLERS:
            mount = layout.v1_controller_dir(controller)
            if mount:
                parents.append(Path(mount) / BENCH_PARENT)
    elif layout.v2_mount:
        parents.append(Path(layout.v2_mount) / BENCH_PARENT)
        parents.extend(delegation.registered_parents(layout))
    return list(dict.fromkeys(parents))


def cgroup_owner(directory_name: str) -> str | None:
    """The backend that owns an instance cgroup directory (None: the process baseline)."""
    return directory_name.split(".", 1)[1] if "." in directory_name else None


def bench_cgroup_dirs(layout: CgroupLayout, owner: str | None = None) -> list[Path]:
    """List the instance cgroups of one owner under bench's parent, in every hierarchy."""
    found: list[Path] = []
    for parent in _bench_parents(layout):
        if parent.is_dir():
            found.extend(
                sorted(p for p in parent.iterdir() if p.is_dir() and cgroup_owner(p.name) == owner)
            )
    return found


def sweep_bench_cgroups(layout: CgroupLayout, owner: str | None = None) -> list[str]:
    """Remove one owner's leftover instance cgroups; return their names."""
    directories = bench_cgroup_dirs(layout, owner)
    remove_cgroup_dirs(directories)
    remove_empty_parents(set(_bench_parents(layout)))
    return sorted({d.name for d in directories})
