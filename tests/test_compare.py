"""Comparisons: sides of runs and blocks, incomparable groups, load flags, calibration, CLI."""

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

from bench.analysis.calibration import Calibration, make_calibration, write_calibration
from bench.analysis.compare import (
    CompareError,
    Group,
    Member,
    compare_dataset,
    condensed_warnings,
    format_csv,
    format_json,
    format_markdown,
)
from bench.analysis.dataset import load_dataset
from bench.analysis.verdict import (
    DIRECTIONAL_OUTCOMES,
    NOISE_CALIBRATED,
    NOISE_UNKNOWN,
    OUTCOME_INCOMPARABLE,
    OUTCOME_INCONCLUSIVE,
)
from tests.conftest import DATA, REPO, skip_or_fail
from tests.synthetic_runs import blocks, write_run

RUNS = DATA / "runs"
FIXTURE_RUNS = sorted(p.parent for p in (RUNS / "fixture").rglob("run.json"))
XSS_RUN = next(p.parent for p in (RUNS / "xss").rglob("run.json"))
TCG_RUN = next(p.parent for p in (RUNS / "tcg").rglob("run.json"))
BENCH = [sys.executable, "-m", "bench"]


def bench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "250"},
    )


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


def _runs(
    tmp_path: Path,
    count: int,
    *,
    seed: int,
    shift: float = 1.0,
    k: int = 1,
    prefix: str = "r",
    **kwargs: object,
) -> list[Path]:
    rng = np.random.default_rng(seed)
    return [
        write_run(
            tmp_path,
            f"{prefix}{i}",
            {"docker": blocks(rng, k, shift=shift), "process": blocks(rng, k, centre=0.008)},
            **kwargs,  # type: ignore[arg-type]
        )
        for i in range(count)
    ]


# --- fixture runs (schema 1: one block each) ----------------------------------------------


def test_two_single_block_runs_say_run_to_run_noise_is_unknown() -> None:
    report = compare_dataset(load_dataset(FIXTURE_RUNS))
    assert not report.incomparable
    startup = [r for r in report.rows if r.metric == "startup"]
    assert {r.backend for r in startup} == {"process", "docker"}
    for row in startup:
        assert (row.n_baseline, row.n_contender, row.blocks_baseline) == (8, 8, 1)
        assert row.outcome == OUTCOME_INCONCLUSIVE and row.noise == NOISE_UNKNOWN
        assert row.verdict == "inconclusive: run-to-run noise unknown"
        assert row.ratio_ci_low is not None, "the within-run interval is still shown"
    memory = {r.view: r for r in report.rows if r.metric == "memory"}
    assert {"pss", "cgroup_usage", "pss_overhead"} <= set(memory)
    assert memory["pss"].mode == "absolute" and memory["pss"].margin_source == "absolute floor"
    assert any("no calibration" in note for note in report.notes)


def test_backends_within_a_run_are_ordered_by_mechanism_and_paired() -> None:
    report = compare_dataset(load_dataset(TCG_RUN), "backend")
    assert report.baseline == "process", "the native backend is the baseline"
    assert [g.label for g in report.groups] == ["process", "docker", "libvirt"]
    by_contender = {r.contender: r for r in report.rows}
    assert set(by_contender) == {"docker", "libvirt"}
    assert by_contender["libvirt"].outcome == "slower"
    assert by_contender["libvirt"].difference is not None
    assert by_contender["libvirt"].difference > 1.0, "+1.9 s beside the ratio"
    assert any("TCG" in w for w in by_contender["libvirt"].warnings)


def test_order_comes_from_the_mechanism_label_for_any_backend(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    run = write_run(
        tmp_path,
        "new-backends",
        {
            "libvirt": blocks(rng, 2, centre=1.9),
            "gvisor": blocks(rng, 2, centre=0.3),
            "docker": blocks(rng, 2),
            "process": blocks(rng, 2, centre=0.008),
        },
    )
    report = compare_dataset(load_dataset(run), "backend", calibration=None)
    assert [g.label for g in report.groups] == ["process", "docker", "gvisor", "libvirt"]
    assert {r.contender: r.outcome for r in report.rows} == {
        "docker": "slower",
        "gvisor": "slower",
        "libvirt": "slower",
    }
    assert all(r.blocks_baseline == 2 == r.blocks_contender for r in report.rows)
    assert all(r.noise == "blocks" for r in report.rows)


def test_scenario_and_host_mismatch_are_incomparable(tmp_path: Path) -> None:
    report = compare_dataset(load_dataset([FIXTURE_RUNS[0], XSS_RUN]))
    (reasons,) = report.incomparable.values()
    assert reasons[0].startswith("scenario differs")
    assert {r.outcome for r in report.rows} <= {OUTCOME_INCOMPARABLE, "missing"}
    other_cpu = _copy(FIXTURE_RUNS[1], tmp_path, cpu__model="AMD EPYC 7763")
    report = compare_dataset(load_dataset([FIXTURE_RUNS[0], other_cpu]))
    (reasons,) = report.incomparable.values()
    assert reasons == ["cpu.model differs (Intel(R) Xeon(R) Processor vs AMD EPYC 7763)"]
    assert not compare_dataset(
        load_dataset([FIXTURE_RUNS[0], other_cpu]), ignore_keys=["cpu.model"]
    ).incomparable


def test_group_by_kernel_pools_runs_as_blocks(tmp_path: Path) -> None:
    runs = _runs(tmp_path, 4, seed=2)
    for run in runs[2:]:
        record = json.loads((run / "run.json").read_text())
        record["host"]["kernel"]["release"] = "6.19.0-test"
        (run / "run.json").write_text(json.dumps(record))
    report = compare_dataset(load_dataset(runs), "kernel", calibration=None)
    assert [g.label for g in report.groups][1] == "6.19.0-test"
    assert not report.incomparable, "the kernel is what is compared, never a mismatch"
    docker = next(r for r in report.rows if r.backend == "docker")
    assert (docker.blocks_baseline, docker.blocks_contender) == (2, 2)
    assert docker.noise == "blocks" and docker.outcome not in DIRECTIONAL_OUTCOMES
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
    assert rows["docker"].outcome == OUTCOME_INCONCLUSIVE


# --- sides, blocks, load, calibration ------------------------------------------------------


def test_sets_of_runs_detect_a_shift_and_an_aa_split_does_not(tmp_path: Path) -> None:
    baseline = _runs(tmp_path, 3, seed=3, prefix="a")
    contender = _runs(tmp_path, 3, seed=4, shift=1.2, prefix="b")
    dataset = load_dataset([*baseline, *contender])
    sides = [
        Group("A", ("a0", "a1", "a2")),
        Group("B", ("b0", "b1", "b2")),
    ]
    report = compare_dataset(dataset, sides=sides, calibration=None)
    docker = next(r for r in report.rows if r.backend == "docker")
    assert report.group_by == "sides" and docker.outcome == "slower"
    assert (docker.blocks_baseline, docker.blocks_contender) == (3, 3)
    process = next(r for r in report.rows if r.backend == "process")
    assert process.outcome not in DIRECTIONAL_OUTCOMES
    one_run = _runs(tmp_path / "six", 1, seed=5, k=6)[0]
    split = [
        Group("first", ("r0",), (Member("r0", frozenset({0, 1, 2})),)),
        Group("second", ("r0",), (Member("r0", frozenset({3, 4, 5})),)),
    ]
    aa = compare_dataset(load_dataset(one_run), sides=split, calibration=None)
    assert all(r.blocks_baseline == 3 and r.blocks_contender == 3 for r in aa.rows)
    assert not [r for r in aa.rows if r.outcome in DIRECTIONAL_OUTCOMES]


def test_a_difference_in_background_load_is_flagged_with_figures(tmp_path: Path) -> None:
    quiet = _runs(
        tmp_path,
        1,
        seed=6,
        k=2,
        prefix="quiet",
        noise={"foreign_cpu_cores": [0.01, 0.02], "loadavg_1m": [0.1, 0.2]},
    )
    busy = _runs(
        tmp_path,
        1,
        seed=7,
        k=2,
        prefix="busy",
        noise={"foreign_cpu_cores": [1.9, 1.8], "loadavg_1m": [2.1, 2.2]},
    )
    report = compare_dataset(load_dataset([*quiet, *busy]), calibration=None)
    load = report.load["busy0"]
    assert load.flagged
    assert load.summary() == "CPU of other processes 0.01 vs 1.85 cores"
    assert all(
        "background load differs: CPU of other processes 0.01 vs 1.85 cores" in r.warnings
        for r in report.rows
    )
    assert not {r.metric for r in report.rows} & {"noise"}, "noise is not a compared metric"
    calm = compare_dataset(
        load_dataset(
            [
                *quiet,
                *_runs(
                    tmp_path / "c",
                    1,
                    seed=8,
                    k=2,
                    prefix="calm",
                    noise={"foreign_cpu_cores": [0.05, 0.0]},
                ),
            ]
        )
    )
    assert not calm.load["calm0"].flagged


def test_a_calibration_beside_the_runs_is_used_and_said(tmp_path: Path) -> None:
    aa = _runs(tmp_path, 2, seed=9, k=3, prefix="cal")
    document = make_calibration(load_dataset(aa))
    path = tmp_path / "lab-01" / "calibration.json"
    write_calibration(path, document)
    single = [
        *_runs(tmp_path, 1, seed=10, prefix="x"),
        *_runs(tmp_path, 1, seed=11, shift=1.5, prefix="y"),
    ]
    report = compare_dataset(load_dataset(single))
    docker = next(r for r in report.rows if r.backend == "docker")
    assert docker.noise == NOISE_CALIBRATED and docker.outcome == "slower"
    assert any(str(path) in note for note in report.notes)
    assert report.settings["calibration"] == str(path)
    unused = compare_dataset(load_dataset(single), calibration=None)
    assert all(r.noise == NOISE_UNKNOWN for r in unused.rows)
    elsewhere = _runs(tmp_path, 1, seed=12, prefix="z", hostname="lab-02")
    with pytest.raises(CompareError, match="does not describe these runs"):
        compare_dataset(load_dataset([*single, *elsewhere]), calibration=Calibration.read(path))


def test_output_formats() -> None:
    report = compare_dataset(load_dataset(FIXTURE_RUNS), metrics=["startup"])
    data = json.loads(format_json(report))
    assert data["group_by"] == "run" and len(data["rows"]) == len(report.rows)
    assert {"margin", "mde", "difference", "blocks_baseline"} <= set(data["rows"][0])
    rows = list(csv.DictReader(io.StringIO(format_csv(report))))
    assert [r["verdict"] for r in rows] == [r.verdict for r in report.rows]
    markdown = format_markdown(report)
    assert markdown.count("\n| startup") == len(report.rows)
    assert "t interval on block medians" in markdown
    assert condensed_warnings(report) == [
        "run-to-run noise unknown: one block per side and no calibration (2 rows)"
    ]


# --- the command line ------------------------------------------------------------------------


def test_cli_compare_formats_and_errors() -> None:
    result = bench("compare", *map(str, FIXTURE_RUNS), "--format", "json", "--metric", "startup")
    assert result.returncode == 0, result.stderr
    assert {r["metric"] for r in json.loads(result.stdout)["rows"]} == {"startup"}
    table = bench("compare", str(TCG_RUN), "--group-by", "backend")
    assert table.returncode == 0, table.stderr
    assert "TCG" in table.stdout and "slower" in table.stdout and "MDE" in table.stdout
    single = bench("compare", str(FIXTURE_RUNS[0]))
    assert single.returncode == 2 and "need at least two runs" in single.stderr
    missing = bench("compare", "/nonexistent/run")
    assert missing.returncode == 2 and "no such run directory" in missing.stderr
    nothing = bench("compare", str(FIXTURE_RUNS[0]), "--", "/nonexistent/*-quick-*")
    assert nothing.returncode == 2 and "matched nothing" in nothing.stderr
    bad_blocks = bench("compare", f"{FIXTURE_RUNS[0]}@2-1", str(FIXTURE_RUNS[1]))
    assert bad_blocks.returncode == 2 and "bad block selection" in bad_blocks.stderr


def test_cli_sides_globs_and_blocks(tmp_path: Path) -> None:
    _runs(tmp_path, 2, seed=13, k=2, prefix="base-")
    _runs(tmp_path, 2, seed=14, k=2, shift=1.3, prefix="new-")
    host = tmp_path / "lab-01"
    sides = bench(
        "compare",
        str(host / "base-*"),
        "--",
        str(host / "new-*"),
        "--format",
        "json",
        "--no-calibration",
    )
    assert sides.returncode == 0, sides.stderr
    data = json.loads(sides.stdout)
    assert data["group_by"] == "sides"
    assert [g["members"] for g in data["groups"]] == [["base-0", "base-1"], ["new-0", "new-1"]]
    docker = next(r for r in data["rows"] if r["backend"] == "docker")
    assert docker["outcome"] == "slower" and docker["blocks_baseline"] == 4
    table = bench("compare", f"{host / 'base-0'}@0", f"{host / 'base-0'}@1", "--no-calibration")
    assert table.returncode == 0, table.stderr
    assert "base-0@1 against base-0@0" in table.stdout
    twice = bench("compare", str(host / "base-0"), "--", str(host / "new-0"), "--", "x")
    assert twice.returncode == 2 and "one --" in twice.stderr


def test_cli_calibrate_from_existing_runs_then_compare_uses_it(tmp_path: Path) -> None:
    aa = _runs(tmp_path, 2, seed=15, k=3, prefix="aa-")
    result = bench("calibrate", *map(str, aa))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "lab-01" / "calibration.json"
    assert f"calibration: {path}" in result.stdout and "docker" in result.stdout
    document = json.loads(path.read_text())
    assert document["kind"] == "bench-calibration" and document["schema_version"] == 2
    docker = next(e for e in document["entries"] if e["backend"] == "docker")
    # two levels: blocks inside a run (6 blocks in 2 runs: 4 df) and runs beyond them
    assert docker["blocks"] == 6 and docker["df"] == 4 and docker["sigma_log"] > 0
    assert docker["run_df"] > 0 and docker["run_sigma_log"] is not None
    pair = [*_runs(tmp_path, 1, seed=16, prefix="p-"), *_runs(tmp_path, 1, seed=17, prefix="q-")]
    compared = bench("compare", *map(str, pair), "--format", "json")
    data = json.loads(compared.stdout)
    assert data["settings"]["calibration"] == str(path)
    assert {r["noise"] for r in data["rows"]} == {"calibration"}
    too_few = bench("calibrate", str(pair[0]))
    assert too_few.returncode == 2 and "at least 3 blocks" in too_few.stderr


# --- real engines ----------------------------------------------------------------------------


@pytest.mark.cgroups
@pytest.mark.usefixtures("process_backend", "no_leftovers")
def test_two_tiny_real_runs_with_repeats_compare_block_by_block(tmp_path: Path) -> None:
    from bench.runner import run_scenario
    from bench.scenario import parse_scenario

    text = (
        "schema_version: 1\nname: tiny-aa\nbackends: [process]\nsamples: 4\nwarmups: 1\n"
        "settle_s: 0.05\nseed: 7\nrepeats: 2\nrepeat_gap_s: 0.2\n"
    )
    scenario = parse_scenario(text)
    # A run of this size takes under a second: right after a container test it can fall
    # wholly inside dockerd's asynchronous cleanup, which slows a native process by ~11 ms
    # (see the README), and the pair would then differ for a real reason. A first run,
    # discarded, puts both runs of the pair on the host in the same state.
    warmup, *outcomes = [
        run_scenario(scenario, text, "tiny-aa.yaml", tmp_path / name) for name in ("w", "a", "b")
    ]
    assert warmup.status == "complete"
    assert all(o.status == "complete" for o in outcomes)
    dataset = load_dataset([o.directory for o in outcomes])
    assert sorted(dataset.samples["block"].unique().tolist()) == [0, 1]
    report = compare_dataset(dataset, calibration=None)
    (row,) = [r for r in report.rows if r.metric == "startup" and r.stage == "value"]
    assert (row.blocks_baseline, row.blocks_contender) == (2, 2)
    assert row.n_baseline == row.n_contender == 8
    assert row.noise == "blocks" and row.mde is not None and row.p_value is not None
    assert row.outcome not in DIRECTIONAL_OUTCOMES, "an A/A pair is never slower or faster"


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
    startup = [r for r in data["rows"] if r["metric"] == "startup"]
    assert {r["backend"] for r in startup} == {"process", "docker"}
    assert all(r["n_baseline"] >= 4 and r["outcome"] not in DIRECTIONAL_OUTCOMES for r in startup)
    backends = bench("compare", str(results), "--group-by", "backend", "--format", "json")
    docker_rows = [
        r
        for r in json.loads(backends.stdout)["rows"]
        if r["contender"] == "docker" and r["metric"] == "startup"
    ]
    assert len(docker_rows) == 2
    assert all(r["outcome"] == "slower" for r in docker_rows), (
        "a container starts slower than a process"
    )
