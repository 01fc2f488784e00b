"""VM startup figures for the closing note: bench's libvirt guests next to plain QEMU.

Run as root on a provisioned host:  .venv/bin/python tests/perf/vm_startup_vs_qemu.py [N]

Prints, for the same kernel, initramfs and command line, under TCG:
- bench's libvirt startup (median/min/max to first console byte/userspace and to READY,
  define and start call times) from a real run of the startup metric;
- a direct ``qemu-system-x86_64`` boot (spawn -> marker, spawn -> READY), and the ratio;
- createXML (transient domain) and destroy times for an idle guest;
- the quick suite's wall time with all three backends.
Nothing asserts: shared machines are noisy, so the numbers are printed, not gated.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.analysis.dataset import load_dataset  # noqa: E402
from bench.artifacts.guest import boot_cmdline, boot_with_qemu, qemu_command  # noqa: E402
from bench.backends import get_backend  # noqa: E402
from bench.backends.base import Instance  # noqa: E402
from bench.backends.libvirt_xml import domain_xml  # noqa: E402


def load(directory: Path) -> pd.DataFrame:
    """One run as a frame (host-noise records left out)."""
    frame = load_dataset([directory]).samples
    return frame[frame["metric"] != "noise"]


from bench.runner import run_scenario  # noqa: E402
from bench.scenario import InstanceSpec, Payload, parse_scenario  # noqa: E402


def describe(values: list[float]) -> str:
    """median/min/max in seconds, as text."""
    return (
        f"median {statistics.median(values):.3f} s  min {min(values):.3f}  "
        f"max {max(values):.3f}  (n={len(values)})"
    )


def main() -> None:
    """Measure and print the figures."""
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    text = (
        f"name: perf-vm\nbackends: [libvirt]\nsamples: {samples}\nwarmups: 1\n"
        "settle_s: 0.5\nseed: 1\ninstance: {accel: tcg}\n"
    )
    with tempfile.TemporaryDirectory() as results:
        frame = load(run_scenario(parse_scenario(text), text, "perf", Path(results)).directory)
    frame = frame[~frame["warmup"] & frame["ok"]]

    backend = get_backend("libvirt")
    backend.check_available()
    artifacts = backend.artifacts  # type: ignore[attr-defined]
    cmdline = boot_cmdline(artifacts.cmdline_base, ["ready"])
    direct_userspace, direct_ready = [], []
    for _ in range(samples):
        boot = boot_with_qemu(
            qemu_command(artifacts.kernel.path, artifacts.initramfs.path, cmdline)
        )
        if boot.to_userspace_s is not None and boot.to_ready_s is not None:
            direct_userspace.append(boot.to_userspace_s)
            direct_ready.append(boot.to_ready_s)
        time.sleep(0.5)

    # createXML (transient) and destroy, idle guest, READY in between
    create_s, destroy_s, transient_ready_s = [], [], []
    for index in range(min(samples, 5)):
        instance = Instance(
            "libvirt",
            f"bench-perf-transient-{index}",
            InstanceSpec(accel="tcg", payload=Payload(mode="idle")),
            "perf",
        )
        config = backend._domain_config(instance, "qemu")  # type: ignore[attr-defined]
        t0 = time.monotonic()
        domain = backend.conn.createXML(domain_xml(config), 0)  # type: ignore[attr-defined]
        t1 = time.monotonic()
        console = config.console_log
        deadline = t1 + 60
        while time.monotonic() < deadline:
            if console.exists() and "READY" in console.read_text(errors="replace"):
                break
            time.sleep(0.001)
        t2 = time.monotonic()
        domain.destroy()
        t3 = time.monotonic()
        console.unlink(missing_ok=True)
        create_s.append(t1 - t0)
        transient_ready_s.append(t2 - t0)
        destroy_s.append(t3 - t2)
    backend.close()

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as results:
        quick = subprocess.run(
            [sys.executable, "-m", "bench", "run", "scenarios/quick.yaml", "--results", results],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    quick_wall_s = time.monotonic() - started

    print(f"bench libvirt startup (TCG), n={len(frame)}")
    print(f"  define (defineXML)        {describe(list(frame['stage.create_s']))}")
    print(f"  start (domain.create)     {describe(list(frame['stage.start_s']))}")
    print(f"  to first console byte     {describe(list(frame['stage.to_first_byte_s']))}")
    print(f"  to userspace marker       {describe(list(frame['stage.to_userspace_s']))}")
    print(f"  to READY                  {describe(list(frame['stage.to_ready_s']))}")
    print(
        f"  READY -> powered off      {describe(list(frame['stage.to_exit_s'] - frame['stage.to_ready_s']))}"
    )
    print("direct qemu-system-x86_64 (same kernel, initramfs, cmdline; spawn -> line)")
    print(f"  to userspace marker       {describe(direct_userspace)}")
    print(f"  to READY                  {describe(direct_ready)}")
    print("ratios (medians): bench / direct qemu")
    print(
        f"  to userspace {statistics.median(frame['stage.to_userspace_s']) / statistics.median(direct_userspace):.3f}"
    )
    print(
        f"  to READY     {statistics.median(frame['stage.to_ready_s']) / statistics.median(direct_ready):.3f}"
    )
    print("transient domains (idle guest)")
    print(f"  createXML                 {describe(create_s)}")
    print(f"  createXML -> READY        {describe(transient_ready_s)}")
    print(f"  destroy                   {describe(destroy_s)}")
    print(
        f"quick suite (process, docker, libvirt): wall {quick_wall_s:.1f} s, exit {quick.returncode}"
    )


if __name__ == "__main__":
    main()
