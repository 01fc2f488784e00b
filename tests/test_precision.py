"""bench run --target-mde: blocks until precise enough, on precision only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench.analysis.levels import VarianceComponents, design_mde
from bench.precision import block_mde, t_quantiles
from bench.results import read_run
from bench.runner import RunOptions, run_scenario
from bench.scenario import parse_scenario


@pytest.mark.parametrize("df", [1, 2, 5, 12, 30, 31, 200])
def test_the_t_table_agrees_with_scipy(df: int) -> None:
    t975, t80 = t_quantiles(df)
    assert t975 == pytest.approx(stats.t.ppf(0.975, df), abs=0.002)
    assert t80 == pytest.approx(stats.t.ppf(0.80, df), abs=0.002)


def test_the_block_mde_is_the_analysis_mde_of_the_same_design() -> None:
    rng = np.random.default_rng(1)
    medians = list(np.exp(rng.normal(math.log(0.1), 0.04, 6)))
    variance = float(np.var(np.log(medians), ddof=1))
    components = VarianceComponents(0.0, 1.0, variance, 5.0, 1, 6)
    expected = math.expm1(design_mde(components, 1, 6))
    # design_mde with one run a side and no run level: the blocks' df, 2 (K - 1)
    assert block_mde(medians) is not None
    assert block_mde([0.1]) is None and block_mde([0.1, -1.0]) is None
    assert abs(block_mde(medians) - expected) < 0.35 * expected  # type: ignore[operator]


@pytest.mark.cgroups
@pytest.mark.usefixtures("process_backend", "no_leftovers")
def test_blocks_stop_when_precise_enough_or_at_the_cap(tmp_path: Path) -> None:
    text = "name: precise\nbackends: [process]\nsamples: 4\nwarmups: 1\nrepeat_gap_s: 0\n"
    scenario = parse_scenario(text)
    loose = run_scenario(
        scenario, text, "p.yaml", tmp_path / "loose", options=RunOptions(target_mde=5.0)
    )
    precision = read_run(loose.directory)["precision"]
    assert precision["stopped"] == "every quantity at or under the target"
    assert 2 <= precision["blocks"] < 20 and precision["short"] == []
    assert precision["mde"]["startup process startup"] <= 5.0
    tight = run_scenario(
        scenario,
        text,
        "p.yaml",
        tmp_path / "tight",
        options=RunOptions(target_mde=1e-6, max_blocks=3),
    )
    run = read_run(tight.directory)
    assert run["precision"]["stopped"] == "the block cap" and run["precision"]["blocks"] == 3
    assert run["precision"]["short"] == ["startup process startup"]
    assert any("--target-mde" in note for note in run["notes"])
    assert run["target"]["target_mde"] == 1e-6
