"""The harness's own footprint while it measures: RSS and CPU time of the bench process.

Usage: .venv/bin/python tests/perf/harness_footprint.py SCENARIO [--source DIR] [--label TEXT]

Runs ``bench run SCENARIO --no-report`` with ``--source`` (a checkout of bench, default
this one) first on PYTHONPATH, and samples /proc/PID of the bench process every 0.2 s:
VmRSS, and utime+stime (all its threads). It prints the peak RSS, the CPU seconds and
the CPU share of one core over the whole run and over the busiest window (the density
ramp, if the run has one: from the first to the last sample of the ramp, as recorded).
Compare two checkouts (before/after a change) by running it twice. Never asserts: the
machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")


def _instances() -> int:
    """Processes that are instances' VMMs or sandboxes (the window the harness must be light in)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                comm = Path(entry.path, "comm").read_text()
            except OSError:
                continue
            count += comm.startswith(("qemu-system", "containerd-shim"))
    return count


def _sample(pid: int) -> tuple[float, int, float] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rss_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
    )
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / TICKS
    return time.monotonic(), rss_kib * 1024, cpu_s


def main() -> None:
    """Run the scenario once and print the harness's footprint."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario")
    parser.add_argument("--source", default=str(REPO))
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    results = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    env = {**os.environ, "PYTHONPATH": args.source}
    command = [
        sys.executable,
        "-m",
        "bench",
        "run",
        args.scenario,
        "--results",
        str(results),
        "--no-report",
    ]
    proc = subprocess.Popen(command, cwd=args.source, env=env, stdout=subprocess.DEVNULL)
    points: list[tuple[float, int, float]] = []
    busy: list[tuple[float, int, float]] = []
    while proc.poll() is None:
        point = _sample(proc.pid)
        if point is not None:
            points.append(point)
            if _instances():
                busy.append(point)
        time.sleep(0.2)
    if not points:
        sys.exit("the run ended before it could be sampled")
    wall_s = points[-1][0] - points[0][0]
    cpu_s = points[-1][2] - points[0][2]
    print(f"{args.label or args.source}: exit {proc.returncode}, wall {wall_s:.1f} s")
    print(f"  peak RSS {max(p[1] for p in points) / 2**20:.1f} MiB")
    print(f"  CPU {cpu_s:.2f} s over the run = {100 * cpu_s / wall_s:.1f}% of one core")
    if len(busy) >= 2:
        busy_wall_s = busy[-1][0] - busy[0][0]
        busy_cpu_s = busy[-1][2] - busy[0][2]
        print(
            f"  while instances existed: {busy_wall_s:.1f} s, CPU {busy_cpu_s:.2f} s = "
            f"{100 * busy_cpu_s / busy_wall_s:.1f}% of one core, "
            f"peak RSS {max(p[1] for p in busy) / 2**20:.1f} MiB"
        )
    samples = next(results.rglob("samples.jsonl"), None)
    if samples is None:
        return
    density = [json.loads(line) for line in samples.read_text().splitlines() if '"density"' in line]
    final = [r for r in density if r["labels"].get("view") == "count_reached"]
    for record in final:
        labels = record["labels"]
        print(
            f"  ramp: {record['value']:.0f} READY ({labels['stop_reason']}), "
            f"p99 startup {labels.get('p99_startup_s') or 0:.2f} s, "
            f"harness RSS max {labels.get('harness_rss_max_mib', 0):.1f} MiB"
            + (
                f", harness CPU {labels['harness_cpu_s']:.2f} s over {labels['ramp_s']:.1f} s = "
                f"{100 * labels['harness_cpu_fraction']:.1f}% of one core"
                if labels.get("harness_cpu_fraction") is not None
                else " (this checkout records no harness CPU)"
            )
        )
    steps = [r for r in density if r["labels"].get("view") == "harness_rss"]
    if steps:
        elapsed = [r["labels"]["elapsed_s"] for r in steps]
        print(f"  ramp window by step records: {min(elapsed):.1f}-{max(elapsed):.1f} s after start")


if __name__ == "__main__":
    main()
