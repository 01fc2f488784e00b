"""Baseline gate: references from good runs, compare's verdicts, exit 1 when a quantity moved."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.analysis.baseline import (
    BASELINE_SCHEMA_VERSION,
    STATUS_ABOVE,
    STATUS_BELOW,
    STATUS_INCOMPARABLE,
    STATUS_INCONCLUSIVE,
    STATUS_MISSING,
    STATUS_NOT_ENFORCED,
    STATUS_OK,
    BaselineError,
    check_dataset,
    make_baseline,
    migrate_baseline,
    read_baseline,
    write_baseline,
)
from bench.analysis.calibration import make_calibration, write_calibration
from bench.analysis.dataset import load_dataset
from tests.conftest import DATA, REPO
from tests.synthetic_runs import blocks, write_run

RUNS = DATA / "runs"
FIXTURE_RUNS = sorted(p.parent for p in (RUNS / "fixture").rglob("run.json"))
GOOD = FIXTURE_RUNS[0]
BENCH = [sys.executable, "-m", "bench"]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "220"},
    )


def _with_blocks(
    tmp_path: Path, name: str, edit_line: object = None, blocks_count: int = 3, **host: object
) -> Path:
    """A copy of the good fixture run whose samples are spread over ``blocks_count`` blocks.

    Each block then holds a share of the run's samples (as ``bench run --repeat`` would
    have taken them); ``edit_line`` may change or drop sample lines.
    """
    target = tmp_path / name / GOOD.name
    shutil.copytree(GOOD, target)
    lines = (target / "samples.jsonl").read_text().splitlines()
    records = []
    counts: dict[str, int] = {}
    for line in lines:
        record = json.loads(line)
        quantity = f"{record['metric']} {record['backend']} {record['labels'].get('view')}"
        counts[quantity] = counts.get(quantity, -1) + 1
        record["block"] = counts[quantity] % blocks_count
        record["schema_version"] = 2
        if edit_line is not None:
            record = edit_line(record)  # type: ignore[operator]
        if record is not None:
            records.append(record)
    (target / "samples.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    if host:
        record = json.loads((target / "run.json").read_text())
        record["host"].update(host)
        (target / "run.json").write_text(json.dumps(record))
    return target


def _slower(factor: float, metric: str = "startup", backend: str | None = "docker") -> object:
    def edit(record: dict[str, object]) -> dict[str, object]:
        if record["metric"] == metric and backend in (None, record["backend"]):
            record["value"] = float(record["value"]) * factor  # type: ignore[arg-type]
        return record

    return edit


def test_references_from_a_good_run_pass_it(tmp_path: Path) -> None:
    good = _with_blocks(tmp_path, "good")
    dataset = load_dataset(good)
    document = make_baseline(dataset)
    assert document["schema_version"] == BASELINE_SCHEMA_VERSION
    (host,) = document["hosts"].values()
    (entry,) = host["scenarios"].values()
    references = entry["references"]
    assert {r["metric"] for r in references} == {"startup", "memory", "density", "limits"}
    assert not any(r["view"] == "mem_available" for r in references), "host state is not gated"
    startup = next(r for r in references if r["metric"] == "startup" and r["backend"] == "docker")
    assert startup["blocks"] == 3 and len(startup["block_medians"]) == 3
    result = check_dataset(dataset, document, calibration=None)
    assert not result.failed
    assert {row.status for row in result.rows} <= {STATUS_OK, STATUS_INCONCLUSIVE}
    assert any(row.status == STATUS_OK for row in result.rows)


def test_a_slower_run_fails_with_the_verdict(tmp_path: Path) -> None:
    document = make_baseline(load_dataset(_with_blocks(tmp_path, "good")))
    slower = _with_blocks(tmp_path, "slow", _slower(3.0))
    result = check_dataset(load_dataset(slower), document, calibration=None)
    assert result.failed
    (failure,) = result.failures
    assert (failure.metric, failure.backend, failure.status) == ("startup", "docker", STATUS_ABOVE)
    assert failure.detail.endswith("x slower") and failure.ratio is not None
    assert 2.5 < failure.ratio < 3.5
    faster = _with_blocks(tmp_path, "fast", _slower(0.3))
    (below,) = check_dataset(load_dataset(faster), document, calibration=None).failures
    assert below.status == STATUS_BELOW, "much faster than usual is as suspicious"


def test_one_block_on_both_sides_cannot_be_judged_without_a_calibration(tmp_path: Path) -> None:
    document = make_baseline(load_dataset(GOOD))
    assert next(iter(next(iter(document["hosts"].values()))["scenarios"].values()))["blocks"] == 1
    slower = _with_blocks(tmp_path, "slow", _slower(3.0), blocks_count=1)
    result = check_dataset(load_dataset(slower), document, calibration=None)
    assert not result.failed
    docker = next(r for r in result.rows if r.metric == "startup" and r.backend == "docker")
    assert docker.status == STATUS_INCONCLUSIVE and docker in result.unjudged
    assert docker.detail == "inconclusive: run-to-run noise unknown"


def test_a_calibration_lets_single_runs_be_judged(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    aa = [write_run(tmp_path, f"aa{i}", {"docker": blocks(rng, 3)}) for i in range(2)]
    write_calibration(tmp_path / "lab-01" / "calibration.json", make_calibration(load_dataset(aa)))
    good = write_run(tmp_path, "good", {"docker": blocks(rng, 1)})
    document = make_baseline(load_dataset(good))
    slow = write_run(tmp_path, "slow", {"docker": blocks(rng, 1, shift=1.5)})
    result = check_dataset(load_dataset(slow), document)
    (row,) = result.rows
    assert row.status == STATUS_ABOVE and row.noise == "calibration"
    assert any("calibration" in note for note in result.notes)


def test_missing_quantity_broken_limit_and_other_host_fail(tmp_path: Path) -> None:
    document = make_baseline(load_dataset(_with_blocks(tmp_path, "good")))

    def without_process_startup(record: dict[str, object]) -> dict[str, object] | None:
        if record["metric"] == "startup" and record["backend"] == "process":
            return None
        if record["metric"] == "limits" and record["labels"]["view"] == "cpu":  # type: ignore[index]
            record["labels"]["enforced"] = False  # type: ignore[index]
        return record

    edited = _with_blocks(tmp_path, "edited", without_process_startup)
    result = check_dataset(load_dataset(edited), document, calibration=None)
    statuses = {(r.metric, r.backend, r.view): r.status for r in result.failures}
    assert statuses[("startup", "process", "")] == STATUS_MISSING
    assert statuses[("limits", "docker", "cpu")] == STATUS_NOT_ENFORCED
    assert statuses[("limits", "process", "cpu")] == STATUS_NOT_ENFORCED
    other = _with_blocks(tmp_path, "other", cpu={"model": "AMD EPYC 7763", "logical_cores": 2})
    incomparable = check_dataset(load_dataset(other), document, calibration=None)
    assert {r.status for r in incomparable.rows} == {STATUS_INCOMPARABLE}
    assert "cpu.model is 'AMD EPYC 7763'" in incomparable.rows[0].detail


def test_no_entry_for_host_or_scenario_is_an_error(tmp_path: Path) -> None:
    document = make_baseline(load_dataset(GOOD))
    elsewhere = _with_blocks(tmp_path, "elsewhere", hostname="lab-07")
    with pytest.raises(BaselineError, match="no baseline for host 'lab-07'"):
        check_dataset(load_dataset(elsewhere), document)
    xss = next(p.parent for p in (RUNS / "xss").rglob("run.json"))
    with pytest.raises(BaselineError, match="no baseline for scenario"):
        check_dataset(load_dataset(xss), document)


def test_file_round_trip_update_versions_and_v1_migration(tmp_path: Path) -> None:
    path = tmp_path / "baselines" / "lab.json"
    write_baseline(path, make_baseline(load_dataset(GOOD)))
    document = read_baseline(path)
    tcg = next(p.parent for p in (RUNS / "tcg").rglob("run.json"))
    updated = make_baseline(load_dataset(tcg), existing=document)
    (host,) = updated["hosts"].values()
    assert len(host["scenarios"]) == 2, "an update keeps the other scenario's references"
    newer = {**document, "schema_version": BASELINE_SCHEMA_VERSION + 1}
    path.write_text(json.dumps(newer))
    with pytest.raises(BaselineError, match="newer than this bench reads"):
        read_baseline(path)
    path.write_text(json.dumps({"kind": "something-else", "schema_version": 1}))
    with pytest.raises(BaselineError, match="not a bench baseline"):
        read_baseline(path)
    band = {
        "metric": "startup",
        "backend": "docker",
        "case": "c",
        "view": "",
        "stage": "value",
        "unit": "s",
        "accel": "n/a",
        "n": 8,
        "median": 0.1,
        "lower": 0.09,
        "upper": 0.11,
        "tolerance": 0.1,
        "enforced": None,
    }
    version_1 = {
        "schema_version": 1,
        "kind": "bench-baseline",
        "ci_factor": 1.5,
        "tolerance_default": 0.1,
        "hosts": {
            "lab": {
                "facts": {},
                "scenarios": {"sha": {"scenario": "quick", "source_run": "r1", "bands": [band]}},
            }
        },
    }
    migrated = migrate_baseline(version_1, "v1")
    entry = migrated["hosts"]["lab"]["scenarios"]["sha"]
    assert migrated["schema_version"] == 2 and migrated["tolerance"] == 0.1
    assert entry["source_runs"] == ["r1"] and entry["blocks"] == 1
    (reference,) = entry["references"]
    assert reference["block_medians"] == [0.1] and reference["median"] == 0.1


def test_cli_baseline_then_check(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    good = _with_blocks(tmp_path, "good")
    written = bench("baseline", str(good), "-o", str(path))
    assert written.returncode == 0, written.stderr
    assert json.loads(path.read_text())["kind"] == "bench-baseline"
    # a density ramp is one value per run: one run cannot tell how it varies, and a check
    # that cannot tell fails on its own exit code unless told that is fine
    untold = bench("check", str(good), "--baseline", str(path))
    assert untold.returncode == 5, untold.stdout + untold.stderr
    assert "could not be told" in untold.stderr
    assert "no quantity moved beyond its margin" in untold.stdout
    passed = bench("check", str(good), "--baseline", str(path), "--allow-inconclusive")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    slow = _with_blocks(tmp_path, "slow", _slower(2.0, backend=None))
    failed = bench("check", str(slow), "--baseline", str(path))
    assert failed.returncode == 1
    assert re.search(r"FAILED: \d+ of \d+ quantities moved away from the baseline", failed.stdout)
    assert "above baseline" in failed.stdout and "x slower" in failed.stdout
    as_json = bench("check", str(slow), "--baseline", str(path), "--format", "json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["failed"] is True
    single = bench("baseline", str(GOOD), "-o", str(tmp_path / "single.json"))
    assert single.returncode == 0 and "has no run-to-run noise" in single.stderr
    no_file = bench("check", str(GOOD), "--baseline", str(tmp_path / "none.json"))
    assert no_file.returncode == 2 and "no such baseline file" in no_file.stderr


def test_a_check_that_cannot_tell_says_so_and_does_not_pass(tmp_path: Path) -> None:
    """A 20% slowdown against a noisy two-run baseline: underpowered, so it cannot pass."""
    rng = np.random.default_rng(21)
    good = [
        write_run(tmp_path, f"good{i}", {"docker": blocks(rng, 2, shift=s, block_sd=0.02)})
        for i, s in enumerate((0.85, 1.15))  # two runs that disagree by 30%
    ]
    document = make_baseline(load_dataset(good))
    (reference,) = next(iter(document["hosts"]["lab-01"]["scenarios"].values()))["references"]
    assert reference["block_runs"] == ["good0", "good0", "good1", "good1"]
    slow = write_run(tmp_path, "slow", {"docker": blocks(rng, 2, shift=1.2, block_sd=0.02)})
    result = check_dataset(load_dataset(slow), document, calibration=None)
    (row,) = result.rows
    assert row.status == STATUS_INCONCLUSIVE and not result.failed
    assert row.cannot_tell and row in result.unjudged
    assert row.mde is not None and row.margin is not None and row.mde > row.margin
    assert row.detail.startswith("inconclusive (underpowered: MDE ")
    assert row.p_value is not None and row.p_adjusted == row.p_value, "one row: nothing to adjust"
