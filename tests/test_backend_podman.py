"""The podman backend: real podman (runc, conmon) through the real runner, plus pure helpers.

Real-engine tests skip with the reason when podman is unavailable, except under CI=true,
where that is a failure. Counts are kept small: the whole file takes ~30 s.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.artifacts.image import ProbeImage
from bench.backends.base import BENCH_LABEL, BENCH_RUN_LABEL
from bench.backends.podman import PodmanBackend
from bench.backends.podman_cli import (
    BENCH_BACKEND_LABEL,
    InstanceFiles,
    K8sLogReader,
    conmon_exit_dir,
    create_argv,
    parse_k8s_record,
    ulimit_args,
)
from bench.errors import BackendUnavailable, BenchError, InstanceError, InstanceTimeout
from bench.metrics.startup import STAGE_ORDER
from bench.results import read_samples
from bench.runner import run_scenario
from bench.scenario import InstanceSpec, Payload, parse_scenario

MIB = 1024 * 1024


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def podman_backend() -> Iterator[PodmanBackend]:
    """The podman backend, checked and its image built once for this file."""
    backend = PodmanBackend()
    try:
        backend.check_available()
        backend.prepare([])
    except BenchError as exc:
        _unavailable(str(exc))
    yield backend
    backend.close()


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _running(pid: int) -> bool:
    """True while pid runs (an exited conmon lingers as a zombie until PID 1 reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _run(text: str, results: Path) -> tuple[Any, list[dict[str, Any]]]:
    outcome = run_scenario(parse_scenario(text), text, "test", results)
    records = [r for r in read_samples(outcome.directory).records if r["metric"] != "noise"]
    return outcome, records


# -- through the real runner ------------------------------------------------------------


@pytest.mark.podman
@pytest.mark.usefixtures("no_leftovers", "podman_backend")
def test_startup_and_memory_through_the_runner(tmp_path: Path) -> None:
    outcome, records = _run(
        "name: pod\nbackends: [podman]\nmetrics: [startup, memory]\nsamples: 3\nwarmups: 1\n"
        "settle_s: 0.1\nmemory: {instances: 2, rounds: 1, settle_s: 0.5, drop_caches: false}\n",
        tmp_path,
    )
    assert outcome.status == "complete"
    run = json.loads((outcome.directory / "run.json").read_text())
    software = run["software"]["podman"]
    assert software["podman"] and software["runtime"] == "runc" and software["conmon"]
    assert software["cgroup_manager"] == "cgroupfs"

    startup = [r for r in records if r["metric"] == "startup"]
    assert len(startup) == 4 and sum(r["warmup"] for r in startup) == 1
    for sample in startup:
        assert sample["ok"], sample["error"]
        assert set(sample["t_ns"]) - {"create_abs"} == {
            "create",
            "created",
            "started",
            "ready",
            "exited",
            "removed",
            "gone",
        }
        stamps = [sample["t_ns"][name] for name in STAGE_ORDER if name in sample["t_ns"]]
        assert stamps == sorted(stamps)
        for stage in ("create_s", "start_s", "to_ready_s", "to_exit_s", "remove_s"):
            assert sample["stages"][stage] > 0, stage
        labels = sample["labels"]
        assert labels["mechanism"] == "container" and labels["runtime"] == "runc"
        assert labels["image"].startswith("sha256:") and labels["exit_code"] == 0
        assert 0 < sample["value"] < 10

    memory = [r for r in records if r["metric"] == "memory"]
    assert all(r["ok"] for r in memory), [r["error"] for r in memory if not r["ok"]]
    by_view: dict[tuple[str, str], list[float]] = {}
    for record in memory:
        key = (record["labels"]["view"], record["labels"]["role"])
        by_view.setdefault(key, []).append(record["value"])
    assert len(by_view[("pss", "container")]) == 2
    # the probe idles in a few hundred KiB; conmon is a small C daemon of its own
    assert all(0 < v < 16 for v in by_view[("pss", "container")])
    assert all(0.1 < v < 16 for v in by_view[("pss", "conmon")])
    assert all(0 < v < 64 for v in by_view[("cgroup_usage", "cgroup")])
    assert len(by_view[("memavailable_drop", "host")]) == 1


@pytest.mark.podman
@pytest.mark.cgroups
@pytest.mark.usefixtures("no_leftovers", "podman_backend")
def test_limits_hold(tmp_path: Path) -> None:
    outcome, records = _run(
        "name: podlim\nbackends: [podman]\nmetrics: [limits]\n"
        "limits: {cpu_quotas: [0.5, 0.25], cpu_seconds: 2, memory_limit_mib: 64, "
        "memory_alloc_mib: 128, memory_control_mib: 16, pids_limit: 20, pids_forks: 40}\n",
        tmp_path,
    )
    assert outcome.status == "complete"
    checks = {
        (r["labels"]["view"], r["labels"]["set_value"]): {**r, **r["labels"]} for r in records
    }

    def enforced(check: dict[str, Any]) -> None:
        assert check["enforced"] is True, (
            f"{check['view']} set {check['set_value']} measured {check['value']}: "
            f"{check['evidence']} {check.get('error')}"
        )

    over = checks[("memory", 64)]
    enforced(over)
    evidence = over["evidence"]
    # podman's own verdict (conmon's oom file, found because start ran in the bundle dir)
    assert evidence["engine_oom_killed"] is True
    assert evidence["killed"] and evidence["killed_by_host"] and evidence["exit_code"] == 137
    assert evidence["oom_kill_count"] >= 1
    assert 32 <= over["value"] <= 64 + 4
    control = checks[("memory_control", 64)]
    enforced(control)
    assert control["evidence"]["exit_code"] == 0 and control["evidence"]["allocated_line"]
    cpus = [checks[("cpu", quota)] for quota in (0.5, 0.25)]
    for cpu in cpus:
        # the quota holds: never above it, throttled, and busy enough that it mattered
        assert 0.5 * cpu["set_value"] <= cpu["value"] <= 1.05 * cpu["set_value"], cpu
        assert cpu["evidence"]["nr_throttled_delta"] > 0
    # the metric's verdict also wants usage within 5% *below* the quota, which other
    # tenants of a shared 2-core host can spoil for one 2 s run: one of the two suffices
    assert any(cpu["enforced"] for cpu in cpus), [(c["set_value"], c["value"]) for c in cpus]
    pids = checks[("pids", 20)]
    enforced(pids)
    assert pids["evidence"]["refused_after"] == 19 and pids["evidence"]["errno"] == "EAGAIN"
    assert pids["evidence"]["pids_events_max"] >= 1


# -- the backend on its own -------------------------------------------------------------


@pytest.mark.podman
@pytest.mark.usefixtures("no_leftovers")
def test_container_is_labelled_limited_and_fully_removed(podman_backend: PodmanBackend) -> None:
    spec = InstanceSpec(memory_mib=64, cpus=0.5, pids_limit=30, payload=Payload(mode="idle"))
    instance = podman_backend.start(spec, "bench-test-podman-inspect", "test-run-podman")
    try:
        podman_backend.wait_ready(instance, 30)
        inspect = json.loads(
            _podman("inspect", "--type", "container", instance.handle["id"]).stdout
        )
        config, host = inspect[0]["Config"], inspect[0]["HostConfig"]
        assert inspect[0]["Name"] == "bench-test-podman-inspect"
        assert config["Labels"][BENCH_LABEL] == "true"
        assert config["Labels"][BENCH_RUN_LABEL] == "test-run-podman"
        assert config["Labels"][BENCH_BACKEND_LABEL] == "podman"
        assert host["NetworkMode"] == "none"
        assert host["Memory"] == 64 * MIB and host["MemorySwap"] == 64 * MIB
        assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 30
        nofile = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}["RLIMIT_NOFILE"]
        assert nofile == resource.getrlimit(resource.RLIMIT_NOFILE)
        roles = podman_backend.host_processes(instance)
        assert roles["container"] == [podman_backend.main_pid(instance)]
        (conmon,) = roles["conmon"]
        assert Path(f"/proc/{conmon}/comm").read_text().strip() == "conmon"
        assert "bench-test-podman-inspect" in podman_backend.leftovers()
        cgroup = Path(f"/proc/{roles['container'][0]}/cgroup").read_text()
    finally:
        podman_backend.stop(instance)
    podman_backend.wait_gone(instance)
    assert "bench-test-podman-inspect" not in podman_backend.leftovers()
    assert not _running(conmon)
    assert not any(path.exists() for path in instance.handle["files"].all())
    memory_path = next(line.split(":", 2)[2] for line in cgroup.splitlines() if ":memory:" in line)
    assert not Path("/sys/fs/cgroup/memory", memory_path.lstrip("/")).exists()
    for stage in ("create", "created", "started", "ready", "removed", "gone"):
        assert stage in instance.t_ns


@pytest.mark.podman
@pytest.mark.usefixtures("no_leftovers")
def test_exit_timeout_is_an_error_and_the_container_is_removed(
    podman_backend: PodmanBackend,
) -> None:
    instance = podman_backend.start(
        InstanceSpec(payload=Payload(mode="idle")), "bench-test-podman-hang", "r"
    )
    try:
        podman_backend.wait_ready(instance, 30)
        with pytest.raises(InstanceTimeout, match="did not exit"):
            podman_backend.wait_exit(instance, 0.5)
    finally:
        podman_backend.stop(instance)
        podman_backend.wait_gone(instance)
    assert podman_backend.leftovers() == []


@pytest.mark.podman
@pytest.mark.usefixtures("no_leftovers")
def test_payload_dying_before_ready_is_an_error_not_a_timeout(
    podman_backend: PodmanBackend,
) -> None:
    spec = InstanceSpec(payload=Payload(mode="idle", spin_ms=5000))
    instance = podman_backend.start(spec, "bench-test-podman-dies", "r")
    try:
        pid = podman_backend.main_pid(instance)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(InstanceError, match="output ended before READY"):
            podman_backend.wait_ready(instance, 30)
        assert time.monotonic() - started < 3, "the exit was seen, not waited out"
        assert podman_backend.exit_details(instance)["killed_by_host"] is True
    finally:
        podman_backend.stop(instance)
        podman_backend.wait_gone(instance)


@pytest.mark.podman
@pytest.mark.usefixtures("no_leftovers")
def test_sweep_finds_containers_by_label(podman_backend: PodmanBackend) -> None:
    instance = podman_backend.start(
        InstanceSpec(payload=Payload(mode="idle")), "bench-test-podman-orphan", "r"
    )
    podman_backend.wait_ready(instance, 30)
    assert podman_backend.sweep() == ["bench-test-podman-orphan"]
    assert podman_backend.leftovers() == []
    assert not any(path.exists() for path in instance.handle["files"].all())
    podman_backend.stop(instance)  # already gone: removal tolerates that
    podman_backend.wait_gone(instance)


@pytest.mark.podman
@pytest.mark.usefixtures("no_leftovers")
def test_remove_leftovers_removes_only_the_named_ones(podman_backend: PodmanBackend) -> None:
    idle = InstanceSpec(payload=Payload(mode="idle"))
    keep = podman_backend.start(idle, "bench-test-podman-keep", "r")
    drop = podman_backend.start(idle, "bench-test-podman-drop", "r")
    try:
        podman_backend.wait_ready(drop, 30)
        done = podman_backend.remove_leftovers(["bench-test-podman-drop"])
        assert done == ["bench-test-podman-drop"]
        assert podman_backend.leftovers() == ["bench-test-podman-keep"]
        assert not any(path.exists() for path in drop.handle["files"].all())
        assert podman_backend.is_alive(keep) and not podman_backend.is_alive(drop)
    finally:
        for instance in (keep, drop):
            podman_backend.stop(instance)
            podman_backend.wait_gone(instance)


@pytest.mark.podman
@pytest.mark.usefixtures("no_leftovers")
def test_missing_image_fails_create_with_podmans_reason(podman_backend: PodmanBackend) -> None:
    broken = PodmanBackend()
    broken.check_available()
    broken._image = ProbeImage("localhost/bench-probe:does-not-exist", "sha256:0", "0")
    instance = None
    with pytest.raises(InstanceError, match="podman create failed"):
        instance = broken.start(InstanceSpec(), "bench-test-podman-noimage", "r")
    assert instance is None
    assert broken.leftovers() == []
    assert not InstanceFiles.for_name("bench-test-podman-noimage").log.exists()


def test_missing_podman_says_why_and_how_to_fix() -> None:
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    backend = PodmanBackend(executable="/nonexistent/podman")
    with pytest.raises(BackendUnavailable) as caught:
        backend.check_available()
    message = str(caught.value)
    assert message.startswith("backend podman unavailable: /nonexistent/podman not found")
    assert "ansible/up.sh" in message


# -- pure helpers -----------------------------------------------------------------------


def test_ulimits_follow_the_callers_limits_and_cap_nproc_at_pid_max() -> None:
    assert ulimit_args((1024, 20000), (96363, 96363), 32768) == [
        "--ulimit",
        "nofile=1024:20000",
        "--ulimit",
        "nproc=32768:32768",
    ]
    infinity = resource.RLIM_INFINITY
    assert ulimit_args((infinity, infinity), (100, infinity), None) == [
        "--ulimit",
        "nofile=-1:-1",
        "--ulimit",
        "nproc=100:-1",
    ]
    assert ulimit_args((1, 2), (infinity, infinity), 4194304)[-1] == "nproc=4194304:4194304"


def test_create_argv_is_a_list_with_labels_limits_and_the_payload_last() -> None:
    files = InstanceFiles.for_name("bench-x-1", Path("/run/bench/podman"))
    spec = InstanceSpec(memory_mib=64, cpus=0.25, payload=Payload(mode="alloc", alloc_mib=8))
    argv = create_argv(spec, "bench-x-1", "run-1", "podman", "localhost/img:1", files, ["--u"])
    assert argv[:3] == ["create", "--name", "bench-x-1"]
    assert argv[argv.index("--network") + 1] == "none"
    assert argv[argv.index("--memory") + 1] == "64m" == argv[argv.index("--memory-swap") + 1]
    assert argv[argv.index("--cpus") + 1] == "0.25"
    assert argv[argv.index("--pids-limit") + 1] == "-1"  # unset: unlimited, not podman's 2048
    assert argv[argv.index("--pull") + 1] == "never"
    assert f"path={files.log}" in argv and "io.bench.run_id=run-1" in argv
    assert argv[argv.index("localhost/img:1") :] == ["localhost/img:1", "alloc", "8"]


def test_k8s_log_records_become_the_payloads_bytes(tmp_path: Path) -> None:
    assert parse_k8s_record(b"2026-12-01T17:06:00.1+00:00 stdout F READY") == b"READY\n"
    assert parse_k8s_record(b"2026-12-01T17:06:00.1+00:00 stdout P REA") == b"REA"
    assert parse_k8s_record(b"2026-12-01T17:06:00.1+00:00 stderr F ") == b"\n"
    assert parse_k8s_record(b"garbage") == b""
    log = tmp_path / "c.log"
    reader = K8sLogReader(log)
    assert reader.read() == b""  # conmon has not created it yet
    log.write_bytes(b"t stdout P ALLOC \nt stdout F 16\nt stdout F REA")
    assert reader.read() == b"ALLOC 16\n"
    with log.open("ab") as handle:
        handle.write(b"DY\n")
    assert reader.read() == b"READY\n"
    reader.close()
    reader.close()


def test_exit_dir_is_read_from_conmons_arguments() -> None:
    assert conmon_exit_dir(["conmon", "-c", "x", "--exit-dir", "/run/libpod/exits"]) == Path(
        "/run/libpod/exits"
    )
    assert conmon_exit_dir(["conmon", "--exit-dir=/x"]) == Path("/x")
    assert conmon_exit_dir(["conmon"]) is None
