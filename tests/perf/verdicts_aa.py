"""Do bench's verdicts survive an A/A test, and do they still see a real slowdown?

Prints measured figures; never asserts (the machines are shared and noisy).

Phases (every run goes to ``--results``, default /tmp/bench-verdicts-aa/results):

1. **Calibration**: ``bench calibrate SCENARIO --runs 2 --repeat 3`` writes this host's
   block-to-block noise to ``results/<host>/calibration.json``; every later compare
   finds it there (each figure is also printed without it, ``--no-calibration``).
2. **Specificity**: 6 back-to-back runs of the scenario (one block each) and one run
   with ``--repeat 6``, compared in every A/A way the CLI allows: each pair of runs
   (``bench compare Ri Rj``), every 3-vs-3 split of the six runs
   (``bench compare R1 R2 R3 -- R4 R5 R6``), and every 3-vs-3 split of the repeated
   run's blocks (``bench compare RUN@0,1,2 -- RUN@3,4,5``). Counts per backend:
   slower/faster (should be 0), equivalent, inconclusive, and the margins used. For
   contrast, the verdict bench used before (pooled Mann-Whitney U p < 0.05 and >= 5%
   effect) is computed on the same pairs.
3. **Sensitivity, disturbance**: a contender run (``--repeat 3``) measured while a
   ``nice -n 19`` busy loop pinned on each core runs (started and stopped here), compared
   with the six runs: ratio, CI, verdict per backend, and the background-load flag.
4. **Sensitivity, injected slowdown**: contender runs with ``bench run --inject-spin-ms X``
   (the probe spins X ms before READY in every backend; the scenario and its hash are
   unchanged) for a ladder of X, each compared with the six runs: the smallest X
   called ``slower`` per backend.
5. **Speed**: ``bench compare`` of two runs of the scenario from the CLI (36 samples each
   for the quick suite), median of 5 wall-clock timings (target < 2 s).

Usage: .venv/bin/python tests/perf/verdicts_aa.py [--scenario scenarios/quick.yaml]
       [--results DIR] [--ladder-ms 2,5,10,20,50,100,200,400] [--ladder-repeat 2]
       [--skip-calibrate] [--reuse]  (--reuse: take the runs already in DIR)
The quick suite takes ~40 s per block (the TCG guest ~2 s per sample): about 30 min.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, "-m", "bench"]
DIRECTIONAL = {"slower", "faster", "larger", "smaller", "higher", "lower"}


def bench(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a bench command from the repository, output captured."""
    result = subprocess.run(
        [*BENCH, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check and result.returncode not in (0, 1):
        raise SystemExit(f"bench {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def run_scenario(scenario: str, results: Path, *extra: str) -> Path:
    """``bench run`` once; the new run directory."""
    before = set(results.glob("*/*/run.json"))
    started = time.monotonic()
    bench("run", scenario, "--results", str(results), "--no-report", *extra)
    (new,) = set(results.glob("*/*/run.json")) - before
    print(
        f"  run {new.parent.name} ({' '.join(extra) or 'plain'}): {time.monotonic() - started:.0f} s"
    )
    return new.parent


def compare_json(*args: str) -> dict[str, Any]:
    """``bench compare ... --format json``, parsed."""
    return json.loads(bench("compare", *args, "--format", "json").stdout)  # type: ignore[no-any-return]


def startup_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the startup value (one per backend)."""
    return [r for r in report["rows"] if r["metric"] == "startup" and r["stage"] == "value"]


class Tally:
    """Outcomes per backend of many A/A comparisons, and the margins they used."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.margins: dict[str, list[str]] = defaultdict(list)
        self.needed: dict[str, list[float]] = defaultdict(list)

    def add(self, report: dict[str, Any]) -> None:
        for row in startup_rows(report):
            outcome = row["outcome"]
            if row["noise"] == "unknown":
                outcome = "inconclusive (noise unknown)"
            self.outcomes[row["backend"]][outcome] += 1
            self.margins[row["backend"]].append(
                f"{row['margin'] * 100:.1f}% ({row['margin_source']})"
            )
            if row["noise"] != "unknown" and row["ratio_ci_low"] and row["ratio_ci_high"]:
                # the margin at which this comparison would have read "equivalent"
                low, high = row["ratio_ci_low"], row["ratio_ci_high"]
                self.needed[row["backend"]].append(max(high, 1 / low) - 1)

    def print(self, title: str) -> None:
        print(f"  {title}")
        for backend, counts in sorted(self.outcomes.items()):
            directional = sum(n for o, n in counts.items() if o in DIRECTIONAL)
            margins = Counter(self.margins[backend]).most_common(2)
            shown = ", ".join(f"{m} x{n}" for m, n in margins)
            needed = self.needed.get(backend)
            equivalent_at = (
                f"; equivalent at a margin of ±{statistics.median(needed) * 100:.0f}% (median)"
                if needed
                else ""
            )
            print(
                f"    {backend:<8} slower/faster {directional}, "
                + ", ".join(f"{o} {n}" for o, n in sorted(counts.items()) if o not in DIRECTIONAL)
                + f"; margin {shown}{equivalent_at}"
            )


def pooled_mann_whitney(runs: list[Path]) -> Counter[str]:
    """Pairs of single runs the old pooled verdict (MWU p < 0.05 and >= 5%) called different."""
    sys.path.insert(0, str(REPO))
    import numpy as np
    from scipy.stats import mannwhitneyu

    from bench.analysis.dataset import load_dataset

    frame = load_dataset(runs).samples
    frame = frame[(frame["metric"] == "startup") & ~frame["warmup"] & frame["ok"]]
    called: Counter[str] = Counter()
    for backend, part in frame.groupby("backend", observed=True):
        by_run = {
            str(r): g["value"].to_numpy(dtype=np.float64)
            for r, g in part.groupby("run_id", observed=True)
        }
        for a, b in itertools.combinations(sorted(by_run), 2):
            x, y = by_run[a], by_run[b]
            effect = abs(np.median(y) / np.median(x) - 1)
            if mannwhitneyu(x, y).pvalue < 0.05 and effect >= 0.05:
                called[str(backend)] += 1
    return called


def specificity(runs: list[Path], repeated: Path) -> None:
    """Every A/A comparison the CLI allows, with and without the calibration."""
    for flag, name in (
        ((), "with the calibration"),
        (("--no-calibration",), "without calibration"),
    ):
        pairs, splits, blocks = Tally(), Tally(), Tally()
        for a, b in itertools.combinations(runs, 2):
            pairs.add(compare_json(str(a), str(b), *flag))
        indices = range(len(runs))
        for first in itertools.combinations(indices, len(runs) // 2):
            if 0 not in first:
                continue  # each split once
            rest = [i for i in indices if i not in first]
            splits.add(
                compare_json(
                    *(str(runs[i]) for i in first), "--", *(str(runs[i]) for i in rest), *flag
                )
            )
        for first in itertools.combinations(range(6), 3):
            if 0 not in first:
                continue
            rest = [i for i in range(6) if i not in first]
            blocks.add(
                compare_json(
                    f"{repeated}@{','.join(map(str, first))}",
                    "--",
                    f"{repeated}@{','.join(map(str, rest))}",
                    *flag,
                )
            )
        print(f"specificity, {name}:")
        pairs.print(f"{len(runs) * (len(runs) - 1) // 2} pairs of single runs (1 block vs 1 block)")
        splits.print("10 splits of the six runs, 3 runs vs 3 runs")
        blocks.print("10 splits of one run's 6 blocks, 3 blocks vs 3 blocks")
    called = pooled_mann_whitney(runs)
    print(
        "  for contrast, the old pooled verdict (Mann-Whitney U on every sample, p < 0.05 and "
        f">= 5%) called these pairs of identical runs different: {dict(called) or 'none'} "
        f"of {len(runs) * (len(runs) - 1) // 2} per backend"
    )


def busy_loops() -> list[subprocess.Popen[bytes]]:
    """A nice'd busy loop pinned on each core."""
    loops = []
    for cpu in range(os.cpu_count() or 1):
        loops.append(
            subprocess.Popen(
                ["nice", "-n", "19", "taskset", "-c", str(cpu), "sh", "-c", "while :; do :; done"]
            )
        )
    return loops


def stop(loops: list[subprocess.Popen[bytes]]) -> None:
    """Stop the loops this script started (by their process ids)."""
    for loop in loops:
        loop.terminate()
    for loop in loops:
        try:
            loop.wait(timeout=10)
        except subprocess.TimeoutExpired:
            loop.kill()
            loop.wait()


def describe(row: dict[str, Any]) -> str:
    """``1.31 [1.22, 1.40] +12.4 ms: 1.31x slower (margin 5%, MDE 9%)``."""
    ratio = row["ratio"]
    if ratio is None:
        return str(row["verdict"])
    ci = (
        f" [{row['ratio_ci_low']:.3f}, {row['ratio_ci_high']:.3f}]"
        if row["ratio_ci_low"] is not None
        else ""
    )
    mde = f"{row['mde'] * 100:.0f}%" if row["mde"] is not None else "-"
    return (
        f"{ratio:.3f}{ci}, {row['difference'] * 1e3:+.1f} ms: {row['verdict']} "
        f"(margin {row['margin'] * 100:.1f}% {row['margin_source']}, MDE {mde}, "
        f"blocks {row['blocks_baseline']}/{row['blocks_contender']})"
    )


def sensitivity_disturbance(scenario: str, results: Path, runs: list[Path]) -> None:
    """A contender measured under a nice'd busy loop per core, against the six runs."""
    loops = busy_loops()
    try:
        time.sleep(2)
        contender = run_scenario(scenario, results, "--repeat", "3")
    finally:
        stop(loops)
    report = compare_json(*map(str, runs), "--", str(contender))
    print(f"sensitivity, nice'd busy loop on each of {len(loops)} cores (6 runs vs 3 blocks):")
    for row in startup_rows(report):
        print(f"    {row['backend']:<8} {describe(row)}")
    load = report["background_load"].get("B")
    if load:
        print(f"    background load flagged: {load['flagged']}: {load['summary']}")


def sensitivity_injected(
    scenario: str, results: Path, runs: list[Path], ladder: list[float], repeat: int
) -> None:
    """Contenders with an injected spin before READY; the smallest detected per backend."""
    smallest: dict[str, float] = {}
    backends: set[str] = set()
    print(f"sensitivity, injected spin before READY (6 runs vs {repeat} blocks):")
    for spin_ms in ladder:
        if backends and backends <= set(smallest):
            break  # every backend already detected a smaller spin
        contender = run_scenario(
            scenario, results, "--repeat", str(repeat), "--inject-spin-ms", f"{spin_ms:g}"
        )
        report = compare_json(*map(str, runs), "--", str(contender))
        for row in startup_rows(report):
            backends.add(row["backend"])
            print(f"    +{spin_ms:g} ms {row['backend']:<8} {describe(row)}")
            if row["outcome"] == "slower":
                smallest.setdefault(row["backend"], spin_ms)
    for backend in sorted(backends):
        found = smallest.get(backend)
        text = f"{found:g} ms" if found is not None else f"not detected up to {ladder[-1]:g} ms"
        print(f"  smallest injected slowdown called slower, {backend}: {text}")


def compare_speed(runs: list[Path]) -> None:
    """Wall time of ``bench compare A B`` from the CLI, median of five."""
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        bench("compare", str(runs[0]), str(runs[1]))
        timings.append(time.perf_counter() - started)
    print(
        f"bench compare of two runs from the CLI: median {statistics.median(timings):.2f} s "
        f"(min {min(timings):.2f}, max {max(timings):.2f}; target < 2 s)"
    )


def main() -> None:
    """Run every phase and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="scenarios/quick.yaml")
    parser.add_argument("--results", type=Path, default=Path("/tmp/bench-verdicts-aa/results"))
    parser.add_argument("--ladder-ms", default="2,5,10,20,50,100,200,400")
    parser.add_argument("--ladder-repeat", type=int, default=2)
    parser.add_argument("--skip-calibrate", action="store_true")
    parser.add_argument("--skip-sensitivity", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="reuse the runs already in --results")
    args = parser.parse_args()
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    print(f"host load at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    state = results / "verdicts_aa_runs.json"
    known = json.loads(state.read_text()) if args.reuse and state.exists() else {}
    if not args.skip_calibrate and not known.get("calibrated"):
        started = time.monotonic()
        bench("calibrate", args.scenario, "--runs", "2", "--repeat", "3", "--results", str(results))
        known["calibrated"] = True
        print(f"calibrated in {time.monotonic() - started:.0f} s")
    if "runs" not in known:
        known["runs"] = [str(run_scenario(args.scenario, results)) for _ in range(6)]
        state.write_text(json.dumps(known))
    if "repeated" not in known:
        known["repeated"] = str(run_scenario(args.scenario, results, "--repeat", "6"))
        state.write_text(json.dumps(known))
    runs = [Path(r) for r in known["runs"]]
    calibration = next(results.glob("*/calibration.json"), None)
    if calibration is not None:
        entries = json.loads(calibration.read_text())["entries"]
        for entry in entries:
            if entry["metric"] == "startup" and entry["stage"] == "value":
                print(
                    f"calibrated noise {entry['backend']:<8} {entry['noise_fraction'] * 100:.1f}% "
                    f"({entry['blocks']} blocks of {entry['scenario']})"
                )
    specificity(runs, Path(known["repeated"]))
    if not args.skip_sensitivity:
        sensitivity_disturbance(args.scenario, results, runs)
        ladder = [float(x) for x in args.ladder_ms.split(",")]
        sensitivity_injected(args.scenario, results, runs, ladder, args.ladder_repeat)
    compare_speed(runs)
    print(f"host load at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
