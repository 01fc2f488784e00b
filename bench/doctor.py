"""Host checks for ``bench doctor``: each says ok/warn/fail, what it saw, and how to fix it."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import host as host_facts
from bench.cgroups import layout as cgroup_layout
from bench.errors import BenchError

GIB = 1024**3


@dataclass(frozen=True)
class Check:
    """The outcome of one host check."""

    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""


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
    """Detect the cgroup layout and prove bench can create a cgroup in it."""
    try:
        layout = cgroup_layout.detect()
    except (OSError, cgroup_layout.CgroupLayoutError) as exc:
        return Check("cgroups", "fail", str(exc), "mount cgroup v1 controllers or cgroup2")
    probe_dir = (
        Path(layout.v1_mounts["memory"])
        if layout.version == 1 and "memory" in layout.v1_mounts
        else Path(layout.v2_mount or "/sys/fs/cgroup")
    ) / "bench-doctor-probe"
    try:
        probe_dir.mkdir()
        probe_dir.rmdir()
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
    return Check("cgroups", "ok", detail)


def check_docker() -> Check:
    """The Docker engine answers /_ping; report its version."""
    from bench.backends import get_backend

    try:
        backend = get_backend("docker")
        backend.check_available()
        versions = backend.versions()
        backend.close()
    except BenchError as exc:
        fix = getattr(exc, "fix", "")
        return Check("docker", "fail", str(exc), fix)
    return Check(
        "docker",
        "ok",
        f"engine {versions.get('docker_engine')}, containerd {versions.get('containerd')}, "
        f"runc {versions.get('runc')}, storage {versions.get('storage_driver')}, "
        f"cgroup driver {versions.get('cgroup_driver')}",
    )


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


def check_libvirt() -> Check:
    """Libvirtd answers on qemu:///system; report libvirt and QEMU versions."""
    from bench.backends import get_backend

    try:
        backend = get_backend("libvirt")
        backend.check_available()
        conn = backend.conn  # type: ignore[attr-defined]
        detail = f"libvirt {_packed(conn.getLibVersion())}, QEMU {_packed(conn.getVersion())}"
        backend.close()
    except BenchError as exc:
        return Check("libvirt", "fail", str(exc), getattr(exc, "fix", ""))
    return Check("libvirt", "ok", detail)


def _packed(number: int) -> str:
    return f"{number // 1_000_000}.{(number // 1000) % 1000}.{number % 1000}"


def check_guest_artifacts() -> Check:
    """The guest kernel and initramfs build (or are cached)."""
    from bench.artifacts.guest import guest_artifacts

    try:
        artifacts = guest_artifacts()
    except BenchError as exc:
        return Check("guest artefacts", "fail", str(exc), "run ansible/up.sh")
    kernel = artifacts.kernel
    return Check(
        "guest artefacts",
        "ok",
        f"kernel {kernel.package} {kernel.version} ({kernel.path.name}), "
        f"initramfs {artifacts.initramfs.sha256[:12]}",
    )


def check_kvm() -> Check:
    """Decide KVM by a real guest boot; /dev/kvm existing is never taken as evidence."""
    if not os.path.exists("/dev/kvm"):
        return Check(
            "kvm",
            "warn",
            "/dev/kvm absent: VMs run under TCG (software emulation)",
            "enable virtualization extensions or nested KVM if VMs are to be measured",
        )
    from bench.backends import get_backend

    try:
        backend = get_backend("libvirt")
        backend.check_available()
        decision = backend.accel_decision("auto")  # type: ignore[attr-defined]
        backend.close()
    except BenchError as exc:
        return Check(
            "kvm",
            "warn",
            f"/dev/kvm present, but no guest boot could test it: {exc}",
            "fix the libvirt check first",
        )
    if decision.accel == "kvm":
        return Check("kvm", "ok", f"KVM boots guests: {decision.reason}")
    return Check(
        "kvm",
        "warn",
        f"/dev/kvm present but unusable: {decision.reason}; VMs run under TCG (software emulation)",
        "on a lab host, enable working (nested) KVM; figures here are TCG figures",
    )


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


ALL_CHECKS: tuple[Callable[[], Check], ...] = (
    check_python,
    check_root,
    check_cgroups,
    check_docker,
    check_build_tools,
    check_libvirt,
    check_guest_artifacts,
    check_kvm,
    check_disk,
    check_memory,
    check_load,
)


def run_checks() -> list[Check]:
    """Run every check; a check that crashes is reported as failed, not raised."""
    results = []
    for check in ALL_CHECKS:
        try:
            results.append(check())
        except Exception as exc:
            name = (check.__doc__ or check.__name__).split(":")[0]
            results.append(
                Check(check.__name__.removeprefix("check_"), "fail", f"check crashed: {exc}")
            )
            del name
    return results
