"""Does bench's E-Divisive agree with MongoDB's signal-processing-algorithms?

Usage: .venv/bin/python tests/perf/changepoint_agreement.py --spa-python PY
       [--series 60] [--length 30] [--seed 7]

MongoDB's package (``signal_processing_algorithms.energy_statistics.e_divisive``) runs
the same E-Divisive statistic in its CI. It cannot be a dependency of bench: it pins
numpy<2 and gevent, and bench's pandas and scipy stack is on numpy 2. So this script
runs it in another interpreter (PY, e.g. a scratch venv with ``pip install
signal-processing-algorithms``) on the same series and compares, for null series (5%
log-normal noise), one step (+10% at a random index) and two steps (+10% then -10%):

- how often the two find exactly the same change points, or the same within one index;
- the false change points on null series and the steps found, each side;
- the time per series, each side, both with 999 permutations at alpha 0.05.

The two differ by design in small ways: the package averages within-segment distances
over n^2 (a V-statistic, bench over n(n-1)), lets a segment be one point long (bench
keeps three), and draws its permutations from numpy's global state. Prints; never
asserts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.analysis.changepoint import PERMUTATIONS, change_points  # noqa: E402

THEIRS = """
import json, sys, time
import numpy as np
from signal_processing_algorithms.energy_statistics.energy_statistics import e_divisive
np.random.seed(int(sys.argv[1]))
found, started = [], time.perf_counter()
for series in json.load(sys.stdin):
    found.append(sorted(int(i) for i in e_divisive(series, pvalue=0.05, permutations=999)))
print(json.dumps({"found": found, "seconds": time.perf_counter() - started}))
"""


def make_series(kind: str, length: int, rng: np.random.Generator) -> tuple[list[float], list[int]]:
    """One series of the kind and its true change points."""
    values = 100.0 * np.exp(rng.normal(0.0, 0.05, length))
    truth: list[int] = []
    if kind in ("step", "two steps"):
        at = int(rng.integers(5, length - 5))
        values[at:] *= 1.10
        truth.append(at)
        if kind == "two steps" and at + 8 < length - 3:
            back = int(rng.integers(at + 5, length - 3))
            values[back:] /= 1.10
            truth.append(back)
    return [float(v) for v in values], truth


def main() -> None:
    """Generate the series, run both, print the agreement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spa-python", required=True, help="an interpreter with the package")
    parser.add_argument("--series", type=int, default=60, help="series of each kind")
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    kinds = ["null", "step", "two steps"]
    cases = [
        (kind, *make_series(kind, args.length, rng)) for kind in kinds for _ in range(args.series)
    ]
    started = time.perf_counter()
    ours = [[p.index for p in change_points(series)] for _, series, _ in cases]
    ours_s = time.perf_counter() - started
    done = subprocess.run(
        [args.spa_python, "-c", THEIRS, str(args.seed)],
        input=json.dumps([series for _, series, _ in cases]),
        capture_output=True,
        text=True,
        check=True,
    )
    theirs_out = json.loads(done.stdout)
    theirs = theirs_out["found"]
    print(
        f"{args.series} series of each kind, {args.length} points, 5% noise, steps of 10%, "
        f"{PERMUTATIONS} permutations"
    )
    print(
        f"{'kind':<10} {'same':>5} {'within 1':>9} {'bench found/true':>17} {'package found/true':>19}"
    )
    for kind in kinds:
        rows = [
            (o, t, truth)
            for (k, _, truth), o, t in zip(cases, ours, theirs, strict=True)
            if k == kind
        ]
        same = sum(o == t for o, t, _ in rows)
        near = sum(
            len(o) == len(t) and all(abs(a - b) <= 1 for a, b in zip(o, t, strict=True))
            for o, t, _ in rows
        )
        ours_n = sum(len(o) for o, _, _ in rows)
        theirs_n = sum(len(t) for _, t, _ in rows)
        true_n = sum(len(truth) for _, _, truth in rows)
        print(
            f"{kind:<10} {same:>5} {near:>9} {ours_n:>11} / {true_n:<3} {theirs_n:>13} / {true_n:<3}"
        )
    total = len(cases)
    print(
        f"time per series: bench {ours_s / total * 1000:.0f} ms, "
        f"package {theirs_out['seconds'] / total * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
