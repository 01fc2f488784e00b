"""Host checks for ``bench doctor``: each says ok/warn/fail, what it saw, and how to fix it.

The host's own checks live here (Python, root, cgroups, build tools, disk, memory, load);
every registered backend adds its own rows through ``Backend.doctor_checks`` (engine
reachable, versions, artefacts, runtimes, KVM), so a new backend needs no change here.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable

from bench import host as host_facts
from bench.backends.base import HostCheck
from bench.cgroups import layout as cgroup_layout

GIB = 1024**3
# The cgroup check makes (and removes) this one, tagged with owner "doctor".
DOCTOR_PROBE_CGROUP = "bench-doctor-probe"


Check = HostCheck


def check_python() -> Check:
    """Python >= 3.11."""
    version = ".".join(map(str, sys.version_info[:3]))
    return Check("python", "ok", version)
    return Check("python", "fail", version, "use Python 3.11 or newer")


def check_root() -> Check:
    """Bench creates cgroups and drops caches: it needs root."""
    if os.geteuid() == 0:
        return Check("root", "ok", "running as root")
    return Check("root", "fail", f"euid {os.geteuid()}", "run bench as root")


def check_cgroups() -> Check:
    """Detect the cgroup layout and prove bench can create a cgroup where it makes them.

    The probe cgroup is made exactly as an instance's is: under bench's parent in every
    hierarchy, which on a systemd v2 host is bench's delegated subtree (never the root).
    """
    from bench.cgroups.delegation import CgroupDelegationError, cached_subtree
    from bench.cgroups.instance import InstanceCgroup

    try:
        layout = cgroup_layout.detect()
    except (OSError, cgroup_layout.CgroupLayoutError) as exc:
        return Check("cgroups", "fail", str(exc), "mount cgroup v1 controllers or cgroup2")
    try:
        probe = InstanceCgroup.create(layout, DOCTOR_PROBE_CGROUP, owner="doctor")
        probe.remove()
    except CgroupDelegationError as exc:
        return Check(
            "cgroups",
            "fail",
            f"{layout.mode}: no delegated cgroup subtree ({exc})",
            "run bench as root on a systemd host, or under `systemd-run --scope -p Delegate=yes`",
        )
    except OSError as exc:
        return Check(
            "cgroups",
            "fail",
            f"{layout.mode}: cannot create a cgroup ({exc.strerror})",
            "run as root on a host with writable cgroups",
        )
    detail = f"v{layout.version} ({layout.mode})"
    if layout.version == 1:
        detail += f"; controllers: {', '.join(sorted(layout.v1_mounts))}"
    else:
        detail += f"; controllers: {', '.join(layout.v2_controllers)}"
        subtree = cached_subtree()
        if subtree is not None:
            detail += f"; instances under {subtree.describe()}"
    return Check("cgroups", "ok", detail)


def check_build_tools() -> Check:
    """Gcc (static probe) and busybox (container image) must exist to build artefacts."""
    missing = [tool for tool in ("gcc", "busybox") if shutil.which(tool) is None]
    if missing:
        return Check(
            "build tools",
            "fail",
            f"missing: {', '.join(missing)}",
            "run ansible/up.sh (installs gcc, libc6-dev, busybox-static)",
        )
    return Check("build tools", "ok", "gcc and busybox present")


def check_disk(path: str = ".") -> Check:
    """Free disk where results are written and where docker keeps images."""
    lows = []
    for target in (path, "/var/lib/docker" if os.path.exists("/var/lib/docker") else "/var/lib"):
        usage = shutil.disk_usage(target)
        if usage.free < 5 * GIB:
            lows.append(f"{target}: {usage.free / GIB:.1f} GiB free")
    if lows:
        return Check("disk", "warn", "; ".join(lows), "free at least 5 GiB")
    return Check(
        "disk",
        "ok",
        f"{shutil.disk_usage(path).free / GIB:.0f} GiB free at {os.path.abspath(path)}",
    )


def check_memory() -> Check:
    """MemAvailable; density runs need headroom, and the host must never OOM."""
    snapshot = host_facts.load_snapshot()
    available = snapshot.get("mem_available_bytes")
    if available is None:
        return Check("memory", "warn", "cannot read MemAvailable", "")
    status = "ok" if available >= 4 * GIB else "warn"
    return Check(
        "memory",
        status,
        f"{available / GIB:.1f} GiB available",
        "" if status == "ok" else "stop other work before measuring",
    )


def check_load() -> Check:
    """A busy host makes every number noisy: warn when the 1-minute load exceeds the cores."""
    snapshot = host_facts.load_snapshot()
    load = (snapshot.get("loadavg") or {}).get("1m")
    cores = os.cpu_count() or 1
    if load is None:
        return Check("load", "warn", "cannot read /proc/loadavg")
    if load > cores:
        return Check(
            "load",
            "warn",
            f"1-minute load {load:.2f} on {cores} cores",
            "wait for other work to finish; results will be noisy",
        )
    return Check("load", "ok", f"1-minute load {load:.2f} on {cores} cores")


HOST_CHECKS: tuple[Callable[[], Check], ...] = (
    check_python,
    check_root,
    check_cgroups,
    check_build_tools,
    check_disk,
    check_memory,
    check_load,
)


def backend_checks(names: list[str] | None = None) -> list[Check]:
    """Every registered backend's own rows (a backend that cannot load says why)."""
    from bench.backends import backend_names, get_backend
    from bench.errors import BenchError

    results: list[Check] = []
    for name in names or backend_names():
        try:
            results.extend(get_backend(name).doctor_checks())
        except BenchError as exc:
            results.append(Check(name, "fail", str(exc), getattr(exc, "fix", "")))
        except Exception as exc:
            results.append(Check(name, "fail", f"check crashed: {type(exc).__name__}: {exc}"))
    return results


def run_checks(backends: list[str] | None = None) -> list[Check]:
    """Run the host checks, then every backend's; a check that crashes is a failed row."""
    results = []
    for check in HOST_CHECKS:
        try:
            results.append(check())
        except Exception as exc:
            results.append(
                Check(check.__name__.removeprefix("check_"), "fail", f"check crashed: {exc}")
            )
    return results + backend_checks(backends)


def forget_accel_decisions() -> int:
    """Delete the cached KVM decisions (``~/.cache/bench/accel-probe``); return how many.

    The next run or ``bench doctor`` boots a KVM guest again to decide KVM or TCG.
    """
    from bench.artifacts.probe import cache_dir

    count = 0
    directory = cache_dir() / "accel-probe"
    if directory.is_dir():
        for path in directory.glob("*.json"):
            path.unlink(missing_ok=True)
            count += 1
    return count
