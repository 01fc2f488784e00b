"""Three-way verdicts on block-structured samples: the statistic every comparison uses.

The unit of replication is the **block**: one repeat of a scenario's plan (a run with
``repeats: K`` has K blocks; a run without repeats is one block). Samples inside a
block share the host's state of that moment (page cache, the engines' state, the
neighbours of a shared machine, CPU frequency), so they are not independent evidence
about a difference between blocks; pooling them (the t-test or Mann-Whitney U on every
sample) makes two runs of the same thing look different. So:

1. Each block is summarised by the **median** of its successful samples (robust to the
   odd slow instance).
2. Ratio rows (times, counts: every value > 0) work on log block medians; a side's
   centre is their mean (the geometric mean of its block medians), the effect is the
   difference of the centres, the ratio its exponential. Absolute rows (sizes, limit
   checks, anything that can be <= 0: a 0.1 MiB baseline makes every ratio absurd)
   work on the block medians themselves, and the effect is a difference in the unit.
3. The effect's 95% CI is Student's t with the block-to-block variance: Welch's
   (Satterthwaite's degrees of freedom) for two independent sets of blocks, the paired
   t on per-block differences when both sides were measured in the same blocks
   (backends of one run). With 2-6 blocks a bootstrap over blocks has a handful of
   distinct resamples and its interval is too narrow, which is exactly what makes A/A
   comparisons cry "regression"; the t interval is honest at small block counts.
   **Across runs** (the sides are different runs) the unit is the **run**, each the mean
   of its blocks' values: blocks of one run share that run's state (the daemons, the
   page cache, the neighbours), so they average down the noise inside a run and never
   the noise between runs. A side with one run borrows the other side's run variance
   (or the calibration's, below); with one run a side and no calibration, run-to-run
   noise is unknown: the interval between the blocks is shown, and the verdict is
   ``inconclusive: run-to-run noise unknown``.
4. Calibrated noise (``bench calibrate``: both levels, measured by A/A repeats on this
   host) enters the standard error only (``bench.analysis.spread``): each side's
   variance is the larger of its own and the calibrated one, and a side with a single
   run (or block) takes the level it cannot measure from it. Without a calibration, a
   side with one unit borrows the other side's (equal variances: the same quantity on
   the same host); with one unit on both sides nothing says how much they differ by
   chance, and a cross-run verdict is then ``inconclusive`` with the within-run
   interval shown. Backends compared inside one block were interleaved there (ABBA), so
   that comparison keeps a verdict and says its block noise is unknown.
5. The margin m is declared, never measured: ``min_effect`` (for absolute rows also
   ``min_effect`` x the larger centre, or a declared absolute floor when larger). The
   verdict is ``slower``/``faster`` (``larger``/``smaller``, ``higher``/``lower``) when
   the difference is significant (the CI excludes 0; across many rows the p-value is
   adjusted by the caller, ``bench.analysis.multiplicity``) and the estimate lies
   beyond +-m; ``equivalent within +-m`` when the whole CI lies inside it (two one-sided
   tests at 2.5% each); ``inconclusive`` otherwise.
6. The minimum detectable effect is the design's resolution: the smallest true effect
   told from no change with 80% power, ``(t(0.975, df) + t(0.80, df)) x SE``. Over the
   margin, an inconclusive verdict says the design is underpowered.

Every comparison is symmetric: compare(B, A) is the mirror of compare(A, B), because
both are computed in one canonical order and mirrored when asked the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from bench.analysis.spread import (
    MODE_ABSOLUTE,
    MODE_RATIO,
    NOISE_BLOCKS,
    NOISE_BOTH,
    NOISE_CALIBRATED,
    NOISE_UNKNOWN,
    NOISE_WITHIN_BLOCK,
    BlockNoise,
    paired_spread,
    run_means,
    unpaired_spread,
)
from bench.analysis.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    SCIPY_BOOTSTRAP_MAX_N,
    FloatArray,
    as_sorted_array,
    sample_medians,
    scipy_special,
)
from bench.analysis.units import format_quantity, unit_kind

__all__ = [
    "DEFAULT_MIN_EFFECT",
    "DIRECTIONAL_OUTCOMES",
    "MARGIN_FLOOR",
    "MARGIN_MIN_EFFECT",
    "MODE_ABSOLUTE",
    "MODE_RATIO",
    "NOISE_BLOCKS",
    "NOISE_BOTH",
    "NOISE_CALIBRATED",
    "NOISE_UNKNOWN",
    "NOISE_WITHIN_BLOCK",
    "OUTCOME_EQUIVALENT",
    "OUTCOME_INCOMPARABLE",
    "OUTCOME_INCONCLUSIVE",
    "OUTCOME_MISSING",
    "BlockNoise",
    "Verdict",
    "compare_blocks",
    "margin_text",
    "percent",
    "resolve_mode",
    "scaled_text",
    "signed_quantity",
    "verdict_words",
]

DEFAULT_MIN_EFFECT = 0.05
POWER = 0.80
RATIO_DRAWS = 4000


OUTCOME_EQUIVALENT = "equivalent"
OUTCOME_INCONCLUSIVE = "inconclusive"
OUTCOME_INCOMPARABLE = "incomparable"
OUTCOME_MISSING = "missing"
_MORE_LESS = {
    "time": ("slower", "faster"),
    "size": ("larger", "smaller"),
    "other": ("higher", "lower"),
}
DIRECTIONAL_OUTCOMES = frozenset(word for pair in _MORE_LESS.values() for word in pair)
_MIRROR = {a: b for a, b in _MORE_LESS.values()} | {b: a for a, b in _MORE_LESS.values()}

MARGIN_MIN_EFFECT = "min effect"
MARGIN_FLOOR = "absolute floor"


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing a contender's blocks with a baseline's."""

    mode: str  # ratio | absolute
    n_baseline: int
    n_contender: int
    blocks_baseline: int
    blocks_contender: int
    median_baseline: float  # the side's centre (geometric mean of block medians for ratios)
    median_contender: float
    ratio: float | None
    ratio_ci_low: float | None
    ratio_ci_high: float | None
    difference: float  # contender - baseline centre, in the unit
    difference_ci_low: float | None
    difference_ci_high: float | None
    p_value: float | None  # block-level t test of "no difference"; None without block noise
    df: float | None
    margin: float  # a fraction (ratio rows) or in the unit (absolute rows)
    margin_source: str
    mde: float | None  # same scale as the margin; None when the noise is unknown
    noise: str
    outcome: str
    verdict: str
    notes: tuple[str, ...] = ()
    # the sides are different runs and nothing measured how much runs differ by chance
    run_noise_unknown: bool = False

    @property
    def underpowered(self) -> bool:
        """The design could not detect an effect of the margin's size (MDE over it)."""
        return self.mde is not None and self.mde > self.margin

    @property
    def directional(self) -> bool:
        """True for slower/faster, larger/smaller, higher/lower."""
        return self.outcome in DIRECTIONAL_OUTCOMES

    def mirrored(self, unit: str) -> Verdict:
        """The same comparison seen from the other side."""

        def inverse(value: float | None) -> float | None:
            return 1 / value if value else None

        def negated(value: float | None) -> float | None:
            return None if value is None else -value

        outcome = _MIRROR.get(self.outcome, self.outcome)
        mirrored = replace(
            self,
            n_baseline=self.n_contender,
            n_contender=self.n_baseline,
            blocks_baseline=self.blocks_contender,
            blocks_contender=self.blocks_baseline,
            median_baseline=self.median_contender,
            median_contender=self.median_baseline,
            ratio=inverse(self.ratio),
            ratio_ci_low=inverse(self.ratio_ci_high),
            ratio_ci_high=inverse(self.ratio_ci_low),
            difference=-self.difference,
            difference_ci_low=negated(self.difference_ci_high),
            difference_ci_high=negated(self.difference_ci_low),
            notes=tuple(_mirror_note(n) for n in self.notes),
            outcome=outcome,
        )
        return replace(mirrored, verdict=verdict_words(mirrored, unit))


def _mirror_note(note: str) -> str:
    swap = {"baseline": "contender", "contender": "baseline"}
    words = note.split(" ")
    return " ".join(swap.get(word, word) for word in words)


def resolve_mode(unit: str, values: Sequence[FloatArray], *, absolute: bool = False) -> str:
    """``absolute`` for sizes, for ``absolute=True`` and for data with a value <= 0."""
    if absolute or unit_kind(unit) == "size":
        return MODE_ABSOLUTE
    if any(block.size and float(block[0]) <= 0 for block in values):
        return MODE_ABSOLUTE
    return MODE_RATIO


def compare_blocks(
    baseline: Sequence[npt.ArrayLike],
    contender: Sequence[npt.ArrayLike],
    *,
    unit: str = "s",
    absolute: bool = False,
    min_effect: float = DEFAULT_MIN_EFFECT,
    min_abs: float = 0.0,
    noise_baseline: BlockNoise | None = None,
    noise_contender: BlockNoise | None = None,
    paired: bool = False,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
    runs_baseline: Sequence[str] | None = None,
    runs_contender: Sequence[str] | None = None,
) -> Verdict:
    """Compare a contender's blocks of values with a baseline's (see the module docstring).

    Each side is a sequence of blocks, each block the values measured in it. With
    ``paired=True`` block i of both sides is the same block (both measured in it);
    blocks missing on either side are then left out. ``absolute=True`` forces an
    absolute comparison; ``min_abs`` is the absolute margin's floor in ``unit``.

    ``runs_baseline`` / ``runs_contender`` name the run of each block. When the sides
    come from different runs, the run is the unit of replication (point 3 of the module
    docstring): blocks of one run share that run's state, so they average down only the
    noise inside it, never the noise between runs.
    """
    base = [as_sorted_array(b) for b in baseline]
    cont = [as_sorted_array(c) for c in contender]
    base_runs = list(runs_baseline) if runs_baseline is not None else ["" for _ in base]
    cont_runs = list(runs_contender) if runs_contender is not None else ["" for _ in cont]
    if paired:
        kept = [(b, c) for b, c in zip(base, cont, strict=True) if b.size and c.size]
        base, cont = [b for b, _ in kept], [c for _, c in kept]
        across_runs = False
    else:
        base_runs = [r for r, b in zip(base_runs, base, strict=True) if b.size]
        cont_runs = [r for r, c in zip(cont_runs, cont, strict=True) if c.size]
        base, cont = [b for b in base if b.size], [c for c in cont if c.size]
        across_runs = runs_baseline is not None and runs_contender is not None
        across_runs = across_runs and set(base_runs) != set(cont_runs)
    if not base or not cont:
        raise ValueError("compare_blocks() needs at least one finite value on each side")
    mode = resolve_mode(unit, [*base, *cont], absolute=absolute)
    base_key, cont_key = _canonical_key(base), _canonical_key(cont)
    swap = base_key > cont_key
    first, second = (cont, base) if swap else (base, cont)
    first_runs, second_runs = (cont_runs, base_runs) if swap else (base_runs, cont_runs)
    first_noise, second_noise = (
        (noise_contender, noise_baseline) if swap else (noise_baseline, noise_contender)
    )
    result = _compare(
        first,
        second,
        _Settings(unit, mode, min_effect, min_abs, first_noise, second_noise, paired, confidence),
        seed,
        (first_runs, second_runs) if across_runs else None,
    )
    if base_key == cont_key:
        result = _symmetric_interval(result)
    return result.mirrored(unit) if swap else result


def _canonical_key(blocks: list[FloatArray]) -> tuple[tuple[int, ...], bytes]:
    return tuple(b.size for b in blocks), b"".join(b.tobytes() for b in blocks)


def _symmetric_interval(result: Verdict) -> Verdict:
    """Identical sides: make the intervals read the same from both directions."""
    if result.ratio_ci_low and result.ratio_ci_high:
        low, high = result.ratio_ci_low, result.ratio_ci_high
        result = replace(result, ratio_ci_low=min(low, 1 / high), ratio_ci_high=max(high, 1 / low))
    if result.difference_ci_low is not None and result.difference_ci_high is not None:
        half = max(abs(result.difference_ci_low), abs(result.difference_ci_high))
        result = replace(result, difference_ci_low=-half, difference_ci_high=half)
    return result


@dataclass(frozen=True)
class _Settings:
    unit: str
    mode: str
    min_effect: float
    min_abs: float
    noise_baseline: BlockNoise | None
    noise_contender: BlockNoise | None
    paired: bool
    confidence: float


def _compare(
    base: list[FloatArray],
    cont: list[FloatArray],
    settings: _Settings,
    seed: int,
    runs: tuple[Sequence[str], Sequence[str]] | None = None,
) -> Verdict:
    ratio_mode = settings.mode == MODE_RATIO
    transform = np.log if ratio_mode else (lambda x: x)
    z_base = transform(np.array([float(np.median(b)) for b in base]))
    z_cont = transform(np.array([float(np.median(c)) for c in cont]))
    # the units of replication: the blocks, or across runs the runs (each run's mean)
    unit_base, unit_cont = (
        (run_means(z_base, runs[0]), run_means(z_cont, runs[1])) if runs else (z_base, z_cont)
    )
    centre_base = float(np.exp(unit_base.mean())) if ratio_mode else float(unit_base.mean())
    centre_cont = float(np.exp(unit_cont.mean())) if ratio_mode else float(unit_cont.mean())
    effect = (
        float((z_cont - z_base).mean())
        if settings.paired
        else float(unit_cont.mean() - unit_base.mean())
    )
    margin, margin_source = _margin(settings, centre_base, centre_cont)
    margin_z = math.log1p(margin) if ratio_mode else margin
    noises = (settings.noise_baseline, settings.noise_contender)
    spread = (
        paired_spread(z_cont - z_base, noises, settings.mode)
        if settings.paired
        else unpaired_spread((z_base, z_cont), runs, noises, settings.mode)
    )
    special = scipy_special()
    tail = 0.5 + settings.confidence / 2
    notes: list[str] = []
    run_noise_unknown = False
    if spread is None and runs and max(z_base.size, z_cont.size) > 1:
        # one run a side and nothing says how much runs differ by chance: the interval
        # shown covers the noise between blocks of a run only, and decides nothing
        spread = unpaired_spread((z_base, z_cont), None, noises, settings.mode)
        run_noise_unknown = True
        notes.append(
            "run-to-run noise unknown: one run a side and no calibration of it; the "
            "interval covers block-to-block noise inside a run only, so no verdict is "
            "drawn from it"
        )
    if spread is None:
        low_z, high_z = _within_block_interval(base[0], cont[0], ratio_mode, seed)
        p_value = None
        df = None
        mde_z = None
        noise = NOISE_WITHIN_BLOCK if settings.paired else NOISE_UNKNOWN
        if settings.paired:
            notes.append("one block: block-to-block noise unknown (sides interleaved in it)")
        else:
            notes.append("run-to-run noise unknown: one block per side and no calibration")
    else:
        # Student's t quantile and tail from scipy.special (stdtrit, stdtr)
        critical = float(special.stdtrit(spread.df, tail))
        low_z, high_z = effect - critical * spread.se, effect + critical * spread.se
        if spread.se > 0:
            p_value = float(2 * special.stdtr(spread.df, -abs(effect) / spread.se))
        else:
            p_value = 1.0 if effect == 0 else 0.0
        df = spread.df
        # the smallest true effect this design tells from no change with 80% power
        mde_z = (critical + float(special.stdtrit(spread.df, POWER))) * spread.se
        noise = spread.noise
        notes.extend(spread.notes)
    low_z, high_z = min(low_z, effect), max(high_z, effect)
    if (spread is None and not settings.paired) or run_noise_unknown:
        outcome = OUTCOME_INCONCLUSIVE
    else:
        outcome = _outcome(effect, low_z, high_z, margin_z, settings.unit)
    if ratio_mode:
        ratio: float | None = math.exp(effect)
        ratio_low: float | None = math.exp(low_z)
        ratio_high: float | None = math.exp(high_z)
        difference = centre_cont - centre_base
        diff_low: float | None = None
        diff_high: float | None = None
        mde = None if mde_z is None else math.expm1(mde_z)
    else:
        # a ratio only means something when every value is > 0 (no overheads near zero)
        positive = all(float(b[0]) > 0 for b in (*base, *cont))
        ratio = centre_cont / centre_base if positive else None
        ratio_low = ratio_high = None
        difference, diff_low, diff_high = effect, low_z, high_z
        mde = mde_z
    result = Verdict(
        mode=settings.mode,
        n_baseline=int(sum(b.size for b in base)),
        n_contender=int(sum(c.size for c in cont)),
        blocks_baseline=len(base),
        blocks_contender=len(cont),
        median_baseline=centre_base,
        median_contender=centre_cont,
        ratio=ratio,
        ratio_ci_low=ratio_low,
        ratio_ci_high=ratio_high,
        difference=difference,
        difference_ci_low=diff_low,
        difference_ci_high=diff_high,
        p_value=p_value,
        df=df,
        margin=margin,
        margin_source=margin_source,
        mde=mde,
        noise=noise,
        outcome=outcome,
        verdict="",
        notes=tuple(notes),
        run_noise_unknown=run_noise_unknown,
    )
    return replace(result, verdict=verdict_words(result, settings.unit))


def _margin(settings: _Settings, centre_base: float, centre_cont: float) -> tuple[float, str]:
    """The declared margin (never the measured noise: that belongs in the SE); its source."""
    if settings.mode == MODE_RATIO:
        return settings.min_effect, MARGIN_MIN_EFFECT
    candidates = [
        (settings.min_effect * max(abs(centre_base), abs(centre_cont)), MARGIN_MIN_EFFECT),
        (settings.min_abs, MARGIN_FLOOR),
    ]
    value, source = max(candidates, key=lambda c: c[0])
    return value, source


def _outcome(effect: float, low: float, high: float, margin: float, unit: str) -> str:
    """Significant and beyond the margin: directional; the CI inside +-margin: equivalent."""
    more, less = _MORE_LESS[unit_kind(unit)]
    if low > 0 and effect > margin:
        return more
    if high < 0 and effect < -margin:
        return less
    if low > -margin and high < margin:
        return OUTCOME_EQUIVALENT
    return OUTCOME_INCONCLUSIVE


def _within_block_interval(
    base: FloatArray, cont: FloatArray, ratio_mode: bool, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap CI of the effect from one block per side, samples resampled.

    The effect is the log ratio of medians, or the difference of medians. Each side is
    resampled independently, ``BOOTSTRAP_RESAMPLES`` times from a generator seeded with
    ``seed``; large blocks draw their medians from the exact bootstrap distribution.
    """
    median_base, median_cont = float(np.median(base)), float(np.median(cont))
    effect = math.log(median_cont / median_base) if ratio_mode else median_cont - median_base
    if (base[0] == base[-1] and cont[0] == cont[-1]) or min(base.size, cont.size) < 2:
        return effect, effect
    rng = np.random.default_rng(seed)
    if max(base.size, cont.size) > SCIPY_BOOTSTRAP_MAX_N:
        first = sample_medians(base, RATIO_DRAWS, rng)
        second = sample_medians(cont, RATIO_DRAWS, rng)
    else:
        first = np.median(
            base[rng.integers(0, base.size, (BOOTSTRAP_RESAMPLES, base.size))], axis=1
        )
        second = np.median(
            cont[rng.integers(0, cont.size, (BOOTSTRAP_RESAMPLES, cont.size))], axis=1
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = np.log(second / first) if ratio_mode else second - first
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return effect, effect
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return float(low), float(high)


# --- words -------------------------------------------------------------------------------


def percent(fraction: float) -> str:
    """``0.05`` -> ``5%``, ``0.072`` -> ``7.2%``, ``0.0041`` -> ``0.41%``."""
    value = fraction * 100
    if value >= 10 or value == round(value):
        return f"{value:.0f}%"
    if value >= 1:
        return f"{value:.1f}%"
    return f"{value:.2g}%"


def signed_quantity(value: float | None, unit: str) -> str:
    """``+12.4 ms``, ``-147 MiB``, ``0 s``; ``-`` for None."""
    if value is None or not math.isfinite(value):
        return "-"
    text = format_quantity(abs(value), unit)
    if value > 0:
        return f"+{text}"
    if value < 0:
        return f"-{text}"
    return text


def scaled_text(value: float | None, verdict: Verdict, unit: str) -> str:
    """A margin or an MDE in words: a percentage (ratio rows) or a quantity (absolute)."""
    if value is None:
        return "-"
    return percent(value) if verdict.mode == MODE_RATIO else format_quantity(value, unit)


def margin_text(verdict: Verdict, unit: str) -> str:
    """``+-5%`` or ``+-1.00 MiB``."""
    if verdict.mode == MODE_RATIO:
        return f"±{percent(verdict.margin)}"
    return f"±{format_quantity(verdict.margin, unit)}"


def verdict_words(verdict: Verdict, unit: str) -> str:
    """The words a person reads.

    ``1.31x slower``, ``larger by 147 MiB``, ``equivalent within +-5%``, ``inconclusive``.
    """
    outcome = verdict.outcome
    if outcome == OUTCOME_EQUIVALENT:
        return f"equivalent within {margin_text(verdict, unit)}"
    if outcome == OUTCOME_INCONCLUSIVE:
        if verdict.noise == NOISE_UNKNOWN or verdict.run_noise_unknown:
            return "inconclusive: run-to-run noise unknown"
        if verdict.underpowered:
            return (
                f"inconclusive (underpowered: MDE {scaled_text(verdict.mde, verdict, unit)} "
                f"> margin {scaled_text(verdict.margin, verdict, unit)})"
            )
        return OUTCOME_INCONCLUSIVE
    if outcome not in DIRECTIONAL_OUTCOMES:
        return outcome
    if verdict.mode == MODE_RATIO and verdict.ratio:
        factor = verdict.ratio if verdict.ratio >= 1 else 1 / verdict.ratio
        return f"{factor:.2f}x {outcome}"
    return f"{outcome} by {format_quantity(abs(verdict.difference), unit)}"
