"""What a move into a cgroup costs back to back and after a pause, with and without --tune.

Usage: .venv/bin/python tests/perf/cgroup_attach.py [--moves 20] [--hierarchy cpu]

Moves a sleeping process into a fresh v1 group and back (writes to ``cgroup.procs``, as
the process backend's helper and runc do), after pauses of 0, 5, 20, 50 and 300 ms,
without and then with ``bench.host_settings.cgroup_fast_moves`` (the favordynmods
hierarchy ``bench run --tune`` mounts). Also times a fork and exec of /bin/true after
the same pauses, which moves nothing: the CPU's own wake-up. Prints the medians in ms;
never asserts. Run it on an idle host: any other process moving tasks between cgroups
keeps the kernel's rwsem writer-friendly and hides the effect.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.host_settings import cgroup_fast_moves  # noqa: E402

PAUSES_S = (0.0, 0.005, 0.02, 0.05, 0.3)


def main() -> None:
    """Time the moves and the bare starts, both ways, and print one table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--hierarchy", default="cpu", help="a v1 hierarchy under /sys/fs/cgroup")
    args = parser.parse_args()
    root = Path("/sys/fs/cgroup") / args.hierarchy
    if not (root / "cgroup.procs").is_file():
        raise SystemExit(f"{root} is not a cgroup v1 hierarchy")
    group = root / f"bench-attach-{os.getpid()}"
    group.mkdir()
    child = subprocess.Popen(["sleep", "600"])

    def move(target: Path) -> float:
        started = time.perf_counter()
        (target / "cgroup.procs").write_text(str(child.pid))
        return (time.perf_counter() - started) * 1000

    def bare_start() -> float:
        started = time.perf_counter()
        subprocess.run(["/bin/true"], check=True)
        return (time.perf_counter() - started) * 1000

    def median_after(pause_s: float, what: str) -> float:
        values = []
        for _ in range(args.moves):
            time.sleep(pause_s)
            if what == "move":
                values.append(move(group))
                move(root)
            else:
                values.append(bare_start())
        return statistics.median(values)

    print("median ms after a pause of " + " ".join(f"{p * 1000:>7.0f} ms" for p in PAUSES_S))
    try:
        for tune in (False, True):
            with cgroup_fast_moves(tune) as applied:
                if tune and not applied.get("cgroup_favordynmods"):
                    raise SystemExit(f"--tune's mount failed: {applied}")
                for what in ("move", "fork+exec"):
                    cells = " ".join(f"{median_after(p, what):>10.2f}" for p in PAUSES_S)
                    label = f"{what}{' (--tune)' if tune else ''}"
                    print(f"{label:<26} {cells}")
    finally:
        child.kill()
        child.wait()
        group.rmdir()


if __name__ == "__main__":
    main()
