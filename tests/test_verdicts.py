"""Block-level verdicts on synthetic data with a known answer, and their properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.analysis.verdict import (
    MARGIN_FLOOR,
    MARGIN_MIN_EFFECT,
    MODE_ABSOLUTE,
    MODE_RATIO,
    NOISE_BLOCKS,
    NOISE_BOTH,
    NOISE_CALIBRATED,
    NOISE_UNKNOWN,
    NOISE_WITHIN_BLOCK,
    OUTCOME_EQUIVALENT,
    OUTCOME_INCONCLUSIVE,
    BlockNoise,
    compare_blocks,
    percent,
)
from tests.synthetic_runs import blocks


def test_aa_with_six_blocks_a_side_is_equivalent() -> None:
    rng = np.random.default_rng(1)
    result = compare_blocks(blocks(rng, 6), blocks(rng, 6))
    assert result.outcome == OUTCOME_EQUIVALENT
    assert result.verdict == "equivalent within ±5%"
    assert result.ratio_ci_low is not None and result.ratio_ci_high is not None
    assert 1 / 1.05 < result.ratio_ci_low <= result.ratio_ci_high < 1.05
    assert (result.blocks_baseline, result.blocks_contender, result.noise) == (6, 6, NOISE_BLOCKS)
    # six blocks of 2% noise resolve less than the 5% margin: not underpowered
    assert result.mde is not None and 0 < result.mde < result.margin and not result.underpowered


def test_a_twenty_percent_shift_is_detected() -> None:
    rng = np.random.default_rng(2)
    base, slower = blocks(rng, 6), blocks(rng, 6, shift=1.2)
    result = compare_blocks(base, slower)
    assert compare_blocks(slower, base).outcome == "faster"
    assert result.outcome == "slower"
    assert result.ratio is not None and result.verdict == f"{result.ratio:.2f}x slower"
    assert result.ratio_ci_low is not None and result.ratio_ci_high is not None
    assert 1.05 < result.ratio_ci_low < 1.2 < result.ratio_ci_high
    assert result.difference == pytest.approx(0.02, rel=0.25), "about +20 ms on 100 ms"
    assert result.p_value is not None and result.p_value < 1e-4


def test_a_shift_near_the_margin_with_few_blocks_is_inconclusive() -> None:
    rng = np.random.default_rng(3)
    result = compare_blocks(
        blocks(rng, 3, block_sd=0.03), blocks(rng, 3, shift=1.06, block_sd=0.03)
    )
    assert result.outcome == OUTCOME_INCONCLUSIVE
    assert result.ratio_ci_low is not None and result.ratio_ci_high is not None
    assert result.ratio_ci_low < 1.05 < result.ratio_ci_high, "the CI straddles the margin"
    # three blocks of 3% noise cannot see 5%: the row says so rather than just "inconclusive"
    assert result.mde is not None and result.mde > result.margin
    assert result.verdict == f"inconclusive (underpowered: MDE {percent(result.mde)} > margin 5%)"


def test_one_block_a_side_says_run_to_run_noise_is_unknown() -> None:
    rng = np.random.default_rng(4)
    result = compare_blocks(blocks(rng, 1), blocks(rng, 1, shift=1.5))
    assert result.outcome == OUTCOME_INCONCLUSIVE
    assert result.verdict == "inconclusive: run-to-run noise unknown"
    assert result.noise == NOISE_UNKNOWN and result.mde is None and result.p_value is None
    assert result.ratio is not None and 1.35 < result.ratio < 1.65
    assert result.ratio_ci_low is not None and result.ratio_ci_low > 1.2, "within-run CI shown"


def test_a_calibration_supplies_the_noise_of_single_blocks_and_the_margin_stays_declared() -> None:
    rng = np.random.default_rng(5)
    quiet = BlockNoise(sigma_log=0.02, sigma_abs=0.002, df=5, blocks=6)
    result = compare_blocks(
        blocks(rng, 1), blocks(rng, 1, shift=1.5), noise_baseline=quiet, noise_contender=quiet
    )
    assert result.outcome == "slower" and result.noise == NOISE_CALIBRATED
    assert (result.margin, result.margin_source) == (0.05, MARGIN_MIN_EFFECT)
    assert result.df == 5
    # noisy: the noise widens the interval, and never the margin (it would count twice)
    noisy = BlockNoise(sigma_log=math.log(1.12), sigma_abs=0.012, df=5, blocks=6)
    wide = compare_blocks(
        blocks(rng, 1), blocks(rng, 1, shift=1.08), noise_baseline=noisy, noise_contender=noisy
    )
    assert (wide.margin, wide.margin_source) == (0.05, MARGIN_MIN_EFFECT)
    assert wide.outcome == OUTCOME_INCONCLUSIVE and wide.underpowered
    assert "underpowered" in wide.verdict


def test_a_real_change_the_noise_once_hid_is_found_with_enough_blocks() -> None:
    """40 vs 40 blocks of 15% noise: the margin stays 5%, so more blocks buy power.

    With the margin raised to the calibrated noise (15%), a true +20% was inconclusive
    however many blocks, and a true +12% was at times called "equivalent".
    """
    rng = np.random.default_rng(12)
    noisy = BlockNoise(sigma_log=math.log(1.15), sigma_abs=0.015, df=39, blocks=40)

    def trial(shift: float) -> str:
        base = blocks(rng, 40, block_sd=0.15)
        slower = blocks(rng, 40, shift=shift, block_sd=0.15)
        return compare_blocks(base, slower, noise_baseline=noisy, noise_contender=noisy).outcome

    assert trial(1.2) == "slower"
    twelve = [trial(1.12) for _ in range(50)]
    assert OUTCOME_EQUIVALENT not in twelve and "faster" not in twelve, twelve
    assert twelve.count("slower") >= 10, "near half the trials see +12% (MDE about 15%)"


def test_a_side_with_one_block_borrows_the_other_sides_noise() -> None:
    rng = np.random.default_rng(6)
    result = compare_blocks(blocks(rng, 5), blocks(rng, 1, shift=1.4))
    assert result.outcome == "slower" and result.noise == NOISE_BLOCKS
    assert result.df == 4, "one shared estimate: its degrees of freedom"
    assert any(
        "contender has one block: its block noise is taken from the baseline" in n
        for n in result.notes
    )


def _across_runs(
    rng: np.random.Generator, runs: int, per_run: int, *, shift: float = 1.0, run_sd: float = 0.05
) -> tuple[list[np.ndarray], list[str]]:
    """Blocks of ``runs`` runs, each run offset by its own run effect."""
    values: list[np.ndarray] = []
    labels: list[str] = []
    for run in range(runs):
        effect = float(np.exp(rng.normal(0, run_sd)))
        for block in blocks(rng, per_run, shift=shift * effect, block_sd=0.01):
            values.append(block)
            labels.append(f"run{run}-{rng.integers(1 << 30)}")
    # the labels of one run must agree: rebuild them per run
    labels = [f"r{i // per_run}" for i in range(len(values))]
    return values, labels


def test_across_runs_the_run_is_the_unit() -> None:
    """Blocks of one run agree; runs do not: one run a side is never directional."""
    rng = np.random.default_rng(13)
    calls = 0
    for _ in range(100):
        a, a_runs = _across_runs(rng, 1, 3)
        b, b_runs = _across_runs(rng, 1, 3)
        b_runs = [f"b{r}" for r in b_runs]
        result = compare_blocks(a, b, runs_baseline=a_runs, runs_contender=b_runs)
        assert result.verdict == "inconclusive: run-to-run noise unknown"
        assert result.noise == NOISE_BLOCKS and result.p_value is not None  # within-run CI
        calls += result.directional
        # the same blocks as if they were independent: directional calls galore
    assert calls == 0


def test_several_runs_a_side_give_a_run_level_interval() -> None:
    rng = np.random.default_rng(14)
    a, a_runs = _across_runs(rng, 4, 3)
    b, b_runs = _across_runs(rng, 4, 3, shift=1.3)
    b_runs = [f"b{r}" for r in b_runs]
    result = compare_blocks(a, b, runs_baseline=a_runs, runs_contender=b_runs)
    assert result.outcome == "slower"
    assert result.df is not None and result.df <= 6, "the runs' degrees of freedom, not 22"


def test_a_calibrated_run_level_lets_one_run_a_side_decide() -> None:
    rng = np.random.default_rng(15)
    a, a_runs = _across_runs(rng, 1, 3, run_sd=0.0)
    b, b_runs = _across_runs(rng, 1, 3, shift=1.5, run_sd=0.0)
    b_runs = [f"b{r}" for r in b_runs]
    calibrated = BlockNoise(
        sigma_log=0.01,
        sigma_abs=0.001,
        df=8,
        blocks=12,
        run_sigma_log=0.05,
        run_sigma_abs=0.005,
        run_df=3.0,
        runs=4,
    )
    result = compare_blocks(
        a,
        b,
        runs_baseline=a_runs,
        runs_contender=b_runs,
        noise_baseline=calibrated,
        noise_contender=calibrated,
    )
    assert result.outcome == "slower" and result.noise == NOISE_BOTH
    assert not result.run_noise_unknown


def test_backends_in_one_block_are_paired_and_keep_a_verdict() -> None:
    rng = np.random.default_rng(7)
    process, docker = blocks(rng, 1, centre=0.008), blocks(rng, 1, centre=0.1)
    result = compare_blocks(process, docker, paired=True)
    assert result.outcome == "slower" and result.noise == NOISE_WITHIN_BLOCK
    assert any("block-to-block noise unknown" in n for n in result.notes)
    paired = compare_blocks(blocks(rng, 4, centre=0.008), blocks(rng, 4, centre=0.1), paired=True)
    assert paired.outcome == "slower" and paired.df == 3


def test_sizes_compare_absolute_values_with_a_floor() -> None:
    rng = np.random.default_rng(8)
    tiny = blocks(rng, 4, centre=0.1, within_sd=0.05)
    also_tiny = blocks(rng, 4, centre=0.3, within_sd=0.05)
    result = compare_blocks(tiny, also_tiny, unit="MiB", min_abs=1.0)
    assert result.mode == MODE_ABSOLUTE and result.ratio is not None and result.ratio > 2
    assert (result.margin, result.margin_source) == (1.0, MARGIN_FLOOR)
    assert result.outcome == OUTCOME_EQUIVALENT, "3x of 0.1 MiB is still under a MiB"
    assert result.verdict == "equivalent within ±1.00 MiB"
    vm = compare_blocks(
        blocks(rng, 4, centre=148.0), blocks(rng, 4, centre=295.0), unit="MiB", min_abs=1.0
    )
    assert vm.outcome == "larger" and vm.verdict.startswith("larger by 14")
    assert vm.difference_ci_low is not None and vm.difference_ci_low > 100


def test_values_at_or_below_zero_compare_by_difference() -> None:
    rng = np.random.default_rng(9)
    base = [rng.normal(0.0, 0.1, 10) for _ in range(3)]
    cont = [b + 5.0 for b in base]
    result = compare_blocks(base, cont, unit="MiB")
    assert result.mode == MODE_ABSOLUTE and result.ratio is None
    assert result.verdict == "larger by 5.00 MiB"
    assert compare_blocks(base, cont, unit="cores").verdict == "higher by 5 cores"


def test_many_aa_comparisons_give_no_directional_verdict() -> None:
    """Specificity on synthetic A/A pairs with real block-to-block noise (3 vs 3 blocks)."""
    rng = np.random.default_rng(10)
    outcomes = [
        compare_blocks(blocks(rng, 3, block_sd=0.05), blocks(rng, 3, block_sd=0.05)).outcome
        for _ in range(200)
    ]
    # a directional call needs significance at 5% (two-sided) and an effect beyond the
    # margin: at most 5% of A/A pairs, 2.5% a side (seeded: the same every run)
    assert outcomes.count("slower") <= 5 and outcomes.count("faster") <= 5
    assert outcomes.count(OUTCOME_INCONCLUSIVE) > 100, "5% block noise, 3 blocks: mostly unsure"


def test_mde_shrinks_with_more_blocks() -> None:
    rng = np.random.default_rng(11)
    few = compare_blocks(blocks(rng, 3), blocks(rng, 3))
    many = compare_blocks(blocks(rng, 12), blocks(rng, 12))
    assert few.mde is not None and many.mde is not None
    assert many.mde < many.margin < few.mde
    assert few.underpowered and not many.underpowered


positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
block = st.lists(positive, min_size=1, max_size=8)
side = st.lists(block, min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(side, side)
def test_compare_mirrors(a: list[list[float]], b: list[list[float]]) -> None:
    forward, backward = compare_blocks(a, b), compare_blocks(b, a)
    mirror = {"slower": "faster", "faster": "slower"}
    assert backward.outcome == mirror.get(forward.outcome, forward.outcome)
    assert forward.ratio is not None and backward.ratio is not None
    assert forward.ratio == pytest.approx(1 / backward.ratio, rel=1e-9)
    assert forward.difference == pytest.approx(-backward.difference, rel=1e-9, abs=1e-12)
    if forward.ratio_ci_low and forward.ratio_ci_high:
        assert backward.ratio_ci_high == pytest.approx(1 / forward.ratio_ci_low, rel=1e-9)
    assert forward.margin == backward.margin and forward.mde == backward.mde


@settings(max_examples=60, deadline=None)
@given(side)
def test_identical_sides_are_never_directional(a: list[list[float]]) -> None:
    result = compare_blocks(a, [list(x) for x in a])
    assert result.outcome in {OUTCOME_EQUIVALENT, OUTCOME_INCONCLUSIVE}
    assert result.ratio == pytest.approx(1.0)
    assert result.ratio_ci_low is not None and result.ratio_ci_high is not None
    assert result.ratio_ci_low <= 1.0 <= result.ratio_ci_high


@settings(max_examples=40, deadline=None)
@given(side, side, st.floats(min_value=0.01, max_value=100.0))
def test_ratio_verdicts_do_not_depend_on_the_unit_scale(
    a: list[list[float]], b: list[list[float]], scale: float
) -> None:
    plain = compare_blocks(a, b)
    scaled = compare_blocks(
        [[v * scale for v in x] for x in a], [[v * scale for v in x] for x in b]
    )
    assert plain.mode == scaled.mode == MODE_RATIO
    assert plain.ratio == pytest.approx(scaled.ratio, rel=1e-6)
    if plain.ratio_ci_low is not None and scaled.ratio_ci_low is not None and plain.df:
        assert plain.ratio_ci_low == pytest.approx(scaled.ratio_ci_low, rel=1e-6)
