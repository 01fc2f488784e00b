"""Baseline gate: bands from a good run, a clear failing table and exit 1 when a metric leaves it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.analysis.baseline import (
    BASELINE_SCHEMA_VERSION,
    STATUS_ABOVE,
    STATUS_INCOMPARABLE,
    STATUS_MISSING,
    STATUS_NOT_ENFORCED,
    STATUS_OK,
    BaselineError,
    check_dataset,
    make_baseline,
    read_baseline,
    write_baseline,
)
from bench.analysis.dataset import load_dataset
from tests.conftest import DATA, REPO

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


def _edited_copy(tmp_path: Path, edit_line: object = None, **host: object) -> Path:
    """A copy of the good run with each sample line passed through ``edit_line``."""
    target = tmp_path / GOOD.name
    shutil.copytree(GOOD, target)
    if edit_line is not None:
        lines = (target / "samples.jsonl").read_text().splitlines()
        records = [edit_line(json.loads(line)) for line in lines]  # type: ignore[operator]
        (target / "samples.jsonl").write_text(
            "\n".join(json.dumps(r) for r in records if r is not None) + "\n"
        )
    if host:
        record = json.loads((target / "run.json").read_text())
        record["host"].update(host)
        (target / "run.json").write_text(json.dumps(record))
    return target


def test_bands_from_a_good_run_pass_it() -> None:
    dataset = load_dataset(GOOD)
    document = make_baseline(dataset)
    assert document["schema_version"] == BASELINE_SCHEMA_VERSION
    (host,) = document["hosts"].values()
    (entry,) = host["scenarios"].values()
    bands = entry["bands"]
    assert {b["metric"] for b in bands} == {"startup", "memory", "density", "limits"}
    assert not any(b["view"] == "mem_available" for b in bands), "host state is not gated"
    for band in bands:
        assert band["lower"] <= band["median"] <= band["upper"]
        assert band["upper"] - band["median"] >= 0.1 * abs(band["median"]) - 1e-12
    result = check_dataset(dataset, document)
    assert not result.failed
    assert {row.status for row in result.rows} == {STATUS_OK}


def test_slower_run_fails_with_reason(tmp_path: Path) -> None:
    def slower(record: dict[str, object]) -> dict[str, object]:
        if record["metric"] == "startup" and record["backend"] == "docker":
            record["value"] = float(record["value"]) * 3  # type: ignore[arg-type]
        return record

    document = make_baseline(load_dataset(GOOD))
    result = check_dataset(load_dataset(_edited_copy(tmp_path, slower)), document)
    assert result.failed
    (failure,) = result.failures
    assert (failure.metric, failure.backend, failure.status) == ("startup", "docker", STATUS_ABOVE)
    assert "3.00x the baseline median" in failure.detail


def test_missing_quantity_broken_limit_and_other_host_fail(tmp_path: Path) -> None:
    document = make_baseline(load_dataset(GOOD))

    def without_process_startup(record: dict[str, object]) -> dict[str, object] | None:
        if record["metric"] == "startup" and record["backend"] == "process":
            return None
        if record["metric"] == "limits" and record["labels"]["view"] == "cpu":  # type: ignore[index]
            record["labels"]["enforced"] = False  # type: ignore[index]
        return record

    result = check_dataset(load_dataset(_edited_copy(tmp_path, without_process_startup)), document)
    statuses = {(r.metric, r.backend, r.view): r.status for r in result.failures}
    assert statuses[("startup", "process", "")] == STATUS_MISSING
    assert statuses[("limits", "docker", "cpu")] == STATUS_NOT_ENFORCED
    assert statuses[("limits", "process", "cpu")] == STATUS_NOT_ENFORCED
    other = _edited_copy(tmp_path / "other", cpu={"model": "AMD EPYC 7763", "logical_cores": 2})
    incomparable = check_dataset(load_dataset(other), document)
    assert {r.status for r in incomparable.rows} == {STATUS_INCOMPARABLE}
    assert "cpu.model is 'AMD EPYC 7763'" in incomparable.rows[0].detail


def test_no_entry_for_host_or_scenario_is_an_error(tmp_path: Path) -> None:
    document = make_baseline(load_dataset(GOOD))
    elsewhere = _edited_copy(tmp_path, hostname="lab-07")
    with pytest.raises(BaselineError, match="no baseline for host 'lab-07'"):
        check_dataset(load_dataset(elsewhere), document)
    xss = next(p.parent for p in (RUNS / "xss").rglob("run.json"))
    with pytest.raises(BaselineError, match="no baseline for scenario"):
        check_dataset(load_dataset(xss), document)


def test_file_round_trip_update_and_versions(tmp_path: Path) -> None:
    path = tmp_path / "baselines" / "lab.json"
    write_baseline(path, make_baseline(load_dataset(GOOD)))
    document = read_baseline(path)
    tcg = next(p.parent for p in (RUNS / "tcg").rglob("run.json"))
    updated = make_baseline(load_dataset(tcg), existing=document)
    (host,) = updated["hosts"].values()
    assert len(host["scenarios"]) == 2, "an update keeps the other scenario's bands"
    newer = {**document, "schema_version": BASELINE_SCHEMA_VERSION + 1}
    path.write_text(json.dumps(newer))
    with pytest.raises(BaselineError, match="newer than this bench reads"):
        read_baseline(path)
    path.write_text(json.dumps({"kind": "something-else", "schema_version": 1}))
    with pytest.raises(BaselineError, match="not a bench baseline"):
        read_baseline(path)


def test_cli_baseline_then_check(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    written = bench("baseline", str(GOOD), "-o", str(path))
    assert written.returncode == 0, written.stderr
    assert json.loads(path.read_text())["kind"] == "bench-baseline"
    passed = bench("check", str(GOOD), "--baseline", str(path))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "within their bands" in passed.stdout

    def slower(record: dict[str, object]) -> dict[str, object]:
        if record["metric"] == "startup":
            record["value"] = float(record["value"]) * 2  # type: ignore[arg-type]
        return record

    failed = bench("check", str(_edited_copy(tmp_path, slower)), "--baseline", str(path))
    assert failed.returncode == 1
    assert re.search(r"FAILED: \d+ of \d+ quantities left their band", failed.stdout)
    assert "above band" in failed.stdout and "2.00x the baseline" in failed.stdout
    as_json = bench(
        "check",
        str(_edited_copy(tmp_path / "j", slower)),
        "--baseline",
        str(path),
        "--format",
        "json",
    )
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["failed"] is True
    no_file = bench("check", str(GOOD), "--baseline", str(tmp_path / "none.json"))
    assert no_file.returncode == 2 and "no such baseline file" in no_file.stderr
