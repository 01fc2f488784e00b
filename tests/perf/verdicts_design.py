"""The design bench calibrate recommends, tried for real: A/A, and an injected +10%.

Usage: .venv/bin/python tests/perf/verdicts_design.py --runs R --repeat K
       [--scenario scenarios/verdicts.yaml] [--results DIR] [--inject-ms 10,150]

Side A and side B are R runs each of ``--repeat K`` blocks of the same scenario on an
unchanged host (an A/A pair); each further side is R runs with ``bench run
--inject-spin-ms X`` (the probe spins X ms before READY in every backend; the scenario
and its hash are unchanged), one per X: choose each X as about 10% of one backend's
startup (10 ms for docker, 150 ms for a TCG libvirt guest here). Then ``bench compare A
-- B`` and ``bench compare A -- X`` for each X, and, per backend, the verdicts. Prints
the wall time one side costs. Prints; never asserts.
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
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, "-m", "bench"]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a bench command from the repository, output captured."""
    return subprocess.run(
        [*BENCH, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def side(scenario: str, results: Path, runs: int, repeat: int, spin_ms: float | None) -> list[str]:
    """R runs of the scenario; their directories."""
    directories = []
    for _ in range(runs):
        args = ["run", scenario, "--results", str(results), "--repeat", str(repeat)]
        args += ["--no-report", "--json"]
        if spin_ms:
            args += ["--inject-spin-ms", str(spin_ms)]
        done = bench(*args)
        if done.returncode not in (0, 1):
            raise SystemExit(f"bench run failed: {done.stderr[-500:]}")
        directories.append(json.loads(done.stdout)["directory"])
    return directories


def compare(base: list[str], other: list[str]) -> list[dict[str, Any]]:
    """The value rows of ``bench compare BASE -- OTHER``."""
    done = bench("compare", *base, "--", *other, "--format", "json", "--metric", "startup")
    if done.returncode != 0:
        raise SystemExit(f"bench compare failed: {done.stderr[-500:]}")
    return [r for r in json.loads(done.stdout)["rows"] if r["stage"] == "value"]


def main() -> None:
    """Measure the sides and print the verdicts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", default="scenarios/verdicts.yaml")
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--repeat", type=int, required=True)
    parser.add_argument("--inject-ms", default="10,150")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    results = args.results or Path(tempfile.mkdtemp(prefix="bench-design-"))
    started = time.monotonic()
    a = side(args.scenario, results, args.runs, args.repeat, None)
    side_s = time.monotonic() - started
    b = side(args.scenario, results, args.runs, args.repeat, None)
    print(f"design: {args.runs} runs x {args.repeat} blocks a side; one side took {side_s:.0f} s")
    for label, rows in [("A/A", compare(a, b))] + [
        (f"+{ms} ms", compare(a, side(args.scenario, results, args.runs, args.repeat, float(ms))))
        for ms in args.inject_ms.split(",")
    ]:
        for row in rows:
            print(
                f"{label:>9} {row['backend']:<8} ratio {row['ratio']:.3f} "
                f"[{row['ratio_ci_low']:.3f}, {row['ratio_ci_high']:.3f}] MDE "
                f"{(row['mde'] or 0) * 100:.1f}%  p {row['p_value']} / {row['p_adjusted']}  "
                f"{row['verdict']}"
            )
    print(f"results in {results}; total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
