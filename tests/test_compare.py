"""Comparisons: fixed verdicts, hypothesis properties, incomparable groups, real runs end to end."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.analysis.compare import (
    OUTCOME_INCOMPARABLE,
    OUTCOME_NOT_SIGNIFICANT,
    CompareError,
    compare_dataset,
    compare_samples,
    format_csv,
    format_json,
    format_markdown,
)
from bench.analysis.dataset import load_dataset
from tests.conftest import DATA, REPO, skip_or_fail

RUNS = DATA / "runs"
FIXTURE_RUNS = sorted(p.parent for p in (RUNS / "fixture").rglob("run.json"))
XSS_RUN = next(p.parent for p in (RUNS / "xss").rglob("run.json"))
TCG_RUN = next(p.parent for p in (RUNS / "tcg").rglob("run.json"))
BENCH = [sys.executable, "-m", "bench"]

samples = st.lists(
    st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=40,
)


def bench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def _base(n: int = 200, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.0, 0.02, n)


def test_verdict_slower_faster_and_not_significant() -> None:
    base = _base()
    slower = compare_samples(base, _base(seed=2) * 1.31)
    assert slower.verdict == "1.31x slower" and slower.outcome == "slower"
    assert slower.ratio_ci_low is not None and slower.ratio_ci_high is not None
    assert slower.ratio_ci_low <= slower.ratio <= slower.ratio_ci_high  # type: ignore[operator]
    assert slower.ratio_ci_low > 1.25 and slower.ratio_ci_high < 1.37
    faster = compare_samples(base, _base(seed=3) / 1.08)
    assert faster.verdict == "1.08x faster"
    # significant (p tiny) but under the 5% minimum effect
    small = compare_samples(base, _base(seed=4) * 1.02)
    assert small.p_value < 0.05 and small.verdict == OUTCOME_NOT_SIGNIFICANT
    assert compare_samples(base, _base(seed=4) * 1.02, min_effect=0.01).verdict == "1.02x slower"


def test_words_follow_the_unit() -> None:
    base = _base()
    assert compare_samples(base, base * 1.5, unit="MiB").verdict == "1.50x larger"
    assert compare_samples(base, base / 2, unit="MiB").verdict == "2.00x smaller"
    assert compare_samples(base, base * 1.5, unit="instances").verdict == "1.50x higher"


def test_non_positive_medians_compare_by_difference() -> None:
    base = np.random.default_rng(1).normal(0.0, 0.1, 100)
    result = compare_samples(base, base + 5.0, unit="MiB")
    assert result.ratio is None and result.ratio_ci_low is None
    assert result.verdict == "higher by 5.00 MiB"


def test_large_samples_use_the_exact_path_fast() -> None:
    rng = np.random.default_rng(9)
    a = rng.lognormal(0, 0.3, 100_000)
    b = rng.lognormal(0, 0.3, 100_000) * 1.1
    result = compare_samples(a, b)
    assert result.verdict == "1.10x slower"
    assert result.ratio_ci_low is not None and result.ratio_ci_high is not None
    assert result.ratio_ci_low < 1.1 < result.ratio_ci_high


@settings(max_examples=40, deadline=None)
@given(samples, samples)
def test_compare_mirrors(a: list[float], b: list[float]) -> None:
    forward, backward = compare_samples(a, b), compare_samples(b, a)
    assert forward.p_value == backward.p_value
    assert forward.significant == backward.significant
    assert forward.median_baseline == backward.median_contender
    assert forward.ratio is not None and backward.ratio is not None
    assert forward.ratio == pytest.approx(1 / backward.ratio, rel=1e-12)
    if forward.ratio_ci_low is not None and forward.ratio_ci_high is not None:
        assert backward.ratio_ci_high == pytest.approx(1 / forward.ratio_ci_low, rel=1e-12)
        assert backward.ratio_ci_low == pytest.approx(1 / forward.ratio_ci_high, rel=1e-12)
    mirror = {
        "slower": "faster",
        "faster": "slower",
        OUTCOME_NOT_SIGNIFICANT: OUTCOME_NOT_SIGNIFICANT,
    }
    assert backward.outcome == mirror[forward.outcome]
    assert forward.verdict.split("x ")[0] == backward.verdict.split("x ")[0]


@settings(max_examples=40, deadline=None)
@given(samples)
def test_identical_samples_are_not_significant(values: list[float]) -> None:
    result = compare_samples(values, list(values))
    assert result.verdict == OUTCOME_NOT_SIGNIFICANT
    assert result.ratio == 1.0
    assert result.ratio_ci_low is not None and result.ratio_ci_low <= 1.0 <= result.ratio_ci_high  # type: ignore[operator]


# --- runs --------------------------------------------------------------------------------


def _copy(run: Path, into: Path, **host_changes: object) -> Path:
    target = into / run.name
    shutil.copytree(run, target)
    record = json.loads((target / "run.json").read_text())
    for path, value in host_changes.items():
        node = record["host"]
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    (target / "run.json").write_text(json.dumps(record))
    return target


def test_two_real_runs_compare_with_verdicts() -> None:
    report = compare_dataset(load_dataset(FIXTURE_RUNS))
    assert report.baseline == FIXTURE_RUNS[0].name.split("/")[-1] or report.baseline
    assert not report.incomparable
    outcomes = {row.outcome for row in report.rows}
    assert OUTCOME_INCOMPARABLE not in outcomes
    startup = [r for r in report.rows if r.metric == "startup"]
    assert {r.backend for r in startup} == {"process", "docker"}
    for row in startup:
        assert row.n_baseline == 8 and row.n_contender == 8
        assert row.p_value is not None and row.verdict
    memory = {r.view for r in report.rows if r.metric == "memory"}
    assert {"pss", "cgroup_usage", "pss_overhead"} <= memory


def test_backends_compared_within_a_run() -> None:
    report = compare_dataset(load_dataset(TCG_RUN), "backend")
    assert report.baseline == "process"
    by_contender = {r.contender: r for r in report.rows}
    assert set(by_contender) == {"docker", "libvirt"}
    assert by_contender["libvirt"].outcome == "slower"
    assert any("TCG" in w for w in by_contender["libvirt"].warnings)


def test_scenario_and_host_mismatch_are_incomparable(tmp_path: Path) -> None:
    report = compare_dataset(load_dataset([FIXTURE_RUNS[0], XSS_RUN]))
    (reasons,) = report.incomparable.values()
    assert reasons[0].startswith("scenario differs")
    assert {r.outcome for r in report.rows} <= {OUTCOME_INCOMPARABLE, "missing"}
    other_cpu = _copy(FIXTURE_RUNS[1], tmp_path, cpu__model="AMD EPYC 7763")
    report = compare_dataset(load_dataset([FIXTURE_RUNS[0], other_cpu]))
    (reasons,) = report.incomparable.values()
    assert reasons == ["cpu.model differs (Intel(R) Xeon(R) Processor vs AMD EPYC 7763)"]
    assert all(
        r.verdict.startswith("incomparable: cpu.model differs")
        for r in report.rows
        if r.outcome == OUTCOME_INCOMPARABLE
    )
    assert not compare_dataset(
        load_dataset([FIXTURE_RUNS[0], other_cpu]), ignore_keys=["cpu.model"]
    ).incomparable


def test_group_by_kernel_pools_runs_and_kernel_never_blocks(tmp_path: Path) -> None:
    original = json.loads((FIXTURE_RUNS[0] / "run.json").read_text())
    total = original["host"]["memory"]["total_bytes"]
    newer = _copy(
        FIXTURE_RUNS[1],
        tmp_path,
        kernel__release="6.19.0-test",
        memory__total_bytes=total - 50 * 2**20,  # another kernel reserves a little more
    )
    report = compare_dataset(load_dataset([*FIXTURE_RUNS[:1], newer]), "kernel")
    assert [g.label for g in report.groups] == [
        original["host"]["kernel"]["release"],
        "6.19.0-test",
    ]
    assert not report.incomparable
    assert all(r.contender == "6.19.0-test" for r in report.rows)
    cgroup_v2 = _copy(FIXTURE_RUNS[1], tmp_path / "v2", cgroup__version=2)
    by_cgroup = compare_dataset(load_dataset([FIXTURE_RUNS[0], cgroup_v2]), "cgroup.version")
    assert not by_cgroup.incomparable, "the grouped key is what is compared, not a mismatch"
    with pytest.raises(CompareError, match="need at least two"):
        compare_dataset(load_dataset(FIXTURE_RUNS[0]), "kernel")


def test_accelerator_mismatch_is_incomparable_per_row(tmp_path: Path) -> None:
    kvm = _copy(TCG_RUN, tmp_path)
    lines = (kvm / "samples.jsonl").read_text().splitlines()
    edited = [
        line.replace('"accel":"tcg"', '"accel":"kvm"').replace(TCG_RUN.name, "copy-with-kvm")
        for line in lines
    ]
    (kvm / "samples.jsonl").write_text("\n".join(edited) + "\n")
    record = json.loads((kvm / "run.json").read_text())
    record["run_id"] = "copy-with-kvm"
    (kvm / "run.json").write_text(json.dumps(record))
    report = compare_dataset(load_dataset([TCG_RUN, kvm]))
    rows = {r.backend: r for r in report.rows}
    assert rows["libvirt"].verdict == "incomparable: accelerator differs (tcg vs kvm)"
    assert rows["docker"].outcome == OUTCOME_NOT_SIGNIFICANT


def test_output_formats() -> None:
    report = compare_dataset(load_dataset(FIXTURE_RUNS), metrics=["startup"])
    data = json.loads(format_json(report))
    assert data["group_by"] == "run" and len(data["rows"]) == len(report.rows)
    rows = list(csv.DictReader(io.StringIO(format_csv(report))))
    assert [r["verdict"] for r in rows] == [r.verdict for r in report.rows]
    markdown = format_markdown(report)
    assert markdown.count("\n| startup") == len(report.rows)


def test_cli_compare_formats_and_errors() -> None:
    result = bench("compare", *map(str, FIXTURE_RUNS), "--format", "json", "--metric", "startup")
    assert result.returncode == 0, result.stderr
    assert {r["metric"] for r in json.loads(result.stdout)["rows"]} == {"startup"}
    table = bench("compare", str(TCG_RUN), "--group-by", "backend")
    assert table.returncode == 0, table.stderr
    assert "TCG" in table.stdout and "slower" in table.stdout
    single = bench("compare", str(FIXTURE_RUNS[0]))
    assert single.returncode == 2 and "need at least two runs" in single.stderr
    missing = bench("compare", "/nonexistent/run")
    assert missing.returncode == 2 and "no such run directory" in missing.stderr


@pytest.mark.docker
def test_real_runs_from_the_engines_compared_end_to_end(tmp_path: Path) -> None:
    from bench.backends import get_backend
    from bench.errors import BenchError

    try:
        get_backend("docker").check_available()
    except BenchError as exc:
        skip_or_fail(str(exc))
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(
        "schema_version: 1\nname: tiny-compare\nbackends: [process, docker]\n"
        "samples: 5\nwarmups: 1\nsettle_s: 0.05\nseed: 11\n"
    )
    results = tmp_path / "results"
    for _ in range(2):
        run = bench("run", str(scenario), "--results", str(results), "--no-report")
        # exit 1 = a sample failed (counted, never averaged in): still a run to compare
        assert run.returncode in (0, 1) and "status complete" in run.stdout, run.stdout + run.stderr
    compared = bench("compare", str(results), "--format", "json")
    assert compared.returncode == 0, compared.stderr
    data = json.loads(compared.stdout)
    assert not data["incomparable"]
    assert {r["backend"] for r in data["rows"]} == {"process", "docker"}
    assert all(r["n_baseline"] >= 4 and r["p_value"] is not None for r in data["rows"])
    backends = bench("compare", str(results), "--group-by", "backend", "--format", "json")
    docker_rows = [r for r in json.loads(backends.stdout)["rows"] if r["contender"] == "docker"]
    assert len(docker_rows) == 2
    assert all(r["outcome"] == "slower" for r in docker_rows), (
        "a container starts slower than a process"
    )
