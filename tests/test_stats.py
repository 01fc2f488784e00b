"""Statistics on fixed inputs and hypothesis properties; loading runs into one frame."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.analysis import stats as stats_module
from bench.analysis.dataset import ANALYSIS_LABELS, fact, load_dataset
from bench.analysis.stats import (
    describe,
    exact_median_bootstrap_cdf,
    median_ci,
    summarize_stats,
    view_labels,
)
from bench.errors import ResultsError
from tests.conftest import DATA

RUNS = DATA / "runs"
FIXTURE_RUNS = sorted(p.parent for p in (RUNS / "fixture").rglob("run.json"))

finite_values = st.lists(
    st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=60,
)


def test_describe_fixed_input() -> None:
    s = describe([float(v) for v in range(1, 11)])
    assert s.n == 10
    assert s.median == 5.5
    assert (s.q1, s.q3, s.iqr) == (3.25, 7.75, 4.5)
    assert s.p95 == pytest.approx(9.55)
    assert s.p99 == pytest.approx(9.91)
    assert (s.minimum, s.maximum) == (1.0, 10.0)
    assert s.mean == 5.5
    assert s.stdev == pytest.approx(3.0276503540974917)
    assert s.cv == pytest.approx(0.5504818825631803)
    assert s.ci_low <= s.median <= s.ci_high
    assert s.outliers == 0
    assert s.warnings == (), "a high CV is a flag, not a warning"
    assert s.unstable


def test_describe_is_reproducible_and_drops_non_finite() -> None:
    values = [0.1, 0.12, 0.11, math.nan, 0.13, 0.105, math.inf, 0.115]
    first, second = describe(values), describe(values)
    assert first == second
    assert first.n == 6


def test_warnings_few_samples_and_outliers() -> None:
    few = describe([1.0, 1.01, 0.99])
    assert few.warnings == (
        "too few samples: n=3 < 5 (raise samples, or memory instances x rounds)",
    )
    one_in_ten = describe([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 0.99, 5.0])
    assert one_in_ten.outliers == 1
    assert one_in_ten.warnings == (), "one outlier in ten samples is not a warning"
    two_in_ten = describe([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 4.0, 5.0])
    assert two_in_ten.outliers == 2
    assert two_in_ten.warnings == (
        "2 outliers beyond 1.5 IQR (20% of samples): something disturbed the run",
    )
    steady = describe([100.0, 101.0, 99.0, 100.5, 99.5, 100.0, 100.2])
    assert steady.warnings == () and not steady.unstable


def test_single_values_and_ramps_are_not_warned_about() -> None:
    single = describe([37.0], replicated=False)
    assert single.warnings == () and not single.unstable, "count_reached is one value by design"
    ramp = describe([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 200.0], series=True)
    assert ramp.cv > 1 and ramp.outliers >= 1
    assert ramp.warnings == () and not ramp.unstable, "a ramp rises by design"


def test_degenerate_and_single_values() -> None:
    single = describe([2.5])
    assert (single.ci_low, single.ci_high, single.stdev, single.cv) == (2.5, 2.5, 0.0, 0.0)
    constant = describe([3.0] * 20)
    assert constant.ci_method.startswith("degenerate")
    assert constant.warnings == ()
    zero_mean = describe([-1.0, 1.0, -1.0, 1.0, 0.0])
    assert math.isnan(zero_mean.cv)
    assert zero_mean.unstable
    with pytest.raises(ValueError):
        describe([math.nan])


def test_exact_bootstrap_agrees_with_scipy_resampling(monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.random.default_rng(5).lognormal(0, 0.4, 1501)
    exact_low, exact_high, method = median_ci(data)
    assert "exact" in method
    monkeypatch.setattr(stats_module, "SCIPY_BOOTSTRAP_MAX_N", 10**6)
    low, high, method = median_ci(data)
    assert "resamples" in method
    width = high - low
    assert exact_low == pytest.approx(low, abs=0.15 * width)
    assert exact_high == pytest.approx(high, abs=0.15 * width)


def test_exact_cdf_is_a_distribution() -> None:
    cdf = exact_median_bootstrap_cdf(2001)
    assert np.all(np.diff(cdf) >= 0)
    assert cdf[-1] == 1.0
    assert cdf[999] == pytest.approx(0.5, abs=0.02)


@settings(max_examples=60, deadline=None)
@given(finite_values)
def test_ci_contains_the_median_within_the_data(values: list[float]) -> None:
    low, high, _ = median_ci(values)
    median = float(np.median(values))
    assert min(values) <= low <= median <= high <= max(values)


@settings(max_examples=30, deadline=None)
@given(finite_values, st.floats(min_value=0.5, max_value=2.0))
def test_describe_scales_with_the_data(values: list[float], factor: float) -> None:
    base, scaled = describe(values), describe([v * factor for v in values])
    assert scaled.median == pytest.approx(base.median * factor, rel=1e-9)
    assert scaled.iqr == pytest.approx(base.iqr * factor, rel=1e-6, abs=1e-12)
    if math.isfinite(base.cv):
        assert scaled.cv == pytest.approx(base.cv, rel=1e-6, abs=1e-12)


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_summarize_stats_groups_views_stages_failures() -> None:
    rows: list[dict[str, object]] = []
    for i in range(6):
        rows.append(
            {
                "run_id": "r1",
                "metric": "startup",
                "backend": "docker",
                "case": "c",
                "value": 0.1 + i * 0.001,
                "unit": "s",
                "ok": True,
                "warmup": i == 0,
                "stage.create_s": 0.01,
            }
        )
    rows.append({**rows[1], "ok": False, "value": None})
    for view, role in (("pss", "total"), ("pss", "qemu"), ("cgroup_usage", "cgroup")):
        for i in range(5):
            rows.append(
                {
                    "run_id": "r1",
                    "metric": "memory",
                    "backend": "libvirt",
                    "case": "c",
                    "value": 100.0 + i,
                    "unit": "MiB",
                    "ok": True,
                    "warmup": False,
                    "label.view": view,
                    "label.role": role,
                    "label.accel": "tcg",
                }
            )
    frame = _frame(rows)
    assert list(view_labels(frame).unique()) == ["", "pss", "pss:qemu", "cgroup_usage"]
    result = summarize_stats(frame)
    keyed = {(r.metric, r.view, r.stage): r for r in result}
    startup = keyed[("startup", "", "value")]
    assert (startup.stats.n, startup.failed, startup.unit) == (5, 1, "s")
    assert keyed[("startup", "", "create_s")].unit == "s"
    assert keyed[("memory", "pss:qemu", "value")].accel == "tcg"
    assert ("memory", "pss", "create_s") not in keyed  # no stage values there
    assert len(summarize_stats(frame, stages=False)) == 4


def test_summarize_stats_blocks_ramps_single_values_and_noise() -> None:
    rows: list[dict[str, object]] = []
    for step in range(1, 11):
        rows.append(
            {
                "run_id": "r1",
                "metric": "density",
                "backend": "docker",
                "case": "c",
                "value": 0.05 * 2**step,
                "unit": "s",
                "ok": True,
                "warmup": False,
                "block": 0,
                "label.view": "startup_s",
                "label.step": float(step),
            }
        )
    rows.append({**rows[0], "value": 10.0, "label.view": "count_reached", "label.step": None})
    for block in range(3):
        for i in range(2):
            rows.append(
                {
                    **rows[0],
                    "metric": "startup",
                    "label.view": None,
                    "label.step": None,
                    "value": 0.1 + 0.001 * i,
                    "block": block,
                }
            )
        rows.append(
            {
                **rows[0],
                "metric": "noise",
                "backend": "host",
                "case": "*",
                "block": block,
                "label.view": "foreign_cpu_cores",
                "label.step": None,
                "value": 0.01,
                "unit": "cores",
            }
        )
    result = {(r.metric, r.view): r for r in summarize_stats(_frame(rows), stages=False)}
    assert ("noise", "foreign_cpu_cores") not in result, "host noise is not a backend's figure"
    ramp = result[("density", "startup_s")]
    assert ramp.stats.series and ramp.stats.warnings == () and not ramp.stats.unstable
    assert result[("density", "count_reached")].stats.warnings == ()
    startup = result[("startup", "")]
    assert (startup.stats.n, startup.blocks) == (6, 3)
    assert startup.stats.warnings == ()


# --- loading -----------------------------------------------------------------------------


def test_fixture_runs_exist() -> None:
    assert len(FIXTURE_RUNS) >= 2, "tests/data/runs/fixture holds real runs"


def test_fast_reader_matches_the_standard_library_reader() -> None:
    dataset = load_dataset(FIXTURE_RUNS)
    lines = sum(
        1
        for run in FIXTURE_RUNS
        for line in (run / "samples.jsonl").read_text().splitlines()
        if line
    )
    assert len(dataset.samples) == lines
    slow = load_dataset(FIXTURE_RUNS, fast=False)
    pd.testing.assert_frame_equal(dataset.samples, slow.samples)


def test_facts_and_fact_columns() -> None:
    dataset = load_dataset(FIXTURE_RUNS, facts=["kernel", "cpu.model"])
    run = next(iter(dataset.runs.values()))
    assert fact(run, "kernel") == run.host["kernel"]["release"]
    assert fact(run, "software.docker.runc") == run.record["software"]["docker"]["runc"]
    assert fact(run, "no.such.fact") is None
    assert set(dataset.samples["fact.kernel"]) == {run.kernel_release}


def test_torn_last_line_warns_and_newer_schema_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUNS[0], run)
    samples = run / "samples.jsonl"
    lines = samples.read_text().splitlines()
    samples.write_text("\n".join(lines) + '\n{"run_id": "x", "seq": 9')
    for fast in (True, False):
        dataset = load_dataset(run, fast=fast)
        assert len(dataset.samples) == len(lines)
        assert any("torn last line" in w for w in dataset.warnings)
        assert dataset.samples.attrs["warnings"] == dataset.warnings
    newer = json.loads(lines[0])
    newer["schema_version"] = 99
    samples.write_text("\n".join([json.dumps(newer), *lines[1:]]) + "\n")
    for fast in (True, False):
        with pytest.raises(ResultsError, match="newer than this bench reads"):
            load_dataset(run, fast=fast)
    samples.write_text("\n".join(["{not json", *lines[1:]]) + "\n")
    with pytest.raises(ResultsError, match=":1: not valid JSON"):
        load_dataset(run)
    record = json.loads((run / "run.json").read_text())
    record["schema_version"] = 99
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(ResultsError, match="newer"):
        load_dataset(run)


def test_analysis_labels_load_matches_the_full_load() -> None:
    full = load_dataset(FIXTURE_RUNS).samples
    for fast in (True, False):
        slim = load_dataset(FIXTURE_RUNS, labels=ANALYSIS_LABELS, fast=fast).samples
        labels = [c for c in slim.columns if c.startswith("label.")]
        assert {"label.accel", "label.view", "label.series"} <= set(labels)
        assert set(slim.columns) - set(labels) == {
            c for c in full.columns if not c.startswith("label.")
        }
        for column in slim.columns:
            pd.testing.assert_series_equal(slim[column], full[column])


def test_columnar_cache_is_built_once_and_rebuilt_when_the_journal_changes(tmp_path: Path) -> None:
    """A finished run is compacted to samples.parquet; a warm read equals the journal's."""
    from bench.analysis.dataset import CACHE_FILE, read_cache

    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUNS[0], run)
    (run / CACHE_FILE).unlink(missing_ok=True)
    journal = load_dataset(run, fast=False).samples
    cold = load_dataset(run).samples
    assert (run / CACHE_FILE).is_file(), "a complete run is compacted on its first read"
    assert read_cache(run) is not None
    warm = load_dataset(run).samples
    pd.testing.assert_frame_equal(journal, cold)
    pd.testing.assert_frame_equal(journal, warm)
    slim = load_dataset(run, labels=ANALYSIS_LABELS).samples
    assert not [c for c in slim.columns if c.startswith("label.") and c[6:] not in ANALYSIS_LABELS]
    # the journal changes (a torn line appended): the cache no longer describes it
    with open(run / "samples.jsonl", "a") as handle:
        handle.write('{"run_id": "x", "se')
    assert read_cache(run) is None
    torn = load_dataset(run)
    assert len(torn.samples) == len(journal)
    assert any("torn last line" in w for w in torn.warnings)
    again = load_dataset(run)  # from the rebuilt cache: the warning is kept with it
    assert read_cache(run) is not None
    assert any("torn last line" in w for w in again.warnings)


def test_a_running_run_is_not_cached(tmp_path: Path) -> None:
    from bench.analysis.dataset import CACHE_FILE
    from bench.ownership import effective_status, this_process

    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUNS[0], run)
    (run / CACHE_FILE).unlink(missing_ok=True)
    record = json.loads((run / "run.json").read_text())
    record["status"] = "running"
    identity = this_process()
    record["process"] = {
        "pid": identity.pid,
        "start_ticks": identity.start_ticks,
        "boot_id": identity.boot_id,
    }
    (run / "run.json").write_text(json.dumps(record))
    assert effective_status(record) == "running"
    load_dataset(run)
    assert not (run / CACHE_FILE).exists(), "a journal still being written is not compacted"
