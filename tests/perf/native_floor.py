"""The native floor: process startup after a process, after a container, after a pause.

Usage: .venv/bin/python tests/perf/native_floor.py [--samples N] [--repeat K]

Runs, in this process, the same small scenarios four ways: with and without the wait for
quiet engines before each sample (bench.quiescence; switched off here by replacing
``RunContext.wait_quiet``, which a user cannot do), and with and without ``--tune``
(/dev/cpu_dma_latency held at 0). For each way it prints the median process startup to
READY after a process sample, after a docker sample, and after a 300 ms pause, with the
median wait for quiet. Prints; never asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.metrics.base import RunContext, RunOptions  # noqa: E402
from bench.quiescence import Quiet  # noqa: E402
from bench.results import read_samples  # noqa: E402
from bench.runner import run_scenario  # noqa: E402
from bench.scenario import parse_scenario  # noqa: E402

MIXED = (
    "name: floor-mixed\nbackends: [process, docker]\nmetrics: [startup]\n"
    "samples: {n}\nwarmups: 2\nsettle_s: 0.02\nrepeats: {k}\nrepeat_gap_s: 1\n"
)
PAUSED = (
    "name: floor-paused\nbackends: [process]\nmetrics: [startup]\n"
    "samples: {n}\nwarmups: 2\nsettle_s: 0.3\nrepeats: {k}\nrepeat_gap_s: 1\n"
)
BACK_TO_BACK = (
    "name: floor-process\nbackends: [process]\nmetrics: [startup]\n"
    "samples: {n}\nwarmups: 2\nsettle_s: 0\nrepeats: {k}\nrepeat_gap_s: 1\n"
)


def measure(text: str, results: Path, tune: bool) -> list[dict[str, object]]:
    """The process startup samples of one run of ``text``."""
    outcome = run_scenario(
        parse_scenario(text), text, "floor", results, options=RunOptions(tune=tune)
    )
    return [
        r
        for r in read_samples(outcome.directory).records
        if r["metric"] == "startup" and r["backend"] == "process" and r["ok"] and not r["warmup"]
    ]


def main() -> None:
    """Measure the floor four ways and print one table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    real_wait = RunContext.wait_quiet
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        for quiet in (False, True):
            RunContext.wait_quiet = (  # type: ignore[method-assign]
                real_wait if quiet else (lambda self: Quiet(0.0, True, 0))
            )
            for tune in (False, True):
                by_case: dict[str, list[float]] = defaultdict(list)
                waits: list[float] = []
                for name, template in (
                    ("mixed", MIXED),
                    ("paused", PAUSED),
                    ("back to back", BACK_TO_BACK),
                ):
                    text = template.format(n=args.samples, k=args.repeat)
                    for record in measure(text, Path(tmp) / f"{quiet}{tune}{name}", tune):
                        labels = record["labels"]
                        assert isinstance(labels, dict)
                        after = labels.get("after_backend")
                        if name == "mixed":
                            case = f"after {after}" if after in ("process", "docker") else None
                        else:
                            case = "after a 300 ms pause" if name == "paused" else "back to back"
                        if case is not None:
                            by_case[case].append(float(record["value"]) * 1000)  # type: ignore[arg-type]
                        waits.append(float(labels.get("quiet_wait_s") or 0) * 1000)
                rows.append((quiet, tune, by_case, statistics.median(waits)))
    RunContext.wait_quiet = real_wait  # type: ignore[method-assign]
    cases = ["back to back", "after process", "after docker", "after a 300 ms pause"]
    print("process startup to READY, median ms (n); quiet = wait for idle engines first")
    print(f"{'quiet':<6} {'tune':<5} " + " ".join(f"{c:>22}" for c in cases) + "   wait ms")
    for quiet, tune, by_case, wait in rows:
        cells = []
        for case in cases:
            values = by_case.get(case, [])
            cells.append(
                f"{statistics.median(values):>16.2f} ({len(values):>3})" if values else f"{'-':>22}"
            )
        print(
            f"{'yes' if quiet else 'no':<6} {'yes' if tune else 'no':<5} "
            + " ".join(cells)
            + f"   {wait:.1f}"
        )


if __name__ == "__main__":
    main()
