"""Host facts recorded once per run, and cheap snapshots taken at run start and end.

Modelled on pyperf's ``_collect_metadata.py``: one small function per /proc, /sys or
/etc source, each returning None when its source is absent or unreadable (never
raising), and pure parser functions over file *text* so captured files can be tested
without the host they came from. Every path is joined under ``root`` so tests can point
the collectors at a fake tree.

What is recorded, and why it matters for a VM-vs-container comparison, is listed under
the README's "Method" section. Versions of docker, containerd,
runc, libvirt and qemu are reported by their backends, not here.
"""

from __future__ import annotations

import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import __version__

# Flags reported from /proc/cpuinfo: hardware virtualisation (vmx: Intel VT-x, svm: AMD-V)
# and the flag a hypervisor sets to tell its guest it is virtualised.
CPU_FLAGS_OF_INTEREST = ("vmx", "svm", "hypervisor")

_KIB_BYTES = 1024
_GIT_TIMEOUT_S = 10.0
_OS_RELEASE_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_]+)=(?P<quote>[\"']?)(?P<value>.*)(?P=quote)$")
_OS_RELEASE_UNESCAPE = re.compile(r"\\([\\$\"'`])")
_BRACKETED_WORD = re.compile(r"\[([^\]\s]+)\]")
_CPU_DIR_NAME = re.compile(r"^cpu(\d+)$")


# --- pure parsers over file text ---------------------------------------------------------


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse /proc/meminfo text into ``{field: bytes}``.

    Only fields the kernel reports in kB are kept, converted to bytes. Unitless fields
    (``HugePages_Total`` and friends are page counts, not sizes) and malformed lines are
    left out, so every value in the result really is a byte count.
    """
    result: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or len(parts) != 2 or parts[1] != "kB":
            continue
        try:
            result[name.strip()] = int(parts[0]) * _KIB_BYTES
        except ValueError:
            continue
    return result


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    """Split /proc/cpuinfo text into one ``{key: value}`` dict per blank-line block."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Parse /proc/cpuinfo text into the CPU facts bench records.

    Returns ``model`` (``model name`` of the first processor, None if absent, e.g. on
    some ARM kernels), ``logical_cores`` (number of ``processor`` entries),
    ``physical_cores`` (distinct ``(physical id, core id)`` pairs, None when the kernel
    does not report topology), ``flags_of_interest`` (``{flag: present}`` for
    :data:`CPU_FLAGS_OF_INTEREST`, None when there is no ``flags`` line) and
    ``virtualized`` (True when the ``hypervisor`` flag is set, None without flags).

    ``physical_cores`` counts cores visible to *this* kernel: inside a VM it is the
    virtual topology the hypervisor chose to present, not the host's silicon.
    """
    processors = [block for block in _cpuinfo_blocks(text) if "processor" in block]
    first = processors[0] if processors else {}

    core_ids: set[tuple[str, str]] = set()
    for block in processors:
        if "physical id" not in block or "core id" not in block:
            core_ids = set()
            break
        core_ids.add((block["physical id"], block["core id"]))

    flags_line = first.get("flags")
    flags_of_interest: dict[str, bool] | None = None
    virtualized: bool | None = None
    if flags_line is not None:
        flags = set(flags_line.split())
        flags_of_interest = {flag: flag in flags for flag in CPU_FLAGS_OF_INTEREST}
        virtualized = "hypervisor" in flags

    return {
        "model": first.get("model name"),
        "logical_cores": len(processors),
        "physical_cores": len(core_ids) or None,
        "flags_of_interest": flags_of_interest,
        "virtualized": virtualized,
    }


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) text into ``{KEY: value}``, removing quotes and escapes.

    Comments, blank lines and malformed lines are skipped, like
    :func:`platform.freedesktop_os_release` does.
    """
    result: dict[str, str] = {}
    for line in text.splitlines():
        match = _OS_RELEASE_LINE.match(line.strip())
        if match is None:
            continue
        result[match.group("name")] = _OS_RELEASE_UNESCAPE.sub(r"\1", match.group("value"))
    return result


def parse_bracketed_choice(text: str) -> str | None:
    """Return the selected word of a sysfs choice file, None if nothing is bracketed.

    ``"always [madvise] never"`` gives ``"madvise"``; used for transparent hugepage
    ``enabled`` and ``defrag``.
    """
    match = _BRACKETED_WORD.search(text)
    return match.group(1) if match else None


def parse_loadavg(text: str) -> dict[str, float]:
    """Parse /proc/loadavg text into ``{"1m": ..., "5m": ..., "15m": ...}``.

    Raises ValueError when the first three fields are not numbers.
    """
    fields = text.split()
    if len(fields) < 3:
        raise ValueError(f"expected at least 3 fields in loadavg, got {text!r}")
    return {"1m": float(fields[0]), "5m": float(fields[1]), "15m": float(fields[2])}


# --- one reader per source; each returns None when its source is absent -------------------


def _read_text(root: str, path: str) -> str | None:
    """Return the text of ``path`` joined under ``root``, None if it cannot be read."""
    try:
        return (Path(root) / path.lstrip("/")).read_text(errors="replace")
    except OSError:
        return None


def _read_stripped(root: str, path: str) -> str | None:
    """Return the stripped text of a one-value file, None if absent or empty."""
    text = _read_text(root, path)
    if text is None:
        return None
    return text.strip() or None


def _read_int(root: str, path: str) -> int | None:
    """Return a one-integer file as int, None if absent or not an integer."""
    text = _read_stripped(root, path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _none_if_all_none(facts: dict[str, Any]) -> dict[str, Any] | None:
    """Return ``facts``, or None when every source behind it was absent."""
    return facts if any(value is not None for value in facts.values()) else None


def _utc_now_iso() -> str:
    """Return the current UTC time as an ISO 8601 string with offset."""
    return datetime.now(UTC).isoformat()


def _hostname(root: str) -> str | None:
    """Hostname of the UTS namespace bench runs in, from /proc/sys/kernel/hostname."""
    return _read_stripped(root, "/proc/sys/kernel/hostname")


def _kernel(root: str) -> dict[str, Any] | None:
    """Kernel release, build version string and boot command line."""
    return _none_if_all_none(
        {
            "release": _read_stripped(root, "/proc/sys/kernel/osrelease"),
            "version": _read_stripped(root, "/proc/sys/kernel/version"),
            "cmdline": _read_stripped(root, "/proc/cmdline"),
        }
    )


def _distro(root: str) -> dict[str, Any] | None:
    """Distribution from /etc/os-release, falling back to /usr/lib/os-release (os-release(5))."""
    text = _read_text(root, "/etc/os-release")
    if text is None:
        text = _read_text(root, "/usr/lib/os-release")
    if text is None:
        return None
    fields = parse_os_release(text)
    return {
        "id": fields.get("ID"),
        "version_id": fields.get("VERSION_ID"),
        "pretty_name": fields.get("PRETTY_NAME"),
    }


def _cpu(root: str) -> dict[str, Any] | None:
    """CPU facts from /proc/cpuinfo (see :func:`parse_cpuinfo`)."""
    text = _read_text(root, "/proc/cpuinfo")
    return parse_cpuinfo(text) if text is not None else None


def _meminfo(root: str) -> dict[str, int] | None:
    """Return /proc/meminfo parsed to bytes, None when absent."""
    text = _read_text(root, "/proc/meminfo")
    return parse_meminfo(text) if text is not None else None


def _memory(meminfo: dict[str, int] | None) -> dict[str, Any] | None:
    """Total and available memory; available is None on kernels without MemAvailable."""
    if meminfo is None:
        return None
    return {
        "total_bytes": meminfo.get("MemTotal"),
        "available_bytes": meminfo.get("MemAvailable"),
    }


def _ksm(root: str) -> dict[str, Any] | None:
    """Kernel samepage merging state: it can hide per-VM memory overhead when on."""
    return _none_if_all_none(
        {
            name: _read_int(root, f"/sys/kernel/mm/ksm/{name}")
            for name in ("run", "pages_sharing", "pages_shared")
        }
    )


def _thp(root: str) -> dict[str, Any] | None:
    """Transparent hugepage policy: the bracketed choice of ``enabled`` and ``defrag``."""
    facts: dict[str, Any] = {}
    for name in ("enabled", "defrag"):
        text = _read_text(root, f"/sys/kernel/mm/transparent_hugepage/{name}")
        facts[name] = parse_bracketed_choice(text) if text is not None else None
    return _none_if_all_none(facts)


def _cpu_governor(root: str) -> dict[str, str] | None:
    """``{"cpu0": governor, ...}`` from cpufreq; None when no CPU exposes cpufreq.

    cpufreq is commonly absent inside VMs, where the guest cannot scale frequency.
    """
    cpu_base = Path(root) / "sys/devices/system/cpu"
    try:
        cpu_dirs = [entry for entry in cpu_base.iterdir() if _CPU_DIR_NAME.match(entry.name)]
    except OSError:
        return None
    governors: dict[str, str] = {}
    for cpu_dir in sorted(cpu_dirs, key=lambda entry: int(entry.name[3:])):
        try:
            governor = (cpu_dir / "cpufreq/scaling_governor").read_text().strip()
        except OSError:
            continue
        if governor:
            governors[cpu_dir.name] = governor
    return governors or None


def _cpuidle(root: str) -> dict[str, Any] | None:
    """The cpuidle driver and governor: idle-state exit latency shows up in startup times.

    On nested VMs (driver ``haltpoll``) waking an idle vCPU has been measured here at
    several milliseconds, which lands in the first instance started after a pause.
    """
    facts: dict[str, Any] = {
        "driver": _read_text(root, "/sys/devices/system/cpu/cpuidle/current_driver"),
        "governor": _read_text(root, "/sys/devices/system/cpu/cpuidle/current_governor_ro")
        or _read_text(root, "/sys/devices/system/cpu/cpuidle/current_governor"),
    }
    facts = {k: v.strip() if isinstance(v, str) else v for k, v in facts.items()}
    return _none_if_all_none(facts)


def _loadavg(root: str) -> dict[str, float] | None:
    """1, 5 and 15 minute load averages, None when /proc/loadavg is absent or malformed."""
    text = _read_text(root, "/proc/loadavg")
    if text is None:
        return None
    try:
        return parse_loadavg(text)
    except ValueError:
        return None


def _kvm(root: str) -> dict[str, Any]:
    """Whether /dev/kvm exists.

    Presence is NOT evidence that KVM can boot guests: nested setups expose /dev/kvm
    while guests fail to start, and the node may not be accessible to this user. Only a
    guest that actually boots proves KVM works; the libvirt backend records the
    accelerator it really used on every sample.
    """
    return {"dev_kvm_present": (Path(root) / "dev/kvm").exists()}


def _init(root: str) -> dict[str, Any] | None:
    """Command name of PID 1 (``systemd`` on most lab hosts; anything else is worth noting)."""
    return _none_if_all_none({"pid1_comm": _read_stripped(root, "/proc/1/comm")})


def _python() -> dict[str, str]:
    """Version and implementation of the interpreter running bench."""
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


def _git_output(args: list[str], cwd: Path) -> str | None:
    """Run git with list arguments (never a shell) in ``cwd``; None on any failure."""
    try:
        completed = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout if completed.returncode == 0 else None


def _bench() -> dict[str, Any]:
    """Return bench's version, and the git revision and dirtiness of its checkout.

    Git is asked in the directory of the bench package, so an installed (non-checkout)
    bench, or a host without git, records None for both git fields. ``git_dirty``
    counts untracked files too: an uncommitted new module changes what runs.
    """
    package_dir = Path(__file__).resolve().parent
    revision = _git_output(["rev-parse", "HEAD"], package_dir)
    status = _git_output(["status", "--porcelain"], package_dir) if revision else None
    revision = revision.strip() if revision is not None else None
    return {
        "version": __version__,
        "git_revision": revision or None,
        "git_dirty": bool(status.strip()) if status is not None else None,
    }


def _cgroup(root: str) -> dict[str, Any] | None:
    """Return the cgroup layout from :mod:`bench.cgroups.layout`, None if undetectable.

    Imported lazily so host facts still collect when the cgroup module cannot be
    imported; a tree without /proc/self/mounts or without any cgroup hierarchy also
    gives None.
    """
    try:
        from bench.cgroups.layout import CgroupLayoutError, detect
    except ImportError:
        return None
    try:
        return detect(root).to_dict()
    except (OSError, CgroupLayoutError):
        return None


# --- public API ---------------------------------------------------------------------------


def collect_host_facts(root: str = "/") -> dict[str, Any]:
    """Collect the host facts recorded once per run, as a JSON-serialisable dict.

    Keys: ``hostname``, ``kernel``, ``distro``, ``cpu``, ``memory``, ``swap_total_bytes``,
    ``ksm``, ``thp``, ``cpu_governor``, ``loadavg``, ``kvm``, ``init``, ``python``,
    ``bench``, ``cgroup`` and ``collected_at_utc``. A fact whose source is absent under
    ``root`` is None; this function never raises for a missing or unreadable source.
    ``python`` and ``bench`` describe the running interpreter and checkout, whatever
    ``root`` is.
    """
    meminfo = _meminfo(root)
    return {
        "hostname": _hostname(root),
        "kernel": _kernel(root),
        "distro": _distro(root),
        "cpu": _cpu(root),
        "memory": _memory(meminfo),
        "swap_total_bytes": meminfo.get("SwapTotal") if meminfo is not None else None,
        "ksm": _ksm(root),
        "thp": _thp(root),
        "cpu_governor": _cpu_governor(root),
        "cpuidle": _cpuidle(root),
        "loadavg": _loadavg(root),
        "kvm": _kvm(root),
        "init": _init(root),
        "python": _python(),
        "bench": _bench(),
        "cgroup": _cgroup(root),
        "collected_at_utc": _utc_now_iso(),
    }


def load_snapshot(root: str = "/") -> dict[str, Any]:
    """Cheap facts that drift during a run, taken at run start and end.

    Returns ``loadavg`` (as in :func:`collect_host_facts`), ``mem_available_bytes``
    (MemAvailable, None when absent) and ``collected_at_utc``.
    """
    meminfo = _meminfo(root)
    return {
        "loadavg": _loadavg(root),
        "mem_available_bytes": meminfo.get("MemAvailable") if meminfo is not None else None,
        "collected_at_utc": _utc_now_iso(),
    }
