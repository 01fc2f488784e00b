"""Guest boot figures with plain QEMU (no libvirt): which kernel and initramfs boot fastest.

Run as root on a provisioned host:  .venv/bin/python tests/perf/guest_boot_qemu.py [N]

Boots the cached guest artefacts (bench.artifacts.guest) N times per variant under TCG,
`-machine pc -m 128 -nodefaults -no-reboot`, serial on stdio, `-- ready`, and prints the
host-side times from spawn to the first console byte, to BENCH_USERSPACE, to READY and
to QEMU's exit (median/min/max), plus the guest kernel's own BENCH_UPTIME (informative).
Variants run interleaved in rotating order, so host drift hits all of them alike:
- vmlinux (PVH entry) vs vmlinuz (LZ4 bzImage), uncompressed vs gzip initramfs;
- the chosen cmdline without cryptomgr.notests, without quiet, and vmlinuz with nokaslr.
Then one boot with -accel kvm and a 30 s timeout, reporting what happened (the dev
machines' nested KVM is expected to fail). Nothing here asserts; no QEMU is left running.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.artifacts.guest import (  # noqa: E402
    GUEST_CMDLINE_BASE,
    QemuBoot,
    boot_check_ok,
    boot_cmdline,
    boot_with_qemu,
    build_initramfs,
    guest_artifacts,
    qemu_command,
)
from bench.artifacts.probe import build_probe  # noqa: E402

STAGES = ("to_first_byte_s", "to_userspace_s", "to_ready_s", "to_exit_s", "guest_uptime_s")


@dataclass(frozen=True)
class Variant:
    """One way to boot: kernel image, initramfs file, kernel cmdline."""

    name: str
    kernel: Path
    initramfs: Path
    cmdline: str


def variants() -> list[Variant]:
    """The chosen artefacts and the alternatives they were chosen over."""
    artifacts = guest_artifacts(verify_boot=False)
    vmlinux = artifacts.kernel.path
    vmlinuz = artifacts.kernel.vmlinuz or vmlinux
    cpio = artifacts.initramfs.path
    cpio_gz = build_initramfs(build_probe(), compression="gzip").path
    base = artifacts.cmdline_base
    without = {
        name: " ".join(p for p in base.split() if p != name)
        for name in ("cryptomgr.notests", "quiet")
    }
    assert all(p in base.split() for p in GUEST_CMDLINE_BASE)
    return [
        Variant("vmlinux + cpio (chosen)", vmlinux, cpio, base),
        Variant("vmlinuz + cpio", vmlinuz, cpio, base),
        Variant("vmlinux + cpio.gz", vmlinux, cpio_gz, base),
        Variant("vmlinuz + cpio.gz", vmlinuz, cpio_gz, base),
        Variant(
            "vmlinux + cpio, no cryptomgr.notests", vmlinux, cpio, without["cryptomgr.notests"]
        ),
        Variant("vmlinux + cpio, no quiet", vmlinux, cpio, without["quiet"]),
        Variant("vmlinuz + cpio, nokaslr", vmlinuz, cpio, f"{base} nokaslr"),
    ]


def boot(variant: Variant, accel: str = "tcg", timeout_s: float = 60) -> QemuBoot:
    """One `-- ready` boot of a variant."""
    command = qemu_command(
        variant.kernel, variant.initramfs, boot_cmdline(variant.cmdline, ["ready"]), accel=accel
    )
    return boot_with_qemu(command, timeout_s)


def describe(values: list[float]) -> str:
    """median [min-max] of seconds."""
    if not values:
        return "-"
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main(argv: list[str]) -> int:
    """Boot every variant N times, print the table, then try KVM once."""
    runs = int(argv[1]) if len(argv) > 1 else 5
    if shutil.which("qemu-system-x86_64") is None:
        print("qemu-system-x86_64 not found: run ansible/up.sh")
        return 1
    chosen = variants()
    for variant in chosen:
        print(
            f"{variant.name}: {variant.kernel.name} {variant.initramfs.name} "
            f"({variant.initramfs.stat().st_size} bytes) cmdline {variant.cmdline!r}"
        )
    results: dict[str, list[QemuBoot]] = {v.name: [] for v in chosen}
    for round_index in range(runs):
        # Rotate and alternate the order each round (ABBA-like), so drift is shared.
        order = chosen[round_index % len(chosen) :] + chosen[: round_index % len(chosen)]
        if round_index % 2:
            order.reverse()
        for variant in order:
            results[variant.name].append(boot(variant))
    print(f"\nTCG, -m 128, N={runs} per variant; seconds from spawn, median [min-max]")
    print(
        f"{'variant':40s} {'first byte':>20s} {'userspace':>20s} {'READY':>20s} "
        f"{'exit':>20s} {'guest uptime':>20s}  ok"
    )
    for name, boots in results.items():
        good = [b for b in boots if boot_check_ok(b)]
        cells = [
            describe([v for b in good if (v := getattr(b, stage)) is not None]) for stage in STAGES
        ]
        print(f"{name:40s} " + " ".join(f"{c:>20s}" for c in cells) + f"  {len(good)}/{len(boots)}")
        for bad in (b for b in boots if not boot_check_ok(b)):
            print(
                f"   failed: markers {bad.markers} rc {bad.returncode} "
                f"timed out {bad.timed_out} tail {bad.console[-200:]!r}"
            )

    print("\nKVM attempt (-accel kvm, default CPU model, 30 s timeout):")
    kvm = boot(chosen[0], accel="kvm", timeout_s=30)
    print(
        f"  returncode {kvm.returncode}, timed out {kvm.timed_out}, markers {kvm.markers}, "
        f"first byte {kvm.to_first_byte_s}, userspace {kvm.to_userspace_s}, "
        f"ready {kvm.to_ready_s}, exit {kvm.to_exit_s}"
    )
    print(f"  console tail: {kvm.console[-600:]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
