"""Random interrupts of real runs: does anything leak, how fast does bench stop, what is kept.

Usage: .venv/bin/python tests/perf/interrupts.py [N] [--seed S] [--max-delay-s T]
                                                 [--scenario FILE ...]

N times (default 50): start ``bench run`` on a scenario picked at random (default: every
file in scenarios/), wait a random 0.5..T seconds, send SIGINT or SIGTERM (or, one time
in five, SIGKILL: then ``bench clean`` must find what the dead run left), and measure:
- the stop time, signal to exit;
- the exit code (130 for an interrupt; a run that finished first is counted apart);
- samples kept: lines in samples.jsonl against the counts run.json recorded;
- leftovers of that run on every backend (by its run suffix) after it exited (after
  ``bench clean`` for SIGKILL), which must be 0.
Prints one line per interrupt and a summary. Never asserts: it reports.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.backends import backend_names, get_backend  # noqa: E402
from bench.errors import BenchError  # noqa: E402
from bench.ownership import instance_run_suffix, run_suffix  # noqa: E402

BENCH = [sys.executable, "-m", "bench"]


def leftovers_of(suffix: str) -> dict[str, list[str]]:
    """Instances of one run still present, per backend."""
    found: dict[str, list[str]] = {}
    for name in backend_names():
        try:
            backend = get_backend(name)
            backend.check_available()
        except BenchError:
            continue
        try:
            mine = [n for n in backend.leftovers() if instance_run_suffix(n) == suffix]
        finally:
            backend.close()
        if mine:
            found[name] = mine
    return found


def main() -> None:
    """Interrupt N runs at random and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n", nargs="?", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay-s", type=float, default=40.0)
    parser.add_argument("--scenario", action="append", default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    scenarios = args.scenario or sorted(str(p) for p in (REPO / "scenarios").glob("*.yaml"))
    results = Path(tempfile.mkdtemp(prefix="bench-interrupts-"))
    stops: list[float] = []
    leaks = 0
    finished_first = 0
    lost = 0
    for index in range(args.n):
        scenario = rng.choice(scenarios)
        how = rng.choice(
            [signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
        )
        delay_s = rng.uniform(0.5, args.max_delay_s)
        before = set(results.glob("*/*"))
        proc = subprocess.Popen(
            [*BENCH, "run", scenario, "--results", str(results), "--no-report"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay_s)
        sent = time.monotonic()
        proc.send_signal(how)
        try:
            _, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        stop_s = time.monotonic() - sent
        new = sorted(set(results.glob("*/*")) - before)
        if not new:
            print(
                f"{index:>3} {Path(scenario).name:<20} {how.name:<7} at {delay_s:5.1f} s: "
                f"no run directory yet (exit {proc.returncode})"
            )
            continue
        run_dir = new[0]
        run = json.loads((run_dir / "run.json").read_text())
        suffix = run_suffix(run["run_id"])
        if how == signal.SIGKILL:
            subprocess.run([*BENCH, "clean"], cwd=REPO, capture_output=True, timeout=300)
        left = leftovers_of(suffix)
        lines = [line for line in (run_dir / "samples.jsonl").read_text().splitlines() if line]
        counts = run.get("counts") or {}
        recorded = counts.get("samples", 0) + counts.get("noise", 0)
        status = run.get("status")
        if proc.returncode == 0:
            finished_first += 1
        elif how != signal.SIGKILL:
            stops.append(stop_s)
            if len(lines) != recorded:
                lost += 1
        leaks += bool(left)
        print(
            f"{index:>3} {Path(scenario).name:<20} {how.name:<7} at {delay_s:5.1f} s: "
            f"exit {proc.returncode}, stopped in {stop_s:5.2f} s, status {status}, "
            f"{len(lines)} lines kept (run.json says {recorded}), leftovers {left or 0}"
            + (f"  stderr: {stderr.strip().splitlines()[-1][:120]}" if stderr.strip() else "")
        )
    print(
        f"\n{args.n} interrupts: {leaks} leaked, {finished_first} finished before the signal, "
        f"{lost} with samples.jsonl and run.json disagreeing"
    )
    if stops:
        print(
            f"stop time (SIGINT/SIGTERM): median {statistics.median(stops):.2f} s, "
            f"max {max(stops):.2f} s, n={len(stops)}"
        )


if __name__ == "__main__":
    main()
