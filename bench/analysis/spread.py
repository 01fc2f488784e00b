"""The standard error of a comparison: which noise, at which level, measured or calibrated.

A comparison's effect is the difference of two sides' centres; its variance is the sum of
the two centres' variances, each assembled here from *terms*: independent variance
estimates, each with its degrees of freedom and a coefficient (``1/R`` for the variance
of run means over R runs, ``1/K`` for the blocks of a single run). Two sides that use the
same estimate (one borrowed the other's) share its degrees of freedom, and the total's
degrees of freedom are Satterthwaite's over the distinct estimates.

The levels (``bench.analysis.levels``): across runs the unit is the run, and a side with
R >= 2 runs measures the variance of its run means itself (``S2 / R``); a side with one
run needs the run level from a calibration (``sigma2_run + sigma2_block / K``) or, failing
that, borrows the other side's run-mean variance (the same quantity on the same host);
with neither, the noise between runs is unknown. Within one run (blocks of one run, or
the backends of a run compared block by block) the unit is the block. A calibration
never lowers a side's variance below what its own data show: the larger of the two
counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.analysis.levels import satterthwaite
from bench.analysis.stats import FloatArray

MODE_RATIO = "ratio"
MODE_ABSOLUTE = "absolute"

NOISE_BLOCKS = "blocks"
NOISE_CALIBRATED = "calibration"
NOISE_BOTH = "blocks+calibration"
NOISE_UNKNOWN = "unknown"
NOISE_WITHIN_BLOCK = "within one block"


@dataclass(frozen=True)
class BlockNoise:
    """A quantity's noise on this host, measured by A/A repeats (``bench calibrate``).

    The block level: ``sigma_log`` is the SD of the log block medians inside a run (None
    when a median was <= 0), ``sigma_abs`` the same in the quantity's unit, ``df`` their
    degrees of freedom. The run level, beyond the blocks' (None when the calibration
    had a single run, or predates the two levels): ``run_sigma_log``, ``run_sigma_abs``,
    ``run_df``.
    """

    sigma_log: float | None
    sigma_abs: float
    df: float
    blocks: int
    source: str = "calibration"
    run_sigma_log: float | None = None
    run_sigma_abs: float | None = None
    run_df: float = 0.0
    runs: int = 0

    def sigma(self, mode: str) -> float | None:
        """The block-level SD on the scale a row of ``mode`` works on."""
        return self.sigma_log if mode == MODE_RATIO else self.sigma_abs

    def run_sigma(self, mode: str) -> float | None:
        """The run-level SD on the scale a row of ``mode`` works on (None: not measured)."""
        return self.run_sigma_log if mode == MODE_RATIO else self.run_sigma_abs


@dataclass(frozen=True)
class Term:
    """One variance estimate (of one unit), its degrees of freedom and its identity."""

    variance: float
    df: float
    key: str
    calibrated: bool


@dataclass(frozen=True)
class Spread:
    """The effect's standard error, its degrees of freedom, and where the noise came from."""

    se: float
    df: float
    noise: str
    notes: tuple[str, ...] = ()


# a side's centre variance: (term, coefficient) pairs
SideTerms = list[tuple[Term, float]]


def run_means(z: FloatArray, runs: Sequence[str]) -> FloatArray:
    """The mean of each run's block values, runs in their first-seen order."""
    labels = np.array(list(runs), dtype=object)
    return np.array([float(z[labels == run].mean()) for run in dict.fromkeys(runs)])


def _total(terms: SideTerms) -> float:
    return sum(term.variance * coefficient for term, coefficient in terms)


def _calibrated_block(noise: BlockNoise | None, mode: str) -> Term | None:
    sigma = noise.sigma(mode) if noise is not None else None
    if noise is None or sigma is None:
        return None
    # keyed by content: the same calibration looked up twice is one estimate, not two
    return Term(sigma**2, float(noise.df), f"cal-block{hash(noise)}", True)


def _calibrated_run(noise: BlockNoise | None, mode: str) -> Term | None:
    sigma = noise.run_sigma(mode) if noise is not None else None
    if noise is None or sigma is None or noise.run_df <= 0:
        return None
    return Term(sigma**2, float(noise.run_df), f"cal-run{hash(noise)}", True)


def block_side_terms(z: FloatArray, noise: BlockNoise | None, mode: str, index: int) -> SideTerms:
    """A side whose units are its K blocks: the larger of its own and the calibrated variance.

    Empty when neither is known (one block and no calibration).
    """
    choices: list[Term] = []
    if z.size > 1:
        choices.append(Term(float(np.var(z, ddof=1)), z.size - 1.0, f"blocks{index}", False))
    calibrated = _calibrated_block(noise, mode)
    if calibrated is not None:
        choices.append(calibrated)
    if not choices:
        return []
    return [(max(choices, key=lambda t: t.variance), 1 / z.size)]


def run_side_terms(
    z: FloatArray, runs: Sequence[str], noise: BlockNoise | None, mode: str, index: int
) -> SideTerms:
    """A side across runs: ``S2(run means) / R``, or one run's blocks plus the run level.

    Empty when the run level is unknown (one run, no calibration of it).
    """
    means = run_means(z, runs)
    count = means.size
    blocks_per_run = z.size / count
    calibrated_run = _calibrated_run(noise, mode)
    calibrated_block = _calibrated_block(noise, mode)
    calibrated: SideTerms = []
    if calibrated_run is not None and calibrated_block is not None:
        calibrated = [
            (calibrated_run, 1 / count),
            (calibrated_block, 1 / (count * blocks_per_run)),
        ]
    if count > 1:
        own: SideTerms = [
            (Term(float(np.var(means, ddof=1)), count - 1.0, f"runs{index}", False), 1 / count)
        ]
        return max(own, calibrated, key=_total) if calibrated else own
    if calibrated_run is None:
        return []
    blocks = block_side_terms(z, noise, mode, index)
    return [(calibrated_run, 1.0), *blocks] if blocks else []


def unpaired_spread(
    sides: tuple[FloatArray, FloatArray],
    runs: tuple[Sequence[str], Sequence[str]] | None,
    noises: tuple[BlockNoise | None, BlockNoise | None],
    mode: str,
) -> Spread | None:
    """The SE of the difference of two independent sides' centres; None when unknown.

    With ``runs`` the sides are different runs and the run is the unit; without, the
    blocks are. A side whose own noise is unknown borrows the other side's estimate.
    """
    unit = "run" if runs is not None else "block"
    terms: list[SideTerms] = []
    for index, (z, noise) in enumerate(zip(sides, noises, strict=True)):
        if runs is not None:
            terms.append(run_side_terms(z, runs[index], noise, mode, index))
        else:
            terms.append(block_side_terms(z, noise, mode, index))
    notes: list[str] = []

    def units(index: int) -> int:
        return len(dict.fromkeys(runs[index])) if runs is not None else int(sides[index].size)

    for index, name, other in ((0, "baseline", 1), (1, "contender", 0)):
        if terms[index] or not terms[other]:
            continue
        # the other side's variance of one unit (every term of it: both levels of a
        # calibration), at this side's count of units; the estimates stay shared
        scale = units(other) / units(index)
        terms[index] = [(term, coefficient * scale) for term, coefficient in terms[other]]
        source = " (calibrated)" if any(t.calibrated for t, _ in terms[other]) else ""
        notes.append(
            f"{name} has one {unit}: its {unit} noise is taken from the "
            f"{'contender' if name == 'baseline' else 'baseline'}{source}"
        )
    if not terms[0] or not terms[1]:
        return None
    return combine([*terms[0], *terms[1]], tuple(notes))


def combine(terms: SideTerms, notes: tuple[str, ...] = ()) -> Spread:
    """The SE and Satterthwaite df of a sum of (term, coefficient) pairs (shared keys merged)."""
    coefficients: dict[str, float] = {}
    by_key: dict[str, Term] = {}
    for term, coefficient in terms:
        coefficients[term.key] = coefficients.get(term.key, 0.0) + coefficient
        by_key[term.key] = term
    parts = [(by_key[k].variance * c, by_key[k].df) for k, c in coefficients.items()]
    kinds = {t.calibrated for t in by_key.values()}
    noise = (
        NOISE_BOTH
        if kinds == {True, False}
        else NOISE_CALIBRATED
        if True in kinds
        else NOISE_BLOCKS
    )
    total = sum(part for part, _ in parts)
    return Spread(math.sqrt(total), satterthwaite(parts), noise, notes)


def paired_spread(
    differences: FloatArray, noises: tuple[BlockNoise | None, BlockNoise | None], mode: str
) -> Spread | None:
    """The SE of the mean of per-block differences (backends of the same blocks)."""
    if differences.size > 1:
        variance = float(np.var(differences, ddof=1))
        return Spread(math.sqrt(variance / differences.size), differences.size - 1.0, NOISE_BLOCKS)
    sigmas = [n.sigma(mode) if n is not None else None for n in noises]
    if any(s is None for s in sigmas):
        return None
    variance = sum(float(s) ** 2 for s in sigmas if s is not None)
    df = float(min(n.df for n in noises if n is not None))
    return Spread(math.sqrt(variance), df, NOISE_CALIBRATED)
