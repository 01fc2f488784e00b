"""Limit enforcement measured for real on this host: process, docker and libvirt (TCG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.results import read_samples
from bench.runner import run_scenario
from bench.scenario import parse_scenario
from tests.support import assert_quota_held

pytestmark = [pytest.mark.usefixtures("no_leftovers")]


def _checks(text: str, results: Path) -> dict[tuple[str, str, Any], dict[str, Any]]:
    outcome = run_scenario(parse_scenario(text), text, "test", results)
    assert outcome.status == "complete"
    checks = {}
    for record in read_samples(outcome.directory).records:
        if record["metric"] != "limits":
            continue
        labels = record["labels"]
        checks[(record["backend"], labels["view"], labels["set_value"])] = {**record, **labels}
    return checks


def _assert_enforced(check: dict[str, Any]) -> None:
    assert check["enforced"] is True, (
        f"{check['backend']} {check['view']} set {check['set_value']} measured {check['value']}: "
        f"{check['evidence']} {check.get('error')}"
    )


@pytest.mark.docker
@pytest.mark.cgroups
@pytest.mark.usefixtures("docker_backend", "process_backend")
def test_process_and_docker_limits_hold(tmp_path: Path) -> None:
    checks = _checks(
        "name: lim\nbackends: [process, docker]\nmetrics: [limits]\n"
        "limits: {cpu_quotas: [0.5, 0.25], cpu_seconds: 3, memory_limit_mib: 64, "
        "memory_alloc_mib: 128, memory_control_mib: 16, pids_limit: 20, pids_forks: 40}\n",
        tmp_path,
    )
    for backend in ("process", "docker"):
        over = checks[(backend, "memory", 64)]
        _assert_enforced(over)
        assert over["evidence"]["killed"] is True
        assert over["value"] <= 64 + 4, "peak usage past the limit"
        assert over["value"] >= 32, "the payload never got near the limit: nothing was tested"
        control = checks[(backend, "memory_control", 64)]
        _assert_enforced(control)
        assert control["evidence"]["exit_code"] == 0 and control["evidence"]["allocated_line"]
        for quota in (0.5, 0.25):
            cpu = checks[(backend, "cpu", quota)]
            _assert_enforced(cpu)
            assert_quota_held(cpu["value"], quota, cpu["evidence"], cpu["verdict_note"])
            assert len(cpu["series"]["cores"]) > 10
        pids = checks[(backend, "pids", 20)]
        _assert_enforced(pids)
        assert pids["evidence"]["refused_after"] == 19 and pids["evidence"]["errno"] == "EAGAIN"
        assert pids["evidence"]["pids_events_max"] >= 1
    assert checks[("docker", "memory", 64)]["evidence"]["engine_oom_killed"] is True


@pytest.mark.libvirt
@pytest.mark.usefixtures("libvirt_backend")
def test_vm_live_hard_limit_kills_qemu_and_vcpu_quota_holds(tmp_path: Path) -> None:
    checks = _checks(
        "name: limvm\nbackends: [libvirt]\nmetrics: [limits]\ninstance: {accel: tcg}\n"
        "limits: {cpu_quotas: [0.5, 0.25], cpu_seconds: 3}\n",
        tmp_path,
    )
    over = next(v for k, v in checks.items() if k[1] == "memory")
    _assert_enforced(over)
    evidence = over["evidence"]
    assert evidence["killed_by_host"] is True and evidence["shutoff_reason"] == "crashed"
    assert evidence["oom_kill_count"] >= 1 and evidence["guest_exit_code"] is None
    assert evidence["limit_file_bytes"] == pytest.approx(over["set_value"] * 1024 * 1024, abs=4096)
    control = next(v for k, v in checks.items() if k[1] == "memory_control")
    _assert_enforced(control)
    assert control["evidence"]["guest_exit_code"] == 0
    for quota in (0.5, 0.25):
        cpu = checks[("libvirt", "cpu", quota)]
        _assert_enforced(cpu)
        assert cpu["accel"] == "tcg"
    pids = checks[("libvirt", "pids", 20)]
    assert pids["applicable"] is False and pids["enforced"] is None
    assert "only inside the guest" in pids["evidence"]["reason"]
    # the guest-internal rows: cgroup v2 files written by the guest's real v2 kernel
    guest_memory = checks[("libvirt", "memory_guest_v2", 64)]
    _assert_enforced(guest_memory)
    assert guest_memory["evidence"]["guest_exit_code"] == 137, "payload killed inside the guest"
    assert guest_memory["evidence"]["oom_kill_count"] >= 1
    assert guest_memory["evidence"]["memory_max_file"] == 64 * 1024 * 1024
    guest_pids = checks[("libvirt", "pids_guest_v2", 20)]
    _assert_enforced(guest_pids)
    assert (
        guest_pids["evidence"]["refused_after"] == 19
        and guest_pids["evidence"]["pids_events_max"] >= 1
    )
    for quota in (0.5, 0.25):
        _assert_enforced(checks[("libvirt", "cpu_guest_v2", quota)])
