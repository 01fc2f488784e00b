"""Runs that survive the unexpected: instances removed from outside, interrupts, bad hosts."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.backends import get_backend
from bench.capacity import check_fits
from bench.errors import ScenarioError
from bench.metrics.procmem import MIB
from bench.ownership import effective_status as ownership_status
from bench.ownership import instance_run_suffix, run_suffix
from bench.results import read_run, read_samples
from bench.runner import RunOutcome, run_scenario
from bench.scenario import expand_cases, parse_scenario
from tests.conftest import REPO
from tests.engine_proxy import EngineProxy

pytestmark = [pytest.mark.cgroups]


@pytest.mark.usefixtures("process_backend", "no_leftovers")
def _bench_run_argv(scenario: Path, results: Path) -> list[str]:
    """``bench run`` of a scenario into a results directory, without a report."""
    return [
        sys.executable,
        "-m",
        "bench",
        "run",
        str(scenario),
        "--results",
        str(results),
        "--no-report",
    ]


def test_density_counts_only_instances_alive_at_the_stop(tmp_path: Path) -> None:
    text = (
        "name: ramp\nbackends: [process]\nmetrics: [density]\n"
        "density: {max_count: 8, interval_s: 0.4, slo_min_instances: 100}\n"
    )
    outcome: list[RunOutcome] = []
    thread = threading.Thread(
        target=lambda: outcome.append(run_scenario(parse_scenario(text), text, "t", tmp_path))
    )
    thread.start()
    process = get_backend("process")
    victim = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and victim is None:
        # this run's instances only: another bench run may share the host
        runs = list(tmp_path.glob("*/*/run.json"))
        suffix = run_suffix(read_run(runs[0].parent)["run_id"]) if runs else None
        present = [n for n in process.leftovers() if instance_run_suffix(n) == suffix]
        if len(present) >= 3:
            victim = sorted(present)[0]
        time.sleep(0.05)
    assert victim is not None, "the ramp never started instances"
    assert process.remove_leftovers([victim]) == [victim], "removed from outside the run"
    thread.join(timeout=60)
    assert outcome and outcome[0].status == "complete"
    records = read_samples(outcome[0].directory).records
    final = next(r for r in records if r["labels"].get("view") == "count_reached")
    vanished = [r for r in records if r["labels"].get("view") == "vanished"]
    assert [r["instance"] for r in vanished] == [victim]
    assert not vanished[0]["ok"] and "removed from outside" in vanished[0]["error"]
    assert final["value"] == final["labels"]["count_started"] - 1
    assert final["labels"]["vanished"] == 1


def test_a_scenario_that_cannot_fit_is_refused_with_the_arithmetic() -> None:
    scenario = parse_scenario(
        "name: big\nbackends: [process]\nmetrics: [memory]\n"
        "instance: {payload: {mode: alloc, alloc_mib: 1024}}\n"
        "memory: {instances: 30}\ndensity: {mem_floor_mib: 2048}\n"
    )
    backends = {"process": get_backend("process")}
    with pytest.raises(ScenarioError) as caught:
        check_fits(scenario, backends, expand_cases(scenario), available_bytes=8 * 1024 * MIB)
    message = str(caught.value)
    assert "cannot fit" in message and "30 x 1026 MiB" in message
    assert "MemAvailable 8192 MiB - floor 2048 MiB" in message
    check_fits(scenario, backends, expand_cases(scenario), available_bytes=40 * 1024 * MIB)


@pytest.mark.docker
@pytest.mark.usefixtures("process_backend", "docker_backend", "no_leftovers")
@pytest.mark.parametrize(
    ("how", "delay_s"),
    [(signal.SIGINT, 1.5), (signal.SIGTERM, 3.0), (signal.SIGTERM, 4.5), (signal.SIGKILL, 3.5)],
)
def test_an_interrupt_anywhere_leaves_nothing_and_keeps_the_samples(
    tmp_path: Path, how: signal.Signals, delay_s: float
) -> None:
    scenario = tmp_path / "mixed.yaml"
    scenario.write_text(
        "name: mixed\nbackends: [process, docker]\nmetrics: [startup, memory, density]\n"
        "samples: 6\nwarmups: 0\nsettle_s: 0.05\n"
        "memory: {instances: 3, rounds: 1, settle_s: 0.5, drop_caches: false}\n"
        "density: {max_count: 12, interval_s: 0.1, slo_min_instances: 100}\n"
    )
    results = tmp_path / "results"
    proc = subprocess.Popen(
        _bench_run_argv(scenario, results),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay_s)
    sent = time.monotonic()
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=120)
    stop_s = time.monotonic() - sent
    run_dir = next(results.glob("*/*"))
    run = read_run(run_dir)
    suffix = run_suffix(run["run_id"])
    if how == signal.SIGKILL:
        assert ownership_status(run) == "abandoned"
        cleaned = subprocess.run(
            [sys.executable, "-m", "bench", "clean"], cwd=REPO, capture_output=True, text=True
        )
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    else:
        assert proc.returncode in (130, 0), stderr
        assert stop_s < 30, f"took {stop_s:.1f} s to stop"
        if proc.returncode == 130:
            assert run["status"] == "interrupted"
        lines = [ln for ln in (run_dir / "samples.jsonl").read_text().splitlines() if ln]
        assert len(lines) == run["counts"]["samples"] + run["counts"]["noise"]
    for name in ("process", "docker"):
        backend = get_backend(name)
        backend.check_available()
        left = [n for n in backend.leftovers() if instance_run_suffix(n) == suffix]
        backend.close()
        assert not left, f"{name} left {left} after {how.name}"


@pytest.mark.docker
@pytest.mark.usefixtures("process_backend", "docker_backend", "no_leftovers")
def test_an_engine_that_dies_mid_run_gives_error_samples_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    import json
    import os

    proxy = EngineProxy(tmp_path / "docker.sock")
    scenario = tmp_path / "mixed.yaml"
    scenario.write_text(
        "name: dies\nbackends: [process, docker]\nsamples: 30\nwarmups: 0\nsettle_s: 0.05\n"
    )
    results = tmp_path / "results"
    proc = subprocess.Popen(
        _bench_run_argv(scenario, results),
        cwd=REPO,
        env={**os.environ, "DOCKER_HOST": f"unix://{proxy.path}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list(results.glob("*/*/samples.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 10:
            break
        time.sleep(0.05)
    proxy.cut()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    run_dir = next(results.glob("*/*"))
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    docker_failed = [r for r in records if r["backend"] == "docker" and not r["ok"]]
    process_after = [
        r
        for r in records
        if r["backend"] == "process" and r["ok"] and r["seq"] > min(x["seq"] for x in docker_failed)
    ]
    assert docker_failed, "the engine's death shows as docker error samples"
    assert all(r["error"] for r in docker_failed), "each says why"
    assert len(process_after) >= 5, "the other backend went on"
    assert read_run(run_dir)["status"] == "complete"
    # what the dead engine could not remove is bench clean's (through the real engine)
    cleaned = subprocess.run(
        [sys.executable, "-m", "bench", "clean"], cwd=REPO, capture_output=True, text=True
    )
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
