"""How much of an idle probe's memory its own cgroup counts: joined after exec vs before.

Prints measured figures; never asserts. For each way of starting the probe in its own
cgroup (bench's cgroups: delegated on a systemd v2 host):

- ``after exec``: the probe joins its cgroup itself, as its first act (BENCH_CGROUP_PROCS
  read by the probe; what the process backend did before the cgexec helper);
- ``before exec``: the cgexec helper joins the cgroup, then execs the probe (what the
  process backend does now).

N idle probes each, one at a time: the cgroup's memory (v1 memory.usage_in_bytes and
memory.stat rss/cache; v2 memory.current and memory.stat anon/file) read 0.5 s after
READY, beside the probe's PSS and RSS (smaps_rollup). Medians, in KiB.

Usage (root): python tests/perf/cgroup_charge.py [N]
On a lab host with bench installed by the fleet (from the controller):
  ansible lab1 -i INVENTORY -b -m ansible.builtin.script \
      -a "executable=/opt/bench/venv/bin/python tests/perf/cgroup_charge.py 10"
"""

from __future__ import annotations

import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.artifacts.cgexec import build_cgexec
from bench.artifacts.probe import build_probe
from bench.cgroups.instance import InstanceCgroup
from bench.cgroups.layout import detect
from bench.cgroups.readers import parse_flat_keyed


def smaps(pid: int) -> dict[str, int]:
    """smaps_rollup of a pid, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])
    return values


def cgroup_kib(group: InstanceCgroup, version: int) -> dict[str, float]:
    """The cgroup's usage and its anon/file split, in KiB."""
    if version == 1:
        directory = group.dirs["memory"]
        usage = int((directory / "memory.usage_in_bytes").read_text())
        stat = parse_flat_keyed((directory / "memory.stat").read_text())
        anon, file = stat.get("rss", 0), stat.get("cache", 0)
    else:
        directory = group.dirs["unified"]
        usage = int((directory / "memory.current").read_text())
        stat = parse_flat_keyed((directory / "memory.stat").read_text())
        anon, file = stat.get("anon", 0), stat.get("file", 0)
    return {"cgroup": usage / 1024, "cgroup_anon": anon / 1024, "cgroup_file": file / 1024}


def one(mode: str, index: int, probe: Path, cgexec: Path) -> dict[str, float]:
    """Start one idle probe in a cgroup of its own, read both views, remove it."""
    layout = detect()
    group = InstanceCgroup.create(layout, f"bench-perf00-{index}", owner="perf")
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "BENCH_CGROUP_PROCS": ":".join(map(str, group.procs_files())),
        }
        argv = [str(probe), "idle"] if mode == "after exec" else [str(cgexec), str(probe), "idle"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, start_new_session=True)
        assert proc.stdout is not None
        buffer = b""
        deadline = time.monotonic() + 30
        while b"READY" not in buffer and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                buffer += os.read(proc.stdout.fileno(), 4096)
        time.sleep(0.5)
        rollup = smaps(proc.pid)
        views = cgroup_kib(group, layout.version)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        return {
            **views,
            "pss": rollup.get("Pss", 0),
            "pss_anon": rollup.get("Pss_Anon", 0),
            "rss": rollup.get("Rss", 0),
        }
    finally:
        group.remove()


def main() -> None:
    """Run N probes each way and print the medians."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    probe, cgexec = build_probe().path, build_cgexec().path
    layout = detect()
    print(f"cgroup v{layout.version} ({layout.mode}), kernel {os.uname().release}, n={count}")
    keys = ("cgroup", "cgroup_anon", "cgroup_file", "pss", "pss_anon", "rss")
    print(f"{'probe joins its cgroup':<24}" + "".join(f"{k:>13}" for k in keys) + "   (KiB)")
    for mode in ("after exec", "before exec"):
        rows = [one(mode, i, probe, cgexec) for i in range(count)]
        medians = [statistics.median(r[k] for r in rows) for k in keys]
        print(f"{mode:<24}" + "".join(f"{m:>13.1f}" for m in medians))


if __name__ == "__main__":
    main()
