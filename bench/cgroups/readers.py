"""Read an instance's cgroup files on v1 and v2 hosts: pure parsers over file text.

Which cgroup an instance is in is read from ``/proc/<pid>/cgroup`` of one of its
processes (docker's container init, libvirt's qemu, the probe), so bench never guesses
a driver's naming scheme. Values must be read while the instance lives: its cgroup
vanishes when it exits.
"""

from __future__ import annotations

from pathlib import Path

from bench.cgroups.layout import CgroupLayout


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map controller -> cgroup path from /proc/PID/cgroup text; v2's entry is ``unified``.

    v1 lines look like ``4:memory:/docker/<id>``; co-mounted controllers share a line
    (``2:cpu,cpuacct:/x``); the v2 line is ``0::/path``.
    """
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths["unified"] = path
            continue
        for controller in controllers.split(","):
            if not controller.startswith("name="):
                paths[controller] = path
    return paths


def cgroup_dir_for_pid(
    pid: int, controller: str, layout: CgroupLayout, proc_root: str = "/proc"
) -> Path | None:
    """The directory of ``controller``'s cgroup that ``pid`` is in, or None if unknown."""
    try:
        text = Path(proc_root, str(pid), "cgroup").read_text()
    except OSError:
        return None
    paths = parse_proc_cgroup(text)
    if layout.version == 1:
        mount = layout.v1_controller_dir(controller)
        relative = paths.get(controller)
    else:
        mount = layout.v2_mount
        relative = paths.get("unified")
    if mount is None or relative is None:
        return None
    if relative.strip("/") == "":
        # the hierarchy's root is the whole host, never one instance's cgroup: a pid that
        # shows it has exited (or was never placed); reading it would report host totals
        return None
    return Path(mount) / relative.lstrip("/")


def parse_int_file(text: str) -> int | None:
    """An integer cgroup file (``memory.usage_in_bytes``, ``memory.current``); ``max`` -> None."""
    value = text.strip()
    if value in {"", "max"}:
        return None
    return int(value)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events, memory.oom_control)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return values


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_memory_usage(directory: Path, layout: CgroupLayout) -> dict[str, int | None]:
    """Current and peak memory usage of a cgroup in bytes (v1 usage/max_usage, v2 current/peak).

    Keys: ``usage_bytes``, ``peak_bytes`` (None where the kernel has no such file, e.g. v2
    before 5.19 has no memory.peak), ``cache_bytes`` (page cache charged to the group) and
    ``anon_bytes`` (anonymous memory: what reclaim cannot give back without swap).
    """
    if layout.version == 1:
        usage = _read(directory / "memory.usage_in_bytes")
        peak = _read(directory / "memory.max_usage_in_bytes")
        stat = parse_flat_keyed(_read(directory / "memory.stat") or "")
        cache = stat.get("total_cache", stat.get("cache"))
        anon = stat.get("total_rss", stat.get("rss"))
    else:
        usage = _read(directory / "memory.current")
        peak = _read(directory / "memory.peak")
        stat = parse_flat_keyed(_read(directory / "memory.stat") or "")
        cache = stat.get("file")
        anon = stat.get("anon")
    return {
        "usage_bytes": parse_int_file(usage) if usage is not None else None,
        "peak_bytes": parse_int_file(peak) if peak is not None else None,
        "cache_bytes": cache,
        "anon_bytes": anon,
    }


def instance_cgroup_dirs(
    pid: int, layout: CgroupLayout, proc_root: str = "/proc"
) -> dict[str, Path]:
    """The cgroup dirs of ``pid`` for memory, cpu, cpuacct and pids (v2: one dir for all)."""
    dirs: dict[str, Path] = {}
    for controller in ("memory", "cpu", "cpuacct", "pids"):
        directory = cgroup_dir_for_pid(pid, controller, layout, proc_root)
        if directory is not None:
            dirs[controller] = directory
    return dirs


def read_cpu_usage(dirs: dict[str, Path], layout: CgroupLayout) -> dict[str, int | None]:
    """CPU time used (ns) and CFS throttling counters of a cgroup.

    v1: cpuacct.usage (ns) and cpu.stat (nr_periods, nr_throttled, throttled_time ns);
    v2: cpu.stat (usage_usec, nr_periods, nr_throttled, throttled_usec).
    """
    if layout.version == 1:
        usage_text = _read(dirs["cpuacct"] / "cpuacct.usage") if "cpuacct" in dirs else None
        stat = parse_flat_keyed(_read(dirs["cpu"] / "cpu.stat") or "") if "cpu" in dirs else {}
        return {
            "usage_ns": parse_int_file(usage_text) if usage_text else None,
            "nr_periods": stat.get("nr_periods"),
            "nr_throttled": stat.get("nr_throttled"),
            "throttled_ns": stat.get("throttled_time"),
        }
    stat = parse_flat_keyed(_read(dirs["cpu"] / "cpu.stat") or "") if "cpu" in dirs else {}
    usage_usec = stat.get("usage_usec")
    throttled_usec = stat.get("throttled_usec")
    return {
        "usage_ns": usage_usec * 1000 if usage_usec is not None else None,
        "nr_periods": stat.get("nr_periods"),
        "nr_throttled": stat.get("nr_throttled"),
        "throttled_ns": throttled_usec * 1000 if throttled_usec is not None else None,
    }


def read_memory_events(directory: Path, layout: CgroupLayout) -> dict[str, int | None]:
    """OOM evidence: v1 memory.oom_control oom_kill + memory.failcnt; v2 memory.events."""
    if layout.version == 1:
        control = parse_flat_keyed(_read(directory / "memory.oom_control") or "")
        failcnt = _read(directory / "memory.failcnt")
        return {
            "oom_kill": control.get("oom_kill"),
            "under_oom": control.get("under_oom"),
            "failcnt": parse_int_file(failcnt) if failcnt else None,
        }
    events = parse_flat_keyed(_read(directory / "memory.events") or "")
    return {"oom_kill": events.get("oom_kill"), "oom": events.get("oom"), "max": events.get("max")}


def read_pids(directory: Path) -> dict[str, int | None]:
    """pids.current and the ``max`` counter of pids.events (forks refused at the limit)."""
    current = _read(directory / "pids.current")
    events = parse_flat_keyed(_read(directory / "pids.events") or "")
    limit = _read(directory / "pids.max")
    return {
        "current": parse_int_file(current) if current else None,
        "max_events": events.get("max"),
        "limit": parse_int_file(limit) if limit else None,
    }
