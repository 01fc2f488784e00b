"""Host noise, watched during every block: how busy the host was with other work.

A comparison is only as good as the quiet it was measured in. At the start and end of
each block the runner snapshots cumulative counters and records, per block:

- ``loadavg_1m``: the 1-minute load average at the block's end (load);
- ``host_busy_cores``: all non-idle CPU time over the block's wall time (/proc/stat), the
  harness's own work included (cores);
- ``foreign_cpu_cores``: CPU time of user processes that are neither bench's (the
  harness and its descendants) nor its engines' (dockerd, containerd and shims, runc,
  libvirtd, virtlogd, qemu, runsc, podman, conmon), from /proc/PID/stat deltas, over wall
  time (cores). A process that started and ended inside the block is missed; one that
  started inside it counts in full;
- ``steal_fraction``: CPU time the hypervisor gave to someone else, over all CPU time;
- ``psi_cpu_some``, ``psi_memory_some``, ``psi_io_some``: the fraction of wall time in
  which some task stalled on the resource (/proc/pressure, where the kernel has PSI).

Cumulative counters, not a sampling thread: watching costs nothing while measuring.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

# Host processes that work for bench's instances: their CPU time is not background noise.
ENGINE_PROCESS_PREFIXES = (
    "dockerd",
    "containerd",
    "docker-proxy",
    "runc",
    "runsc",
    "exe",  # runsc re-executes itself as "exe"
    "libvirtd",
    "virtlogd",
    "qemu-system",
    "podman",
    "conmon",
    "crun",
    "tini",
    "probe",
)
PSI_RESOURCES = ("cpu", "memory", "io")


@dataclass(frozen=True)
class ProcessTimes:
    """CPU ticks (user + system) of one process, and what it is."""

    ticks: int
    comm: str
    ppid: int
    kernel_thread: bool


@dataclass
class NoiseSnapshot:
    """Cumulative counters at one moment."""

    monotonic_s: float
    cpu_ticks: dict[str, int] = field(default_factory=dict)
    psi_total_us: dict[str, int] = field(default_factory=dict)
    processes: dict[int, ProcessTimes] = field(default_factory=dict)
    loadavg_1m: float | None = None


def parse_proc_stat_cpu(text: str) -> dict[str, int]:
    """The aggregate ``cpu`` line of /proc/stat as named tick counters."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            return dict(zip(names, values, strict=False))
    return {}


def parse_psi_some_total(text: str) -> int | None:
    """The ``some ... total=N`` microseconds of a /proc/pressure file."""
    for line in text.splitlines():
        if line.startswith("some "):
            for part in line.split():
                if part.startswith("total="):
                    return int(part.removeprefix("total="))
    return None


def psi_some_total_us(resource: str, proc: str = "/proc") -> int | None:
    """Cumulative microseconds some task stalled on ``resource`` (PSI); None without PSI."""
    try:
        return parse_psi_some_total(Path(proc, "pressure", resource).read_text())
    except (OSError, ValueError):
        return None


def parse_pid_stat(text: str) -> ProcessTimes | None:
    """Utime + stime, comm, ppid and whether it is a kernel thread, from /proc/PID/stat."""
    try:
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        flags = int(fields[6])
        return ProcessTimes(
            ticks=int(fields[11]) + int(fields[12]),
            comm=comm,
            ppid=int(fields[1]),
            kernel_thread=bool(flags & 0x00200000),  # PF_KTHREAD
        )
    except (ValueError, IndexError):
        return None


def take_snapshot(proc: str = "/proc") -> NoiseSnapshot:
    """Read every counter now (sources that are absent are left out)."""
    snapshot = NoiseSnapshot(monotonic_s=time.monotonic())
    with contextlib.suppress(OSError):
        snapshot.cpu_ticks = parse_proc_stat_cpu(Path(proc, "stat").read_text())
    for resource in PSI_RESOURCES:
        total = psi_some_total_us(resource, proc)
        if total is not None:
            snapshot.psi_total_us[resource] = total
    with contextlib.suppress(OSError, ValueError, IndexError):
        snapshot.loadavg_1m = float(Path(proc, "loadavg").read_text().split()[0])
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            times = parse_pid_stat(Path(entry.path, "stat").read_text())
            if times is not None:
                snapshot.processes[int(entry.name)] = times
    return snapshot


def _bench_pids(processes: dict[int, ProcessTimes], harness_pid: int) -> set[int]:
    """The harness, its descendants, and every engine process (and their descendants)."""
    roots = {harness_pid} | {
        pid for pid, times in processes.items() if times.comm.startswith(ENGINE_PROCESS_PREFIXES)
    }
    children: dict[int, list[int]] = {}
    for pid, times in processes.items():
        children.setdefault(times.ppid, []).append(pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, []))
    return found


def block_noise(
    start: NoiseSnapshot, end: NoiseSnapshot, harness_pid: int | None = None
) -> dict[str, tuple[float, str]]:
    """The block's noise figures: view -> (value, unit). Pure arithmetic on two snapshots."""
    wall_s = end.monotonic_s - start.monotonic_s
    if wall_s <= 0:
        return {}
    hz = os.sysconf("SC_CLK_TCK")
    figures: dict[str, tuple[float, str]] = {}
    if end.loadavg_1m is not None:
        figures["loadavg_1m"] = (end.loadavg_1m, "load")
    if start.cpu_ticks and end.cpu_ticks:
        delta = {k: end.cpu_ticks.get(k, 0) - start.cpu_ticks.get(k, 0) for k in end.cpu_ticks}
        total = sum(delta.values())
        busy = total - delta.get("idle", 0) - delta.get("iowait", 0)
        figures["host_busy_cores"] = (busy / hz / wall_s, "cores")
        if total > 0:
            figures["steal_fraction"] = (delta.get("steal", 0) / total, "fraction")
    for resource, total_us in end.psi_total_us.items():
        if resource in start.psi_total_us:
            stalled_s = (total_us - start.psi_total_us[resource]) / 1e6
            figures[f"psi_{resource}_some"] = (min(1.0, stalled_s / wall_s), "fraction")
    ours = _bench_pids(end.processes, harness_pid if harness_pid is not None else os.getpid())
    foreign_ticks = 0
    for pid, times in end.processes.items():
        if pid in ours or times.kernel_thread:
            continue
        before = start.processes.get(pid)
        same_process = before is not None and before.comm == times.comm
        foreign_ticks += times.ticks - (before.ticks if same_process and before else 0)
    figures["foreign_cpu_cores"] = (max(0, foreign_ticks) / hz / wall_s, "cores")
    return figures
