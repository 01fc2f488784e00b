"""Plain QEMU boots of the guest artefacts (no libvirt), stamped on the host's clock.

``boot_with_qemu`` proves the artefacts boot (``verify_guest_boot``, recorded per kernel)
and gives the reference figures of tests/perf/guest_boot_qemu.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.artifacts.cache_files import sha256_file, write_atomic
from bench.artifacts.guest_cmdline import boot_cmdline
from bench.artifacts.guest_elf import PROVISION_FIX
from bench.artifacts.guest_initramfs import Initramfs
from bench.artifacts.guest_kernel import GuestKernel
from bench.artifacts.probe import cache_dir
from bench.errors import ArtifactError

# The guest's console markers (printed by the probe's init mode) and READY.
USERSPACE_MARKER = "BENCH_USERSPACE"


UPTIME_MARKER = "BENCH_UPTIME"


EXIT_MARKER = "BENCH_EXIT"


READY_MARKER = "READY"


BOOT_CHECK_SCHEMA_VERSION = 1


@dataclass
class QemuBoot:
    """One QEMU boot, stamped on the host's monotonic clock (seconds from spawn).

    ``to_userspace_s``/``to_ready_s`` are None when the marker never arrived, ``to_exit_s``
    when QEMU was killed at the timeout; ``guest_exit_code`` is the probe's BENCH_EXIT code
    and ``guest_uptime_s`` the guest kernel's own (untrusted, informative) view of its boot.
    """

    command: list[str]
    to_first_byte_s: float | None = None
    to_userspace_s: float | None = None
    to_ready_s: float | None = None
    to_exit_s: float | None = None
    returncode: int | None = None
    timed_out: bool = False
    guest_exit_code: int | None = None
    guest_uptime_s: float | None = None
    console: str = ""
    markers: list[str] = field(default_factory=list)


def qemu_command(
    kernel: Path,
    initramfs: Path,
    cmdline: str,
    *,
    accel: str = "tcg",
    memory_mib: int = 128,
    qemu: str = "qemu-system-x86_64",
) -> list[str]:
    """QEMU argv for a direct kernel boot like the libvirt backend's domain.

    pc machine with ACPI (guest poweroff ends QEMU), -nodefaults as libvirt passes (no
    VGA or NIC to probe), serial on stdio, -no-reboot so a panic (panic=-1) ends QEMU too.
    Never ``-cpu host``: it aborts under the nested KVM of the dev machines.
    """
    return [
        qemu,
        "-accel",
        accel,
        "-machine",
        "pc",
        "-m",
        str(memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initramfs),
        "-append",
        cmdline,
    ]


def boot_with_qemu(command: Sequence[str], timeout_s: float = 60) -> QemuBoot:
    """Run QEMU, stamp the console markers (host monotonic clock), wait for it to exit.

    QEMU is killed at the timeout (a failed guest hangs rather than exits); it is never
    left running. Raises ArtifactError only when QEMU cannot be started.
    """
    boot = QemuBoot(list(command))
    t0 = time.monotonic_ns()
    try:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        raise ArtifactError(f"cannot start {command[0]}: {exc}; {PROVISION_FIX}") from None
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = t0 + int(timeout_s * 1e9)
    buffer = b""
    console = bytearray()
    closed = False  # QEMU closed its stdout: it is exiting by itself
    try:
        while True:
            left_s = (deadline - time.monotonic_ns()) / 1e9
            if left_s <= 0:
                boot.timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], left_s)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            now = time.monotonic_ns()
            if not chunk:
                closed = True
                break
            if boot.to_first_byte_s is None:
                boot.to_first_byte_s = (now - t0) / 1e9
            console += chunk
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                _note_console_line(boot, raw.decode(errors="replace").strip("\r"), now - t0)
    finally:
        # On a timeout or any exception (KeyboardInterrupt too) QEMU is killed, never left.
        if not closed:
            proc.kill()
        try:
            boot.returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            boot.returncode = proc.wait()
        if closed:
            boot.to_exit_s = (time.monotonic_ns() - t0) / 1e9
        proc.stdout.close()
    boot.console = console.decode(errors="replace")
    return boot


def _note_console_line(boot: QemuBoot, line: str, elapsed_ns: int) -> None:
    word, _, rest = line.strip().partition(" ")
    if word == USERSPACE_MARKER and boot.to_userspace_s is None:
        boot.to_userspace_s = elapsed_ns / 1e9
    elif word == READY_MARKER and rest == "" and boot.to_ready_s is None:
        boot.to_ready_s = elapsed_ns / 1e9
    elif word == UPTIME_MARKER:
        with contextlib.suppress(ValueError):
            boot.guest_uptime_s = float(rest)
    elif word == EXIT_MARKER:
        with contextlib.suppress(ValueError):
            boot.guest_exit_code = int(rest)
    else:
        return
    boot.markers.append(word)


def boot_check_ok(boot: QemuBoot) -> bool:
    """True when a `-- ready` boot reached userspace, then READY, and powered off cleanly."""
    return (
        boot.to_userspace_s is not None
        and boot.to_ready_s is not None
        and boot.to_userspace_s <= boot.to_ready_s
        and boot.guest_exit_code == 0
        and not boot.timed_out
        and boot.returncode == 0
    )


def _kernel_booting(kernel: GuestKernel, image_name: str) -> GuestKernel:
    if image_name == kernel.path.name:
        return kernel
    if kernel.vmlinuz is not None and image_name == kernel.vmlinuz.name:
        return GuestKernel(
            kernel.vmlinuz,
            kernel.version,
            kernel.package,
            sha256_file(kernel.vmlinuz),
            kernel.vmlinuz,
            kernel.release,
        )
    raise KeyError(image_name)  # a stale verdict: boot again


def verify_guest_boot(
    kernel: GuestKernel,
    initramfs: Initramfs,
    cmdline_base: str,
    cache: Path | None = None,
    timeout_s: float = 60,
) -> GuestKernel:
    """Boot the pair once under TCG (cached verdict) and return the kernel that boots.

    The PVH vmlinux is tried first; if it does not reach READY and power off, the bzImage
    is tried and returned instead. Raises ArtifactError when neither boots (the console
    tail says why). Without qemu-system-x86_64 nothing can be proven: the kernel is
    returned unchanged.
    """
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return kernel
    root = (cache or cache_dir()) / "guest"
    verdict_path = root / f"boot-check-{kernel.sha256[:16]}-{initramfs.sha256[:16]}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        verdict = json.loads(verdict_path.read_text())
        if verdict["schema_version"] == BOOT_CHECK_SCHEMA_VERSION:
            return _kernel_booting(kernel, str(verdict["boot_image"]))
    candidates = [kernel.path]
    if kernel.vmlinuz is not None and kernel.vmlinuz != kernel.path:
        candidates.append(kernel.vmlinuz)
    failures: list[str] = []
    for image in candidates:
        command = qemu_command(
            image, initramfs.path, boot_cmdline(cmdline_base, ["ready"]), qemu=qemu
        )
        boot = boot_with_qemu(command, timeout_s)
        if boot_check_ok(boot):
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(
                verdict_path,
                json.dumps(
                    {
                        "schema_version": BOOT_CHECK_SCHEMA_VERSION,
                        "boot_image": image.name,
                        "to_ready_s": boot.to_ready_s,
                        "to_exit_s": boot.to_exit_s,
                        "candidates": [c.name for c in candidates],
                    }
                ).encode(),
            )
            return _kernel_booting(kernel, image.name)
        failures.append(
            f"{image.name}: markers {boot.markers}, exit {boot.returncode}, "
            f"timed out {boot.timed_out}, console tail {boot.console[-300:]!r}"
        )
    raise ArtifactError(
        "the guest boots with no kernel image under QEMU TCG: " + "; ".join(failures)
    )
