"""The qemu-microvm backend: QEMU ``-M microvm`` started by bench itself, no libvirt.

Pure tests of its command lines, then real ones (QEMU under TCG here, through the real
runner): startup stages in order with the accelerator recorded, the memory views, the
limits enforced on qemu's own cgroup (and the guest-internal v2 rows), a hung guest
killed at its timeout, and a sweep of stray qemu processes and cgroups.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.backends import backend_names, get_backend
from bench.backends.base import Instance, Mechanism
from bench.backends.microvm_qemu import (
    MACHINE_OPTIONS,
    OWNER,
    MicrovmConfig,
    bench_process_name,
    join_cgroup_argv,
    qemu_argv,
    stray_qemus,
)
from bench.backends.qemu_microvm import QemuMicrovmBackend
from bench.cgroups.instance import InstanceCgroup
from bench.cgroups.layout import detect as detect_layout
from bench.cgroups.readers import cgroup_dir_for_pid
from bench.errors import BenchError, InstanceTimeout
from bench.metrics.startup import STAGE_ORDER
from bench.results import read_samples
from bench.runner import run_scenario
from bench.scenario import InstanceSpec, Payload, parse_scenario
from tests.conftest import skip_or_fail
from tests.support import assert_quota_held

VM_STAGES = {
    "create",
    "created",
    "started",
    "first_console_byte",
    "userspace",
    "ready",
    "exited",
    "removed",
    "gone",
}


def _config(**changes: Any) -> MicrovmConfig:
    values: dict[str, Any] = {
        "name": "bench-abc123-7",
        "accel": "tcg",
        "memory_mib": 128,
        "vcpus": 1,
        "kernel": Path("/k/vmlinux"),
        "initrd": Path("/k/initramfs.cpio"),
        "cmdline": "console=ttyS0 panic=-1 -- ready",
        "qemu": "/usr/bin/qemu-system-x86_64",
    }
    values.update(changes)
    return MicrovmConfig(**values)


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# -- pure: command lines, capabilities --------------------------------------------------


def test_qemu_argv_is_a_bare_microvm_with_the_console_on_stdout() -> None:
    argv = qemu_argv(_config(memory_mib=256, vcpus=2))
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert _flag(argv, "-M") == MACHINE_OPTIONS
    assert MACHINE_OPTIONS.startswith("microvm,") and "acpi=on" in MACHINE_OPTIONS
    assert _flag(argv, "-accel") == "tcg"
    assert _flag(argv, "-m") == "256" and _flag(argv, "-smp") == "2"
    assert _flag(argv, "-serial") == "stdio" and _flag(argv, "-monitor") == "none"
    assert {"-nodefaults", "-no-user-config", "-nographic", "-no-reboot"} <= set(argv)
    assert _flag(argv, "-kernel") == "/k/vmlinux"
    assert _flag(argv, "-initrd") == "/k/initramfs.cpio"
    assert _flag(argv, "-append") == "console=ttyS0 panic=-1 -- ready"
    assert _flag(argv, "-name") == f"bench-abc123-7.{OWNER}"
    # no network, no device, never -cpu host (it aborts under the dev machines' nested KVM)
    assert not {"-netdev", "-net", "-nic", "-device", "-cpu", "-S"} & set(argv)
    assert _flag(qemu_argv(_config(accel="kvm")), "-accel") == "kvm"
    with pytest.raises(ValueError, match="accel"):
        qemu_argv(_config(accel="hvf"))


def test_bench_process_name_finds_only_this_backends_qemu() -> None:
    assert bench_process_name(qemu_argv(_config())) == "bench-abc123-7"
    libvirt_qemu = ["/usr/bin/qemu-system-x86_64", "-name", "guest=bench-x-1,debug-threads=on"]
    assert bench_process_name(libvirt_qemu) is None
    assert bench_process_name(["qemu", "-name", f"someone-else.{OWNER}"]) is None
    assert bench_process_name(["qemu"]) is None


def test_join_wrapper_writes_every_procs_file_then_execs_in_the_same_process(
    tmp_path: Path,
) -> None:
    procs = [tmp_path / "memory procs", tmp_path / "cpu'procs"]  # quoting is exercised
    argv = join_cgroup_argv(procs, ["/bin/sh", "-c", 'echo "$$ $0 $1"', "arg0", "arg one"])
    assert argv[:2] == ["/bin/sh", "-c"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    pid, rest = proc.stdout.strip().split(" ", 1)
    assert rest == "arg0 arg one"
    assert int(pid) > 0
    for path in procs:
        assert path.read_text() == "0\n"
    # a failed join runs nothing
    failed = subprocess.run(
        join_cgroup_argv([tmp_path / "missing" / "cgroup.procs"], ["/bin/echo", "ran"]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode != 0 and "ran" not in failed.stdout and failed.stderr


def test_capabilities_are_declared_and_registered() -> None:
    assert "qemu-microvm" in backend_names()
    caps = QemuMicrovmBackend.capabilities
    assert caps.mechanism == Mechanism.VM
    assert caps.roles == ("qemu",)
    assert caps.runtime_in_limit and caps.guest_kernel
    assert caps.limit("memory").when == "create" and caps.limit("cpu").when == "create"
    pids = caps.limit("pids")
    assert not pids.applicable and "only inside the guest" in pids.how


# -- real: QEMU under TCG (or KVM where it really boots) ---------------------------------


@pytest.fixture(scope="module")
def microvm() -> Iterator[QemuMicrovmBackend]:
    """The backend, checked and prepared once (skip, or fail under CI, when it cannot run)."""
    backend = get_backend("qemu-microvm")
    assert isinstance(backend, QemuMicrovmBackend)
    try:
        backend.check_available()
        backend.prepare([InstanceSpec(accel="tcg")])
    except BenchError as exc:
        skip_or_fail(str(exc))
    yield backend
    backend.close()


def _run(text: str, results: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    outcome = run_scenario(parse_scenario(text), text, "test", results)
    assert outcome.status == "complete"
    run = json.loads((outcome.directory / "run.json").read_text())
    records = [r for r in read_samples(outcome.directory).records if r["metric"] != "noise"]
    return records, run


@pytest.mark.libvirt
@pytest.mark.cgroups
@pytest.mark.usefixtures("microvm", "no_leftovers")
def test_startup_and_memory_through_the_runner(tmp_path: Path) -> None:
    records, run = _run(
        "name: mv\nbackends: [qemu-microvm]\nmetrics: [startup, memory]\nsamples: 2\n"
        "warmups: 0\nsettle_s: 0\ninstance: {accel: tcg}\n"
        "memory: {instances: 2, settle_s: 1, drop_caches: false}\n",
        tmp_path,
    )
    software = run["software"]["qemu-microvm"]
    assert software["qemu"] and software["machine"] == MACHINE_OPTIONS
    assert software["accel"]["tcg"]["accel"] == "tcg"
    assert run["backends"]["qemu-microvm"]["mechanism"] == "vm"
    startup = [r for r in records if r["metric"] == "startup"]
    assert len(startup) == 2
    for sample in startup:
        assert sample["ok"], sample["error"]
        t_ns = sample["t_ns"]
        assert set(t_ns) >= VM_STAGES, t_ns
        stamps = [t_ns[name] for name in STAGE_ORDER if name in t_ns]
        assert stamps == sorted(stamps)
        labels = sample["labels"]
        assert labels["accel"] == "tcg" and labels["accel_reason"]
        assert labels["machine"] == "microvm" and labels["vmm"] == "qemu (no libvirt)"
        assert labels["mechanism"] == "vm" and labels["exit_code"] == 0
        stages = sample["stages"]
        assert (
            0
            < stages["to_first_byte_s"]
            < stages["to_userspace_s"]
            <= stages["to_ready_s"]
            < stages["to_exit_s"]
        )
        assert stages["create_s"] < 0.1 and stages["start_s"] < 0.1
        assert 0 < labels["guest_uptime_at_userspace_s"] < 60
    memory = [r for r in records if r["metric"] == "memory"]
    assert all(r["ok"] for r in memory), [r["error"] for r in memory if not r["ok"]]
    views = {(r["labels"]["view"], r["labels"]["role"]) for r in memory}
    assert {
        ("pss", "qemu"),
        ("pss", "total"),
        ("cgroup_usage", "cgroup"),
        ("cgroup_peak", "cgroup"),
        ("memavailable_drop", "host"),
    } <= views
    for record in memory:
        labels = record["labels"]
        if labels["view"] == "pss" and labels["role"] == "qemu":
            # a 128 MiB TCG guest's qemu is far above its idle guest kernel
            assert record["value"] > 50 and len(labels["pids"]) == 1
        if labels["view"] == "cgroup_usage":
            # qemu's own cgroup, joined before exec: it holds the guest's RAM
            assert labels["cgroup"].endswith(f".{OWNER}")
            assert record["value"] > 50


@pytest.mark.libvirt
@pytest.mark.cgroups
@pytest.mark.usefixtures("microvm", "no_leftovers")
def test_limits_hold_on_qemus_own_cgroup_and_in_the_guest(tmp_path: Path) -> None:
    records, _run_json = _run(
        "name: mvlim\nbackends: [qemu-microvm]\nmetrics: [limits]\ninstance: {accel: tcg}\n"
        "limits: {cpu_quotas: [0.5, 0.25], cpu_seconds: 3}\n",
        tmp_path,
    )
    checks = {(r["labels"]["view"], r["labels"]["set_value"]): r for r in records}
    failed = [(key, r["error"]) for key, r in checks.items() if r["error"]]
    assert not failed, failed

    def enforced(check: dict[str, Any]) -> None:
        labels = check["labels"]
        assert labels["enforced"] is True, (
            f"{labels['view']} set {labels['set_value']} measured {check['value']}: "
            f"{labels['evidence']} {check.get('error')}"
        )

    over = next(v for k, v in checks.items() if k[0] == "memory")
    enforced(over)
    evidence = over["labels"]["evidence"]
    # qemu itself was killed by the host for its cgroup's limit; the guest never reported
    assert evidence["killed_by_host"] is True and evidence["oom_kill_count"] >= 1
    assert evidence["guest_exit_code"] is None and evidence["accel"] == "tcg"
    assert evidence["limit_bytes"] == over["labels"]["set_value"] * 1024 * 1024
    control = next(v for k, v in checks.items() if k[0] == "memory_control")
    enforced(control)
    assert control["labels"]["evidence"]["guest_exit_code"] == 0
    for quota in (0.5, 0.25):
        cpu = checks[("cpu", quota)]
        enforced(cpu)
        labels = cpu["labels"]
        assert_quota_held(cpu["value"], quota, labels["evidence"], labels["verdict_note"])
    pids = checks[("pids", 20)]
    assert pids["labels"]["applicable"] is False and pids["labels"]["enforced"] is None
    assert "only inside the guest" in pids["labels"]["evidence"]["reason"]
    # the guest-internal rows: cgroup v2 files written by the guest's real v2 kernel
    guest_memory = checks[("memory_guest_v2", 64)]
    enforced(guest_memory)
    assert guest_memory["labels"]["evidence"]["guest_exit_code"] == 137
    enforced(checks[("pids_guest_v2", 20)])
    for quota in (0.5, 0.25):
        enforced(checks[("cpu_guest_v2", quota)])


@pytest.mark.libvirt
@pytest.mark.cgroups
@pytest.mark.usefixtures("no_leftovers")
def test_a_hung_guest_is_killed_at_its_timeout_and_cleaned_up() -> None:
    # no init in the initramfs and panic=0: the guest kernel panics and hangs forever
    backend = QemuMicrovmBackend(
        extra_cmdline=["rdinit=/nonexistent", "init=/nonexistent", "panic=0"]
    )
    try:
        backend.check_available()
    except BenchError as exc:
        skip_or_fail(str(exc))
    instance = backend.start(InstanceSpec(accel="tcg"), "bench-test-mvhang", "test-run-000011")
    pid = backend.main_pid(instance)
    assert pid is not None
    group = instance.handle["cgroup"]
    try:
        started = time.monotonic()
        with pytest.raises(InstanceTimeout, match="no READY line before the timeout"):
            backend.wait_ready(instance, 4)
        assert 3.5 < time.monotonic() - started < 20
        assert "userspace" not in instance.t_ns
        assert backend.is_alive(instance)
        # qemu runs in its own cgroup (its shell joined it, then exec'd qemu)
        directory = cgroup_dir_for_pid(pid, "memory", detect_layout())
        assert directory is not None and directory.name == f"bench-test-mvhang.{OWNER}"
        assert Path(f"/proc/{pid}/exe").resolve().name.startswith("qemu-system")
    finally:
        backend.stop(instance)
        backend.wait_gone(instance)
    assert "destroyed" in instance.t_ns, "a hung guest must be killed, not left running"
    assert instance.handle["proc"].returncode is not None  # reaped
    assert not os.path.exists(f"/proc/{pid}/cmdline") or pid not in stray_qemus()
    assert not group.dirs and "bench-test-mvhang" not in backend.leftovers()
    assert backend.exit_details(instance)["killed_by_host"] is False


@pytest.mark.libvirt
@pytest.mark.cgroups
@pytest.mark.usefixtures("microvm", "no_leftovers")
def test_sweep_kills_stray_qemus_and_removes_their_cgroups(
    microvm: QemuMicrovmBackend,
) -> None:
    layout = detect_layout()
    spec = InstanceSpec(accel="tcg", payload=Payload(mode="idle"))
    procs: list[subprocess.Popen[bytes]] = []
    groups: list[InstanceCgroup] = []
    try:
        # one stray qemu in its cgroup (a killed run), one outside any cgroup, one empty
        # cgroup; -S keeps each qemu paused, so they cost no CPU
        in_group = InstanceCgroup.create(layout, "bench-test-mvstray-1", owner=OWNER)
        empty = InstanceCgroup.create(layout, "bench-test-mvstray-3", owner=OWNER)
        groups += [in_group, empty]
        for name, group in (("bench-test-mvstray-1", in_group), ("bench-test-mvstray-2", None)):
            config = microvm.config(Instance(microvm.name, name, spec, "stray"), "tcg")
            argv = [*qemu_argv(config), "-S"]
            if group is not None:
                argv = join_cgroup_argv(group.procs_files(), argv)
            procs.append(
                subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            )
        deadline = time.monotonic() + 10
        while len(stray_qemus()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        expected = {"bench-test-mvstray-1", "bench-test-mvstray-2", "bench-test-mvstray-3"}
        assert set(microvm.leftovers()) >= expected
        # one instance by name: only its qemu goes
        microvm._remove_named(["bench-test-mvstray-2"], everything=False)
        assert procs[1].wait(timeout=10) == -9 and procs[0].poll() is None
        assert "bench-test-mvstray-2" not in microvm.leftovers()
        assert expected - {"bench-test-mvstray-2"} <= set(microvm.sweep())
        assert procs[0].wait(timeout=10) == -9
        assert not expected & set(microvm.leftovers())
        assert not any(d.exists() for g in groups for d in g.dirs.values())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for group in groups:
            group.remove()


@pytest.mark.libvirt
@pytest.mark.cgroups
@pytest.mark.usefixtures("no_leftovers")
def test_accel_auto_is_decided_by_a_real_microvm_boot(microvm: QemuMicrovmBackend) -> None:
    decision = microvm.accel_decision("auto")
    assert decision.accel in {"kvm", "tcg"} and decision.reason
    if decision.accel == "tcg" and os.path.exists("/dev/kvm"):
        # this host: /dev/kvm exists and still guests do not boot under it
        assert "did not reach userspace" in decision.reason or "failed" in decision.reason
    assert microvm.accel_decision("tcg").accel == "tcg"
    rows = {check.name: check for check in microvm.doctor_checks()}
    assert rows["qemu-microvm"].status == "ok" and "microvm" in rows["qemu-microvm"].detail
    assert rows["qemu-microvm guest artefacts"].status == "ok"
    kvm = rows["kvm (qemu-microvm)"]
    assert kvm.status in {"ok", "warn"} and (kvm.status == "ok" or kvm.fix)
