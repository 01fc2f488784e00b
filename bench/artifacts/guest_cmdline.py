"""The guest kernel's command line: the parameters every boot gets, and the payload's."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bench.errors import ArtifactError

# Kernel parameters every guest boot gets, each measured under TCG on the dev machines
# (tests/perf/guest_boot_qemu.py); tsc_early_khz is added per host by guest_cmdline().
# - console=ttyS0: the serial console is where the host reads the markers.
# - panic=-1: a panicking guest reboots at once; with -no-reboot / on_reboot=destroy the
#   domain ends instead of hanging until the host's timeout.
# - quiet: each kernel line on the 8250 UART is emulated byte by byte under TCG.
# - loglevel=6 (after quiet): notice-level lines still print, ~20 of them, the first being
#   "Linux version ..." from start_kernel: the host stamps its arrival as the kernel's
#   start, which splits a boot into VMM + firmware (create -> first console byte), kernel
#   (-> BENCH_USERSPACE) and userspace (-> READY). Without it the guest is silent until
#   userspace, and "to first byte" equals the whole boot.
# - cryptomgr.notests: skips the crypto self-tests (~0.35 s of a ~1.8 s TCG boot).
# Measured and left out: mitigations=off, audit=0, no_timer_check, lsm=capability,
# 8250.nr_uarts=1, i8042.noaux/nokbd, tsc=reliable (each within noise, <= 0.05 s;
# mitigations=off would also make the guest's syscalls cheaper than the host's, skewing the
# comparison). Never acpi=off: ACPI is how reboot(RB_POWER_OFF) ends the domain.
GUEST_CMDLINE_BASE: tuple[str, ...] = (
    "console=ttyS0",
    "panic=-1",
    "quiet",
    "loglevel=6",
    "cryptomgr.notests",
)


def tsc_early_khz(cpuinfo: str) -> int | None:
    """The first ``cpu MHz`` of /proc/cpuinfo text, in kHz (None when absent)."""
    match = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo, re.MULTILINE)
    if match is None:
        return None
    khz = round(float(match.group(1)) * 1000)
    return khz if khz > 0 else None


def guest_cmdline(cpuinfo: str | None = None, extra: Sequence[str] = ()) -> str:
    """The kernel command line before ``--``: GUEST_CMDLINE_BASE, tsc_early_khz, extra.

    tsc_early_khz (the host's TSC rate) spares the guest its TSC calibration, which hangs
    when several TCG guests boot at once. ``cpuinfo`` defaults to /proc/cpuinfo.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    params = list(GUEST_CMDLINE_BASE)
    khz = tsc_early_khz(cpuinfo)
    if khz is not None:
        params.append(f"tsc_early_khz={khz}")
    params.extend(extra)
    return " ".join(params)


def boot_cmdline(cmdline_base: str, mode_args: Sequence[str]) -> str:
    """Append the probe's mode after ``--`` (e.g. ``["alloc", "64"]``): init reads it there."""
    for arg in mode_args:
        if not arg or any(c.isspace() for c in arg) or arg == "--":
            raise ArtifactError(f"probe argument {arg!r} cannot travel on a kernel cmdline")
    return f"{cmdline_base} -- {' '.join(mode_args)}".rstrip()
