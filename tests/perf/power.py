"""Does the verdict keep its promises? A/A error rates, power against the printed MDE.

Usage: .venv/bin/python tests/perf/power.py [--trials N] [--seed S]

Simulates two sides, each R runs of K blocks of 10 samples, with 10% sample noise, 5%
block noise and a run effect of 0, 5 or 10% (log-normal), for R in {1, 2, 3, 6} and K in
{1, 3, 6}, and compares them with ``compare_blocks`` exactly as ``bench compare`` does
across runs (runs labelled; a single run a side gets the true run level as a
calibration). Prints, per design and run effect:

- the A/A rates of "slower" and "faster" (at most 2.5% each is the promise);
- the share of A/A trials called "equivalent within 5%";
- the median printed MDE, and the power at a true +10%: measured, and predicted from the
  design's standard error by the same rule (significant and beyond the margin); the two
  should agree within 5 points.

Prints; never asserts.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.analysis.verdict import BlockNoise, compare_blocks  # noqa: E402

SAMPLE_SD = 0.10
BLOCK_SD = 0.05
SAMPLES = 10
MARGIN = 0.05


def side(
    rng: np.random.Generator, runs: int, blocks: int, run_sd: float, shift: float, tag: str
) -> tuple[list[np.ndarray], list[str]]:
    """One side's blocks and the run of each."""
    values: list[np.ndarray] = []
    labels: list[str] = []
    for run in range(runs):
        run_effect = rng.normal(0.0, run_sd)
        for _ in range(blocks):
            centre = math.log(0.1 * shift) + run_effect + rng.normal(0.0, BLOCK_SD)
            values.append(np.exp(centre + rng.normal(0.0, SAMPLE_SD, SAMPLES)))
            labels.append(f"{tag}{run}")
    return values, labels


def trial(
    rng: np.random.Generator, runs: int, blocks: int, run_sd: float, shift: float
) -> tuple[str, float | None, float | None, float | None]:
    """(outcome, printed MDE, SE on the log scale, df) of one comparison."""
    base, base_runs = side(rng, runs, blocks, run_sd, 1.0, "a")
    cont, cont_runs = side(rng, runs, blocks, run_sd, shift, "b")
    # the block median's own noise: the sample noise through a median of 10
    block_level = math.sqrt(BLOCK_SD**2 + (1.2533 * SAMPLE_SD) ** 2 / SAMPLES)
    calibration = BlockNoise(
        sigma_log=block_level,
        sigma_abs=0.1 * block_level,
        df=40,
        blocks=48,
        run_sigma_log=run_sd if run_sd > 0 else 1e-9,
        run_sigma_abs=0.1 * run_sd,
        run_df=12.0,
        runs=12,
    )
    noise = calibration if runs == 1 else None
    verdict = compare_blocks(
        base,
        cont,
        min_effect=MARGIN,
        runs_baseline=base_runs,
        runs_contender=cont_runs,
        noise_baseline=noise,
        noise_contender=noise,
    )
    se = None
    if verdict.ratio_ci_high is not None and verdict.df is not None and verdict.ratio is not None:
        critical = float(stats.t.ppf(0.975, verdict.df))
        se = (math.log(verdict.ratio_ci_high) - math.log(verdict.ratio)) / critical
    return verdict.outcome, verdict.mde, se, verdict.df


def predicted_power(se: float, df: float, effect: float) -> float:
    """P(significant and beyond the margin) for a true log effect."""
    critical = float(stats.t.ppf(0.975, df))
    threshold = max(critical * se, math.log1p(MARGIN))
    return float(stats.t.sf((threshold - effect) / se, df))


def main() -> None:
    """Every design x run effect, one line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"{'R':>2} {'K':>2} {'run sd':>6} | {'A/A slower':>10} {'faster':>7} {'equiv':>6} | "
        f"{'MDE':>6} {'+10% found':>10} {'predicted':>9} {'gap':>5}"
    )
    for run_sd in (0.0, 0.05, 0.10):
        for runs in (1, 2, 3, 6):
            for blocks in (1, 3, 6):
                if runs == 1 and blocks == 1:
                    continue
                aa = [trial(rng, runs, blocks, run_sd, 1.0) for _ in range(args.trials)]
                shifted = [trial(rng, runs, blocks, run_sd, 1.10) for _ in range(args.trials)]
                outcomes = [o for o, _, _, _ in aa]
                found = sum(o == "slower" for o, _, _, _ in shifted) / args.trials
                mdes = [m for _, m, _, _ in shifted if m is not None]
                predictions = [
                    predicted_power(se, df, math.log(1.10))
                    for _, _, se, df in shifted
                    if se is not None and df is not None and se > 0
                ]
                predicted = statistics.mean(predictions) if predictions else float("nan")
                print(
                    f"{runs:>2} {blocks:>2} {run_sd:>6.0%} | "
                    f"{outcomes.count('slower') / args.trials:>10.1%} "
                    f"{outcomes.count('faster') / args.trials:>7.1%} "
                    f"{outcomes.count('equivalent') / args.trials:>6.1%} | "
                    f"{statistics.median(mdes) if mdes else float('nan'):>6.1%} "
                    f"{found:>10.1%} {predicted:>9.1%} {abs(found - predicted) * 100:>5.1f}"
                )


if __name__ == "__main__":
    main()
