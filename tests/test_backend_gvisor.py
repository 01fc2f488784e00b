"""The gvisor backend against the real engine and runsc: stages, sandbox roles, limits, ownership."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.backends import get_backend
from bench.backends.base import Backend
from bench.errors import BenchError
from bench.results import read_samples
from bench.runner import run_scenario
from bench.scenario import InstanceSpec, Payload, parse_scenario
from tests.conftest import skip_or_fail

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


@pytest.fixture(scope="module")
def gvisor_backend() -> Iterator[Backend]:
    backend = get_backend("gvisor")
    try:
        backend.check_available()
        backend.prepare([])
    except BenchError as exc:
        skip_or_fail(str(exc))
    yield backend
    backend.close()


def _records(text: str, results: Path) -> list[dict[str, Any]]:
    outcome = run_scenario(parse_scenario(text), text, "test", results)
    assert outcome.status == "complete"
    return [r for r in read_samples(outcome.directory).records if r["metric"] != "noise"]


def test_startup_runs_in_a_runsc_sandbox_with_every_stage(
    gvisor_backend: Backend, tmp_path: Path
) -> None:
    records = _records(
        "name: g\nbackends: [gvisor]\nmetrics: [startup]\nsamples: 3\nwarmups: 0\n", tmp_path
    )
    assert len(records) == 3
    for record in records:
        assert record["ok"], record["error"]
        assert record["labels"]["mechanism"] == "sandbox"
        assert record["labels"]["runtime"] == "runsc"
        stages = record["stages"]
        assert (
            0 < stages["create_s"] < stages["start_s"] + stages["create_s"] <= stages["to_ready_s"]
        )
        assert stages["to_ready_s"] < stages["to_exit_s"]


def test_sandbox_processes_and_ownership(gvisor_backend: Backend) -> None:
    spec = InstanceSpec(payload=Payload(mode="idle"))
    instance = gvisor_backend.start(spec, "bench-test-gvisor", "test-run-g")
    docker = get_backend("docker")
    try:
        gvisor_backend.wait_ready(instance, 30)
        roles = gvisor_backend.host_processes(instance)
        assert set(roles) == {"sandbox", "containerd-shim"}
        # the Sentry, the gofer and the ptrace stub at least
        assert len(roles["sandbox"]) >= 3, roles
        assert roles["containerd-shim"], roles
        assert "bench-test-gvisor" in gvisor_backend.leftovers()
        docker.check_available()
        assert "bench-test-gvisor" not in docker.leftovers(), "docker must not claim it"
    finally:
        gvisor_backend.stop(instance)
        gvisor_backend.wait_gone(instance)
        docker.close()
    assert gvisor_backend.leftovers() == []


def test_limits_memory_and_cpu_hold_pids_not_applicable(
    gvisor_backend: Backend, tmp_path: Path
) -> None:
    records = _records(
        "name: gl\nbackends: [gvisor]\nmetrics: [limits]\n"
        "limits: {cpu_quotas: [0.5], cpu_seconds: 2}\n",
        tmp_path,
    )
    checks = {r["labels"]["view"]: r for r in records}
    over = checks["memory"]["labels"]
    assert over["enforced"] is True, over["evidence"]
    # killed for the limit: the engine says OOMKilled, or the host SIGKILLed the sandbox
    # and its cgroup counted an OOM kill. runsc's shim hands the engine its OOM event only
    # when the event wins a race with the exit (once in a CI run it did not), so the
    # kernel's own counter is evidence enough, and the engine's flag is not relied on
    evidence = over["evidence"]
    assert evidence["killed"] is True
    assert evidence["engine_oom_killed"] or (
        evidence["killed_by_host"] and evidence["oom_kill_count"] >= 1
    ), evidence
    # the limit covers the Sentry: set as its calibrated footprint plus the scenario's 64 MiB
    assert over["set_value"] == pytest.approx(
        over["evidence"]["calibration_anon_peak_mib"] + 64, abs=1
    )
    assert checks["memory_control"]["labels"]["enforced"] is True
    assert checks["cpu"]["labels"]["enforced"] is True, checks["cpu"]["labels"]["evidence"]
    pids = checks["pids"]["labels"]
    assert pids["applicable"] is False and "not a host task" in pids["evidence"]["reason"]
    assert checks["pids"]["value"] is None, "no number is invented"


def test_doctor_runs_a_real_sandbox(gvisor_backend: Backend) -> None:
    rows = get_backend("gvisor").doctor_checks()
    assert [r.status for r in rows] == ["ok"], rows
    assert "a sandbox ran the probe" in rows[0].detail
