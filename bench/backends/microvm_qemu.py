"""The qemu of a microvm: its command line, how it joins its cgroup, finding stray ones.

Pure functions of a ``MicrovmConfig`` (tested on fixed inputs), and the few reads of the
host the backend (``bench.backends.qemu_microvm``) needs about QEMU itself: its version,
whether it has the microvm machine, which running qemu processes are this backend's.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.backends.base import NAME_PREFIX
from bench.errors import BenchError

OWNER = "qemu-microvm"
QEMU_BINARY = "qemu-system-x86_64"
SHELL = "/bin/sh"
MACHINE = "microvm"
# acpi=on: the guest's poweroff (reboot(RB_POWER_OFF)) ends qemu through the ACPI GED; with
# acpi=off the guest only halts and qemu never exits. x-option-roms=off: no firmware option
# ROMs to load. Left at their defaults, measured under TCG here: rtc=off costs ~2 s (the
# guest calibrates its clock the slow way); pit/pic/ioapic2/pcie off are within noise.
MACHINE_OPTIONS = "microvm,acpi=on,x-option-roms=off"
VERSION_TIMEOUT_S = 20.0
QEMU_FIX = "install qemu-system-x86 (ansible/up.sh does)"
SPAWN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass(frozen=True)
class MicrovmConfig:
    """Everything one microvm's qemu command line depends on."""

    name: str  # the instance name (bench-...)
    accel: str  # "tcg" | "kvm"
    memory_mib: int
    vcpus: int
    kernel: Path
    initrd: Path
    cmdline: str
    qemu: str = QEMU_BINARY


def process_name(instance_name: str) -> str:
    """The ``-name`` of qemu: the instance name tagged with this backend (as its cgroup is).

    The tag tells this backend's qemu processes apart from libvirt's (``-name guest=...``),
    so ``sweep`` finds only its own by command line.
    """
    return f"{instance_name}.{OWNER}"


def qemu_argv(config: MicrovmConfig) -> list[str]:
    """The qemu command line of one microvm (a pure function of the config).

    No defaults, no user config, no display, no monitor, no network device; the serial
    console on stdout; ``-no-reboot`` so a guest panic (``panic=-1`` reboots) ends qemu.
    Never ``-cpu host``: it aborts under the nested KVM of the dev machines.
    """
    if config.accel not in {"tcg", "kvm"}:
        raise ValueError(f"accel must be tcg or kvm, not {config.accel!r}")
    return [
        config.qemu,
        "-name",
        process_name(config.name),
        "-M",
        MACHINE_OPTIONS,
        "-accel",
        config.accel,
        "-m",
        str(config.memory_mib),
        "-smp",
        str(config.vcpus),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(config.kernel),
        "-initrd",
        str(config.initrd),
        "-append",
        config.cmdline,
    ]


def join_cgroup_argv(procs_files: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """Wrap ``argv`` so that its process joins the cgroups first, then becomes ``argv``.

    The shell writes ``0`` (itself) to each ``cgroup.procs``, then ``exec``: the same pid,
    already in the cgroup, runs ``argv``. A failed write ends the shell (status 2, its
    message on stderr) before anything runs outside the cgroup.
    """
    joins = [f"echo 0 > {shlex.quote(str(path))}" for path in procs_files]
    script = " && ".join([*joins, 'exec "$@"'])
    return [SHELL, "-c", script, "qemu-microvm-join", *argv]


def bench_process_name(argv: Sequence[str]) -> str | None:
    """The instance name when ``argv`` is one of this backend's qemu command lines."""
    for flag, value in itertools.pairwise(argv):
        suffix = f".{OWNER}"
        if flag == "-name" and value.startswith(NAME_PREFIX) and value.endswith(suffix):
            return value.removesuffix(suffix)
    return None


def stray_qemus() -> dict[int, str]:
    """Live processes running one of this backend's qemu command lines: pid -> instance."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if OWNER.encode() not in raw:
            continue
        name = bench_process_name([a.decode(errors="replace") for a in raw.split(b"\0")])
        if name is not None:
            found[int(entry.name)] = name
    return found


def qemu_version(qemu: str) -> str:
    """``qemu-system-x86_64 --version``'s version number (BenchError if it will not run)."""
    text = _run_qemu([qemu, "--version"])
    match = re.search(r"version (\S+)", text)
    return match.group(1) if match else text.strip().splitlines()[0]


def supports_microvm(qemu: str) -> bool:
    """True when this qemu lists the ``microvm`` machine type."""
    text = _run_qemu([qemu, "-machine", "help"])
    return re.search(r"^microvm\s", text, re.M) is not None


_QEMU_FACTS: dict[tuple[str, int, int], tuple[str, bool]] = {}


def qemu_facts(qemu: str) -> tuple[str, bool]:
    """(version, has microvm) of a qemu binary, asked once per binary file in this process."""
    try:
        stat = os.stat(qemu)
    except OSError as exc:
        raise BenchError(f"{qemu}: {exc}") from None
    key = (qemu, stat.st_mtime_ns, stat.st_size)
    if key not in _QEMU_FACTS:
        _QEMU_FACTS[key] = (qemu_version(qemu), supports_microvm(qemu))
    return _QEMU_FACTS[key]


def _run_qemu(command: list[str]) -> str:
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{' '.join(command)} failed: {exc}") from None
    if result.returncode != 0:
        raise BenchError(
            f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-300:]}"
        )
    return result.stdout
