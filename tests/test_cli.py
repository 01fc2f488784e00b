"""The command line end to end, as a user runs it: real engines, real files, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.backends.base import Backend
from bench.results import read_run
from tests.conftest import REPO
from tests.support import run_frame

BENCH = [sys.executable, "-m", "bench"]


def bench(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_help_lists_commands() -> None:
    result = bench("--help")
    assert result.returncode == 0
    for command in (
        "run",
        "show",
        "doctor",
        "clean",
        "ls",
        "schema",
        "validate",
        "compare",
        "calibrate",
        "baseline",
        "check",
        "report",
    ):
        assert command in result.stdout


def test_bad_scenario_one_message_exit_2_nothing_started(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbackends: [docker]\nsamples: -1\n")
    results = tmp_path / "results"
    result = bench("run", str(bad), "--results", str(results))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {bad}: field samples: Input should be greater than or equal to 1 (got -1)"
    )
    assert "Traceback" not in result.stderr
    assert not results.exists(), "a rejected scenario must not create a run"


def test_unknown_scenario_file_exit_2(tmp_path: Path) -> None:
    result = bench("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read scenario" in result.stderr


def test_validate_and_schema(tmp_path: Path) -> None:
    result = bench("validate", "scenarios/quick.yaml")
    assert result.returncode == 0 and "ok" in result.stdout
    out = tmp_path / "schema.json"
    assert bench("schema", "-o", str(out)).returncode == 0
    assert json.loads(out.read_text())["title"] == "bench scenario"


@pytest.mark.docker
@pytest.mark.cgroups
@pytest.mark.usefixtures("docker_backend", "process_backend", "no_leftovers")
def test_run_records_a_complete_run_and_ls_lists_it(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(
        "name: tiny\nbackends: [process, docker]\nsamples: 2\nwarmups: 1\nsettle_s: 0\ntimeout_s: 30\n"
    )
    results = tmp_path / "results"
    result = bench(
        "run", str(scenario), "--results", str(results), "--reports", str(tmp_path / "reports")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "startup to READY" in result.stdout
    run_dirs = list(results.glob("*/*"))
    assert len(run_dirs) == 1
    run = read_run(run_dirs[0])
    assert run["status"] == "complete"
    assert run["counts"]["samples"] == 6 and run["counts"]["warmup"] == 2
    assert run["counts"]["ok"] == 6 and run["counts"]["failed"] == 0
    assert run["counts"]["noise"] >= 3, "host noise is recorded for the block"
    assert run["scenario"]["text"] == scenario.read_text()
    assert len(run["scenario_sha256"]) == 64
    assert run["host"]["kernel"]["release"] == os.uname().release
    assert run["software"]["docker"]["docker_engine"]
    assert run["load_end"]["loadavg"] is not None
    frame = run_frame(run_dirs[0])
    assert sorted(frame.groupby("backend").size().items()) == [("docker", 3), ("process", 3)]
    assert frame["ok"].all() and (frame["value"] > 0).all()
    report = tmp_path / "reports" / f"{run['run_id']}.html"
    assert report.is_file() and report.stat().st_size > 100_000, "bench run writes its report"
    assert "tiny" in report.read_text()
    listing = bench("ls", "--results", str(results))
    assert listing.returncode == 0 and run["run_id"] in listing.stdout


@pytest.mark.docker
@pytest.mark.cgroups
@pytest.mark.usefixtures("docker_backend", "process_backend", "no_leftovers")
def test_sigterm_mid_run_keeps_samples_and_leaves_nothing(tmp_path: Path) -> None:
    scenario = tmp_path / "long.yaml"
    scenario.write_text(
        "name: long\nbackends: [process, docker]\nsamples: 500\nwarmups: 0\nsettle_s: 0.05\n"
    )
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [*BENCH, "run", str(scenario), "--results", str(results), "--no-report"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        samples_file = None
        while time.monotonic() < deadline:
            found = list(results.glob("*/*/samples.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 4:
                samples_file = found[0]
                break
            time.sleep(0.05)
        assert samples_file is not None, "run never produced samples"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    run = read_run(samples_file.parent)
    assert run["status"] == "interrupted"
    kept = run_frame(samples_file.parent)
    assert len(kept) >= 4 and len(kept) == run["counts"]["samples"]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_backend")
def test_doctor_reports_every_check() -> None:
    from bench.doctor import run_checks

    checks = {check.name: check for check in run_checks()}
    assert checks["docker"].status == "ok" and "engine" in checks["docker"].detail
    assert checks["cgroups"].status == "ok"
    assert checks["kvm (libvirt)"].status != "ok", "KVM is never 'ok' without a real guest boot"
    result = bench("doctor")
    for name in checks:
        assert name in result.stdout
    failed = any(check.status == "fail" for check in checks.values())
    assert result.returncode == (1 if failed else 0)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_backend", "no_leftovers")
def test_clean_removes_labelled_instances(docker_backend: Backend) -> None:
    from bench.scenario import InstanceSpec, Payload

    instance = docker_backend.start(
        InstanceSpec(payload=Payload(mode="idle")), "bench-test-clean", "r"
    )
    docker_backend.wait_ready(instance, 30)
    dry = bench("clean", "--dry-run")
    assert "bench-test-clean" in dry.stdout and "would remove" in dry.stdout
    result = bench("clean")
    assert result.returncode == 0 and "bench-test-clean" in result.stdout
    assert "bench-test-clean" not in docker_backend.leftovers()
    docker_backend.stop(instance)


def test_version_flag_completion_and_plain_tables_when_piped(tmp_path: Path) -> None:
    result = bench("--version")
    assert result.returncode == 0 and result.stdout.strip().startswith("bench ")
    assert "--install-completion" in bench("--help").stdout
    listing = bench("ls", "--results", str(REPO / "tests" / "data" / "runs"))
    assert listing.returncode == 0
    assert "\x1b[" not in listing.stdout, "no colour codes when piped"
    assert "┃" not in listing.stdout and "+--" in listing.stdout, "ASCII tables when piped"
    assert bench("ls", "--results", str(tmp_path / "nope")).returncode == 2
    as_json = bench("ls", "--json", "--results", str(REPO / "tests" / "data" / "runs"))
    runs = json.loads(as_json.stdout)
    assert runs and all("status" in r or "error" in r for r in runs)


def test_validate_checks_every_file_and_exits_2_if_any_is_bad(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbackends: [docker]\nsamples: 0\n")
    worse = tmp_path / "worse.yaml"
    worse.write_text("name: [\n")
    result = bench("validate", str(bad), "scenarios/quick.yaml", str(worse))
    assert result.returncode == 2
    assert "scenarios/quick.yaml: ok" in result.stdout
    assert str(bad) in result.stderr and str(worse) in result.stderr
    as_json = json.loads(bench("validate", "--json", str(bad), "scenarios/quick.yaml").stdout)
    assert [r["ok"] for r in as_json] == [False, True]


def test_markup_in_external_text_is_printed_as_is(tmp_path: Path) -> None:
    weird = tmp_path / "[bold]x[red]y.yaml"
    weird.write_text("name: t\nbackends: [nosuch]\n")
    result = bench("validate", str(weird))
    assert result.returncode == 2
    assert "[bold]x[red]y.yaml" in result.stderr
    assert "MarkupError" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.cgroups
@pytest.mark.usefixtures("process_backend", "no_leftovers")
def test_kill_9_then_resume_repeats_no_step(tmp_path: Path) -> None:
    scenario = tmp_path / "long.yaml"
    scenario.write_text(
        "name: long\nbackends: [process]\nmetrics: [startup, memory]\nsamples: 30\n"
        "warmups: 1\nsettle_s: 0.05\nmemory: {instances: 2, rounds: 1, settle_s: 0.3}\n"
    )
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [*BENCH, "run", str(scenario), "--results", str(results), "--no-report"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    run_dir = None
    while time.monotonic() < deadline:
        found = list(results.glob("*/*/run.json"))
        if found and json.loads(found[0].read_text()).get("steps_done", 0) >= 8:
            run_dir = found[0].parent
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=30)
    assert run_dir is not None, "the run never got going"
    listing = json.loads(bench("ls", "--json", "--results", str(results)).stdout)
    assert listing[0]["status"] == "abandoned"
    before = len((run_dir / "samples.jsonl").read_text().splitlines())
    # the killed run's instance cgroups (if any) belong to no live run: clean may take them
    resumed = bench("run", "--resume", run_dir.name, "--results", str(results), "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    run = read_run(run_dir)
    assert run["status"] == "complete" and run["steps_done"] == run["plan"]["steps"]
    assert run["resumes"][0]["from_step"] >= 8
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["metric"] == "startup"]
    assert len(steps) == len(set(steps)), "no step measured twice"
    assert sorted(steps) == list(range(len(steps))), "every startup step measured"
    assert len(records) > before
    assert len({r["seq"] for r in records}) == len(records), "sequence numbers stay unique"
    overheads = [r for r in records if str(r["labels"].get("view", "")).endswith("_overhead")]
    assert not overheads, "a run with only a native backend has no overhead records"
    again = bench("run", "--resume", run_dir.name, "--results", str(results))
    assert again.returncode == 1 and "complete" in again.stderr, "a complete run is not resumed"


@pytest.mark.cgroups
@pytest.mark.usefixtures("process_backend", "no_leftovers")
def test_clean_spares_instances_of_a_running_run(tmp_path: Path) -> None:
    scenario = tmp_path / "hold.yaml"
    scenario.write_text(
        "name: hold\nbackends: [process]\nmetrics: [memory]\n"
        "memory: {instances: 3, rounds: 1, settle_s: 10, drop_caches: false}\n"
    )
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [*BENCH, "run", str(scenario), "--results", str(results), "--no-report"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        listed = ""
        while time.monotonic() < deadline:
            listed = bench("clean", "--dry-run").stdout
            if "left 3 of running runs" in listed:
                break
            time.sleep(0.2)
        assert "left 3 of running runs" in listed, listed
        cleaned = bench("clean")
        assert cleaned.returncode == 0 and "process: removed 0" in cleaned.stdout
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    run = read_run(next(results.glob("*/*")))
    assert run["status"] == "complete" and run["counts"]["failed"] == 0
