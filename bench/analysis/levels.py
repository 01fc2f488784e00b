"""Two levels of noise: between runs and between the blocks of a run (variance components).

Kalibera and Jones (*Rigorous Benchmarking in Reasonable Time*, ISMM 2013): a benchmark
repeats at several levels, and each level adds noise of its own. bench has two: runs
(a fresh ``bench run``: the daemons' state, the page cache, the neighbours) and blocks
(repeats of the plan inside a run). Samples inside a block are summarised by the block's
median before anything here sees them.

With R runs of K_r blocks, values y_rk (log block medians for ratio quantities), the
one-way random-effects model is y_rk = mu + a_r + e_rk with Var(a) = sigma2_run and
Var(e) = sigma2_block. The estimates are the ANOVA (method of moments) ones, exact for
unbalanced designs: MSW = within-run mean square (sigma2_block, N - R degrees of
freedom), MSB = between-run mean square, and sigma2_run = (MSB - MSW) / n0 with
n0 = (N - sum K_r^2 / N) / (R - 1), clamped at 0. Their degrees of freedom: N - R for
sigma2_block; Satterthwaite's for the difference of mean squares for sigma2_run.

Why ANOVA and not REML: the designs are tiny (2-6 runs of 2-6 blocks), closed forms
cannot fail to converge, and for balanced designs REML and ANOVA give the same estimate
whenever it is positive.

The variance of a side's centre (the mean of its run means) with R runs of K blocks is
``sigma2_run / R + sigma2_block / (R K)``; a design's minimum detectable effect follows
(``design_mde``), and so does the cheapest design that reaches a target (``plan``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.analysis.stats import FloatArray, scipy_special

POWER = 0.80
CONFIDENCE = 0.95


@dataclass(frozen=True)
class VarianceComponents:
    """The two levels of one quantity's noise, on the scale the comparison works on."""

    run_var: float  # sigma2_run, clamped at 0
    run_df: float
    block_var: float  # sigma2_block
    block_df: float
    runs: int
    blocks: int  # in all

    @property
    def blocks_per_run(self) -> float:
        """The mean number of blocks a run had."""
        return self.blocks / self.runs if self.runs else 0.0

    def centre_variance(self, runs: int, blocks_per_run: float) -> float:
        """Variance of a side's centre with ``runs`` runs of ``blocks_per_run`` blocks."""
        return (self.run_var + self.block_var / blocks_per_run) / runs


def estimate(values: Sequence[float] | FloatArray, runs: Sequence[str]) -> VarianceComponents:
    """ANOVA estimates of sigma2_run and sigma2_block (see the module docstring).

    ``values`` are block values, ``runs`` the run of each. Needs two runs, or one run
    with two blocks (then only the block level is known: ``run_df`` is 0).
    """
    y = np.asarray(values, dtype=np.float64)
    labels = np.asarray(list(runs), dtype=object)
    if y.size != labels.size:
        raise ValueError("one run label per value")
    groups = [y[labels == run] for run in dict.fromkeys(labels.tolist())]
    count, total = len(groups), int(y.size)
    within_df = total - count
    if within_df <= 0 and count < 2:
        raise ValueError("variance components need two runs, or two blocks of one run")
    ss_within = float(sum(((g - g.mean()) ** 2).sum() for g in groups))
    ms_within = ss_within / within_df if within_df > 0 else math.nan
    if count < 2:
        return VarianceComponents(0.0, 0.0, ms_within, float(within_df), count, total)
    grand = float(y.mean())
    ss_between = float(sum(g.size * (g.mean() - grand) ** 2 for g in groups))
    between_df = count - 1
    ms_between = ss_between / between_df
    n0 = (total - sum(g.size**2 for g in groups) / total) / between_df
    if within_df <= 0:
        # one block per run: the runs' spread holds both levels, indistinguishable
        return VarianceComponents(ms_between, float(between_df), 0.0, 0.0, count, total)
    run_var = max(0.0, (ms_between - ms_within) / n0)
    if run_var > 0:
        denominator = ms_between**2 / between_df + ms_within**2 / within_df
        run_df = (ms_between - ms_within) ** 2 / denominator if denominator > 0 else 1.0
    else:
        run_df = float(between_df)
    return VarianceComponents(run_var, max(1.0, run_df), ms_within, float(within_df), count, total)


def satterthwaite(terms: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance terms."""
    total = sum(term for term, _ in terms)
    denominator = sum(term**2 / df for term, df in terms if df > 0)
    if total <= 0 or denominator <= 0:
        return max(1.0, min((df for _, df in terms), default=1.0))
    return max(1.0, total**2 / denominator)


def design_mde(
    components: VarianceComponents,
    runs: int,
    blocks_per_run: float,
    *,
    power: float = POWER,
    confidence: float = CONFIDENCE,
) -> float:
    """The smallest true effect a comparison of two such sides tells from none, at ``power``.

    ``(t(1 - alpha/2, df) + t(power, df)) x SE``, SE of the difference of two
    centres each with ``runs`` runs of ``blocks_per_run`` blocks, df from the design
    (2 (R - 1) at the run level; with a single run a side, Satterthwaite's over the
    calibrated run level and the blocks).
    """
    special = scipy_special()
    variance = 2 * components.centre_variance(runs, blocks_per_run)
    if runs > 1:
        df = 2.0 * (runs - 1)
    else:  # one run a side: the run level comes from the calibration
        df = satterthwaite(
            [
                (2 * components.run_var, components.run_df),
                (2 * components.block_var / blocks_per_run, 2.0 * max(1.0, blocks_per_run - 1)),
            ]
        )
    tail = 0.5 + confidence / 2
    factor = float(special.stdtrit(df, tail)) + float(special.stdtrit(df, power))
    return factor * math.sqrt(variance)


@dataclass(frozen=True)
class Design:
    """How many runs of how many blocks of how many samples, and what that buys."""

    runs: int
    blocks_per_run: int
    samples_per_block: int
    mde: float
    cost_s: float
    meets: bool
    log_scale: bool = False  # the MDE is a log ratio (expm1 gives the fraction)


def plan(
    components: VarianceComponents,
    target_mde: float,
    *,
    run_cost_s: float,
    block_cost_s: float,
    samples_per_block: int,
    max_runs: int = 12,
    max_blocks: int = 12,
) -> Design:
    """The cheapest design (runs x blocks, per side) whose MDE is at most ``target_mde``.

    Kalibera and Jones's dimensioning: a run costs its fixed part (start-up, artefact
    checks: ``run_cost_s``) plus its blocks (``block_cost_s`` each). Samples per block
    stay as measured (their noise is inside the block median's). When no design within
    the bounds reaches the target, the one with the smallest MDE is returned, ``meets``
    False.
    """
    best: Design | None = None
    closest: Design | None = None
    for runs in range(1, max_runs + 1):
        for blocks in range(1, max_blocks + 1):
            if runs == 1 and blocks == 1:
                continue
            if runs == 1 and components.run_df <= 0:
                continue  # one run a side needs a measured run level
            mde = design_mde(components, runs, blocks)
            cost = runs * (run_cost_s + blocks * block_cost_s)
            design = Design(runs, blocks, samples_per_block, mde, cost, mde <= target_mde)
            if design.meets and (best is None or cost < best.cost_s):
                best = design
            if closest is None or mde < closest.mde:
                closest = design
    assert closest is not None
    return best or closest
