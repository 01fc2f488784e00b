"""Block-level verdicts on synthetic data with a known answer, and their properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.analysis.verdict import (
    MARGIN_CALIBRATED,
    MARGIN_FLOOR,
    MARGIN_MIN_EFFECT,
    MODE_ABSOLUTE,
    MODE_RATIO,
    NOISE_BLOCKS,
    NOISE_CALIBRATED,
    NOISE_UNKNOWN,
    NOISE_WITHIN_BLOCK,
    OUTCOME_EQUIVALENT,
    OUTCOME_INCONCLUSIVE,
    BlockNoise,
    compare_blocks,
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
    assert result.mde is not None and result.margin < result.mde < 0.15


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
    assert result.outcome == OUTCOME_INCONCLUSIVE and result.verdict == "inconclusive"
    assert result.ratio_ci_low is not None and result.ratio_ci_high is not None
    assert result.ratio_ci_low < 1.05 < result.ratio_ci_high, "the CI straddles the margin"


def test_one_block_a_side_says_run_to_run_noise_is_unknown() -> None:
    rng = np.random.default_rng(4)
    result = compare_blocks(blocks(rng, 1), blocks(rng, 1, shift=1.5))
    assert result.outcome == OUTCOME_INCONCLUSIVE
    assert result.verdict == "inconclusive: run-to-run noise unknown"
    assert result.noise == NOISE_UNKNOWN and result.mde is None and result.p_value is None
    assert result.ratio is not None and 1.35 < result.ratio < 1.65
    assert result.ratio_ci_low is not None and result.ratio_ci_low > 1.2, "within-run CI shown"


def test_a_calibration_supplies_the_noise_of_single_blocks_and_raises_the_margin() -> None:
    rng = np.random.default_rng(5)
    quiet = BlockNoise(sigma_log=0.02, sigma_abs=0.002, df=5, blocks=6)
    result = compare_blocks(
        blocks(rng, 1), blocks(rng, 1, shift=1.5), noise_baseline=quiet, noise_contender=quiet
    )
    assert result.outcome == "slower" and result.noise == NOISE_CALIBRATED
    assert (result.margin, result.margin_source) == (0.05, MARGIN_MIN_EFFECT)
    assert result.df == 5
    noisy = BlockNoise(sigma_log=math.log(1.12), sigma_abs=0.012, df=5, blocks=6)
    wide = compare_blocks(
        blocks(rng, 1), blocks(rng, 1, shift=1.08), noise_baseline=noisy, noise_contender=noisy
    )
    assert wide.margin == pytest.approx(0.12) and wide.margin_source == MARGIN_CALIBRATED
    assert wide.outcome == OUTCOME_INCONCLUSIVE


def test_a_side_with_one_block_borrows_the_other_sides_noise() -> None:
    rng = np.random.default_rng(6)
    result = compare_blocks(blocks(rng, 5), blocks(rng, 1, shift=1.4))
    assert result.outcome == "slower" and result.noise == NOISE_BLOCKS
    assert result.df == 4, "one shared estimate: its degrees of freedom"
    assert any("its block noise is taken from the baseline" in n for n in result.notes)


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
    assert outcomes.count("slower") + outcomes.count("faster") <= 2  # about 0.2% expected
    assert outcomes.count(OUTCOME_INCONCLUSIVE) > 100, "5% block noise, 3 blocks: mostly unsure"


def test_mde_shrinks_with_more_blocks() -> None:
    rng = np.random.default_rng(11)
    few = compare_blocks(blocks(rng, 3), blocks(rng, 3))
    many = compare_blocks(blocks(rng, 12), blocks(rng, 12))
    assert few.mde is not None and many.mde is not None
    assert many.margin < many.mde < few.mde


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
