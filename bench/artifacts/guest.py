"""Guest artefacts for VM backends: Debian's cloud kernel and an initramfs whose /init is the probe.

This module puts together the pieces in ``guest_kernel`` (apt fetch), ``guest_elf`` (the
PVH vmlinux), ``guest_initramfs`` (the cpio), ``guest_cmdline`` and ``guest_boot`` (a
real QEMU boot proving they work), and is the one the VM backends import.

Both are built locally, before any timed interval, and cached by content: the kernel under
``cache_dir()/guest/kernel/<package>_<version>/``, the initramfs under
``cache_dir()/guest/initramfs-<hash of its inputs>.cpio[.gz]``.

The kernel is the package Debian's ``linux-image-cloud-amd64`` metapackage points at,
fetched with ``apt-get download`` (no install, so no initramfs hooks run) and unpacked
only for ./boot. Its vmlinuz is an LZ4 bzImage; the uncompressed vmlinux inside it is an
ELF with a PVH entry point, which QEMU boots directly (no real-mode setup, no in-guest
decompression) and is preferred when it proves to boot; the vmlinuz is the fallback.

The initramfs is a newc cpio written here in pure Python (no root, no mknod, fixed
mtimes and owners, sorted entries, so the same inputs give the same bytes): /init (the
probe), /bin/busybox with its applets as symlinks, /proc /sys /dev /tmp and a
/dev/console node (5, 1), so init has a console before devtmpfs is mounted.

``boot_with_qemu`` boots a kernel and initramfs with plain QEMU (no libvirt) and stamps
when the serial console's marker lines arrive on the host's monotonic clock; it proves the
artefacts boot and gives the reference figures in tests/perf/guest_boot_qemu.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.artifacts.guest_boot import (
    EXIT_MARKER,
    READY_MARKER,
    UPTIME_MARKER,
    USERSPACE_MARKER,
    QemuBoot,
    boot_check_ok,
    boot_with_qemu,
    qemu_command,
    verify_guest_boot,
)
from bench.artifacts.guest_cmdline import (
    GUEST_CMDLINE_BASE,
    boot_cmdline,
    guest_cmdline,
    tsc_early_khz,
)
from bench.artifacts.guest_elf import bzimage_payload, elf_notes, extract_vmlinux, has_pvh_entry
from bench.artifacts.guest_initramfs import (
    DEFAULT_INITRAMFS_COMPRESSION,
    CpioEntry,
    Initramfs,
    InitramfsCompression,
    build_initramfs,
    initramfs_bytes,
    initramfs_entries,
    newc_archive,
    read_newc,
)
from bench.artifacts.guest_kernel import (
    KERNEL_METAPACKAGE,
    GuestKernel,
    download_package,
    guest_kernel,
    resolve_kernel_package,
    unpack_boot,
)
from bench.artifacts.probe import build_probe

__all__ = [
    "DEFAULT_INITRAMFS_COMPRESSION",
    "EXIT_MARKER",
    "GUEST_CMDLINE_BASE",
    "KERNEL_METAPACKAGE",
    "READY_MARKER",
    "UPTIME_MARKER",
    "USERSPACE_MARKER",
    "CpioEntry",
    "GuestArtifacts",
    "GuestKernel",
    "Initramfs",
    "InitramfsCompression",
    "QemuBoot",
    "boot_check_ok",
    "boot_cmdline",
    "boot_with_qemu",
    "build_initramfs",
    "bzimage_payload",
    "download_package",
    "elf_notes",
    "extract_vmlinux",
    "guest_artifacts",
    "guest_cmdline",
    "guest_kernel",
    "has_pvh_entry",
    "initramfs_bytes",
    "initramfs_entries",
    "newc_archive",
    "qemu_command",
    "read_newc",
    "resolve_kernel_package",
    "tsc_early_khz",
    "unpack_boot",
    "verify_guest_boot",
]


@dataclass(frozen=True)
class GuestArtifacts:
    """Everything a VM backend boots: kernel, initramfs, and the cmdline before ``--``."""

    kernel: GuestKernel
    initramfs: Initramfs
    cmdline_base: str


def guest_artifacts(cache: Path | None = None, *, verify_boot: bool = True) -> GuestArtifacts:
    """Kernel, initramfs (for the current probe) and base cmdline, all cached.

    With ``verify_boot`` (the default) the pair is booted once under TCG, before any timing,
    and the vmlinux is swapped for the vmlinuz if only the latter boots (verdict cached).
    """
    cmdline_base = guest_cmdline()
    kernel = guest_kernel(cache)
    initramfs = build_initramfs(build_probe(cache), cache)
    if verify_boot:
        kernel = verify_guest_boot(kernel, initramfs, cmdline_base, cache)
    return GuestArtifacts(kernel, initramfs, cmdline_base)
