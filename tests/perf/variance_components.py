"""Why bench estimates its two noise levels by ANOVA and not with statsmodels' MixedLM.

Usage: .venv/bin/python tests/perf/variance_components.py [--trials 200] [--seed 1]

Simulates calibrations of the size bench runs (R runs x K blocks, 5% run noise and 5%
block noise, log scale) and fits each two ways: ``bench.analysis.levels.estimate`` (a
one-way random-effects ANOVA, method of moments) and statsmodels' ``MixedLM`` by REML.
Prints, per design, how many MixedLM fits warned (boundary, failed optimisation) or did
not converge, and the median absolute difference between the two run-level estimates
where both are positive (REML equals ANOVA there for balanced data). Prints; never
asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.analysis.levels import estimate  # noqa: E402


def main() -> None:
    """Fit simulated calibrations both ways and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'R x K':>6} {'warned':>7} {'not converged':>14} {'both > 0':>9} {'median |diff|':>14}")
    for runs, blocks in [(2, 3), (3, 3), (3, 6), (6, 3)]:
        warned = unconverged = 0
        diffs = []
        for _ in range(args.trials):
            run_effect = rng.normal(0.0, 0.05, runs)
            y = np.repeat(run_effect, blocks) + rng.normal(0.0, 0.05, runs * blocks)
            labels = [f"r{i}" for i in np.repeat(np.arange(runs), blocks)]
            ours = estimate(list(y), labels)
            frame = pd.DataFrame({"y": y, "run": labels})
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fit = smf.mixedlm("y ~ 1", frame, groups=frame["run"]).fit(reml=True)
            warned += bool(caught)
            unconverged += not fit.converged
            theirs = float(fit.cov_re.iloc[0, 0])
            if fit.converged and ours.run_var > 0 and theirs > 1e-12:
                diffs.append(abs(ours.run_var - theirs) / ours.run_var)
        median = f"{statistics.median(diffs):.1%}" if diffs else "-"
        print(
            f"{runs} x {blocks:<2} {warned:>7} {unconverged:>14} {len(diffs):>9} {median:>14}"
            f"   (of {args.trials})"
        )


if __name__ == "__main__":
    main()
