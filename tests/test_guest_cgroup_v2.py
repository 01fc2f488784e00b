"""cgroup v2 inside a guest: the kernel parameter, the console parsers, and real enforcement.

This host is cgroup v1, so the v2 path meets a real v2 kernel inside a QEMU TCG guest
(Debian cloud kernel 6.1, 128 MiB, 1 vCPU): the probe as init runs the payload in a v2
group with the limits from ``bench_cgroup2=`` and reports the group's files over the
serial console. The pure tests parse consoles captured from such boots
(tests/data/cgroup/v2/, see its README); the boot tests repeat those boots live. No test
here passes on v2 logic that never met a real v2 kernel.

Recapture the consoles with ``python -m tests.test_guest_cgroup_v2`` from the repo root.
"""

from __future__ import annotations

import itertools
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.artifacts.guest import (
    GuestArtifacts,
    QemuBoot,
    boot_cmdline,
    boot_with_qemu,
    guest_artifacts,
    qemu_command,
)
from bench.cgroups import readers
from bench.cgroups.guest_v2 import (
    DUMPED_FILES,
    TIME_KEY,
    cpu_max_cores,
    cpu_max_value,
    cpu_stat,
    cpu_throttled_rise,
    cpu_usage_rate,
    guest_cgroup_param,
    memory_current_bytes,
    memory_events,
    memory_max_bytes,
    memory_oom_killed,
    memory_oom_kills,
    memory_peak_bytes,
    parse_cgroup_absent,
    parse_cgroup_controllers,
    parse_cgroup_dump,
    parse_cgroup_errors,
    parse_cgroup_samples,
    pids_limit,
    pids_max_events,
    pids_peak,
    samples_capped,
)
from bench.cgroups.layout import CgroupLayout
from bench.errors import ArtifactError
from tests.conftest import DATA, skip_or_fail

V2_DATA = DATA / "cgroup" / "v2"
GUEST_DATA = DATA / "guest"

MIB = 1024 * 1024
MEMORY_LIMIT_BYTES = 32 * MIB
# memory.peak cannot pass memory.max on v2 (the page counter refuses the charge); allow
# one memcg charge batch (64 pages) in case a kernel accounts differently.
PEAK_TOLERANCE_BYTES = 64 * 4096
CPU_QUOTA_CORES = 0.25
CPU_TOLERANCE = 0.05  # the method: used CPU / wall within 5% of the quota
PIDS_LIMIT = 10
GUEST_MEMORY_MIB = 128
BOOT_TIMEOUT_S = 60


@dataclass(frozen=True)
class Scenario:
    """One guest boot: limits for the v2 group, the probe's mode, the captured console."""

    log: str
    limits: dict[str, str]
    mode: tuple[str, ...]


MEMORY_OVER = Scenario(
    "memory_max32m_alloc64.log", {"memory.max": str(MEMORY_LIMIT_BYTES)}, ("alloc", "64", "1")
)
MEMORY_UNDER = Scenario(
    "memory_max32m_alloc8.log", {"memory.max": str(MEMORY_LIMIT_BYTES)}, ("alloc", "8", "1")
)
PIDS_OVER = Scenario("pids_max10_fork20.log", {"pids.max": str(PIDS_LIMIT)}, ("fork", "20", "1"))
CPU_QUOTA = Scenario(
    "cpu_max25000_burn2x3.log", {"cpu.max": cpu_max_value(25_000, 100_000)}, ("burn", "2", "3")
)
SCENARIOS = (MEMORY_OVER, MEMORY_UNDER, PIDS_OVER, CPU_QUOTA)


def captured(scenario: Scenario) -> str:
    """The console captured from a real boot of the scenario (CR LF line ends kept)."""
    return (V2_DATA / scenario.log).read_bytes().decode()


def console_lines(console: str) -> list[str]:
    return [line.rstrip("\r") for line in console.split("\n")]


# --- the kernel parameter ---------------------------------------------------------------


def test_param_encodes_limits_in_order_without_spaces() -> None:
    param = guest_cgroup_param(
        {"memory.max": "33554432", "pids.max": "10", "cpu.max": cpu_max_value(25_000)}
    )
    assert param == "bench_cgroup2=memory.max=33554432,pids.max=10,cpu.max=25000:100000"
    assert not any(c.isspace() for c in param)
    assert guest_cgroup_param({}) == "bench_cgroup2="
    assert guest_cgroup_param({"memory.high": "16M"}) == "bench_cgroup2=memory.high=16M"
    assert cpu_max_value(None, 50_000) == "max:50000"


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("cpu.max", "25000 100000", "value"),  # a space would end the parameter
        ("memory.max", "1,2", "value"),  # a comma would start another limit
        ("memory.max", "a=b", "value"),
        ("memory.max", "", "value"),
        ("memory.max", '"32M"', "value"),
        ("memory.max", "\u00e9", "value"),
        ("io.max", "8:0", "cgroup file"),  # io is not enabled in the guest's subtree_control
        ("cgroup.procs", "0", "cgroup file"),
        ("memory/../max", "1", "cgroup file"),
        ("Memory.max", "1", "cgroup file"),
    ],
)
def test_param_rejects_what_cannot_travel_or_apply(name: str, value: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=f"^{complaint}"):
        guest_cgroup_param({name: value})


def test_param_rejects_non_string_values_and_bad_cpu_max() -> None:
    with pytest.raises(ValueError):
        guest_cgroup_param({"pids.max": 10})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        cpu_max_value(0)
    with pytest.raises(ValueError):
        guest_cgroup_param({"memory.max": "9" * 600})


# --- parsers on consoles captured from real v2 kernels ------------------------------------


def test_captured_consoles_come_from_a_real_v2_guest() -> None:
    for scenario in SCENARIOS:
        console = captured(scenario)
        assert "\r\n" in console  # the raw serial console, not a cleaned copy
        controllers = parse_cgroup_controllers(console)
        assert controllers is not None
        assert {"memory", "pids", "cpu"} <= set(controllers)
        assert parse_cgroup_errors(console) == []
        dump = parse_cgroup_dump(console)
        absent = parse_cgroup_absent(console)
        assert set(dump) | set(absent) == set(DUMPED_FILES), scenario.log
        assert not samples_capped(console)


def test_dump_of_the_oom_run_holds_the_real_v2_files() -> None:
    console = captured(MEMORY_OVER)
    dump = parse_cgroup_dump(console)
    assert dump["memory.max"] == f"{MEMORY_LIMIT_BYTES}\n"
    # memory.events of kernel 6.1, exactly as the guest printed it
    assert list(memory_events(dump)) == ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"]
    assert memory_oom_kills(dump) == 1
    assert memory_oom_killed(dump)
    assert memory_max_bytes(dump) == MEMORY_LIMIT_BYTES
    peak = memory_peak_bytes(dump)
    assert peak is not None and 16 * MIB < peak <= MEMORY_LIMIT_BYTES + PEAK_TOLERANCE_BYTES
    current = memory_current_bytes(dump)
    assert current is not None and current < MIB  # the killed payload's memory was freed
    assert dump["cpu.max"] == "max 100000\n"
    assert cpu_max_cores(dump) is None
    assert pids_limit(dump) is None  # "max"
    assert "BENCH_EXIT 137" in console_lines(console)
    assert re.search(r"Memory cgroup out of memory: Killed process \d+ \(probe\)", console)


def test_dump_of_the_control_run_shows_no_oom() -> None:
    dump = parse_cgroup_dump(captured(MEMORY_UNDER))
    assert memory_oom_kills(dump) == 0
    assert not memory_oom_killed(dump)
    peak = memory_peak_bytes(dump)
    assert peak is not None and 8 * MIB <= peak < MEMORY_LIMIT_BYTES
    assert "BENCH_EXIT 0" in console_lines(captured(MEMORY_UNDER))


def test_dump_of_the_pids_run_counts_refused_forks() -> None:
    console = captured(PIDS_OVER)
    dump = parse_cgroup_dump(console)
    assert pids_limit(dump) == PIDS_LIMIT
    assert (pids_max_events(dump) or 0) >= 1
    if "pids.peak" in dump:
        assert pids_peak(dump) == PIDS_LIMIT
    assert "FORK_FAILED 9 EAGAIN" in console_lines(console)


def test_samples_of_the_cpu_run_give_the_quota() -> None:
    console = captured(CPU_QUOTA)
    samples = parse_cgroup_samples(console)
    assert 20 <= len(samples) <= 40  # ~3 s at 100 ms
    times = [s[TIME_KEY] for s in samples]
    assert times == sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(80 <= gap <= 150 for gap in gaps), gaps
    keys = {TIME_KEY, "memory.current", "pids.current", "usage_usec", "nr_throttled"}
    assert all(set(s) == keys for s in samples)
    assert max(s["pids.current"] for s in samples) == 3  # the probe and its two burn threads
    rate = cpu_usage_rate(samples)
    assert rate is not None and abs(rate - CPU_QUOTA_CORES) <= CPU_TOLERANCE * CPU_QUOTA_CORES
    assert (cpu_throttled_rise(samples) or 0) >= 10
    dump = parse_cgroup_dump(console)
    assert cpu_max_cores(dump) == CPU_QUOTA_CORES
    stat = cpu_stat(dump)
    assert stat["nr_throttled"] >= 10 and stat["usage_usec"] >= samples[-1]["usage_usec"]


def test_host_readers_meet_the_real_v2_files(tmp_path: Path) -> None:
    """bench.cgroups.readers' v2 branches, over the files a real v2 kernel wrote."""
    layout = CgroupLayout(2, "unified", {}, "/sys/fs/cgroup", ("cpu", "memory", "pids"))
    for scenario in (MEMORY_OVER, PIDS_OVER, CPU_QUOTA):
        directory = tmp_path / scenario.log
        directory.mkdir()
        dump = parse_cgroup_dump(captured(scenario))
        for name, text in dump.items():
            (directory / name).write_text(text)
        memory = readers.read_memory_usage(directory, layout)
        assert memory["usage_bytes"] == memory_current_bytes(dump)
        assert memory["peak_bytes"] == memory_peak_bytes(dump)
        events = readers.read_memory_events(directory, layout)
        assert events["oom_kill"] == memory_oom_kills(dump)
        pids = readers.read_pids(directory)
        assert pids["max_events"] == pids_max_events(dump)
        assert pids["limit"] == pids_limit(dump)
        cpu = readers.read_cpu_usage({"cpu": directory}, layout)
        assert cpu["usage_ns"] == cpu_stat(dump)["usage_usec"] * 1000
        assert cpu["nr_throttled"] == cpu_stat(dump)["nr_throttled"]
    oom = readers.read_memory_events(tmp_path / MEMORY_OVER.log, layout)
    assert oom["oom_kill"] == 1 and (oom["max"] or 0) >= 1
    assert readers.read_pids(tmp_path / PIDS_OVER.log)["max_events"] == 1


def test_parsers_survive_kernel_lines_truncation_and_plain_boots() -> None:
    console = (
        "BENCH_CG_SAMPLE 100 memory.current=4096 pids.current=1 usage_usec=5 nr_throttled=0\r\n"
        "BENCH_CG_SAMPLE 200 memory.cur[    1.670445] Memory cgroup out of memory\r\n"
        "rent=8192 pids.current=1\r\n"
        "BENCH_CG_BEGIN memory.events\r\n"
        "oom 1\r\n"
        "[    1.680000] some kernel line\r\n"
        "oom_kill 1\r\n"
        "BENCH_CG_END memory.events\r\n"
        "BENCH_CG_ABSENT pids.peak ENOENT\r\n"
        "BENCH_CG_BEGIN cpu.stat\r\n"
        "usage_usec 1\r\n"  # cut short: no END
    )
    samples = parse_cgroup_samples(console)
    assert samples == [
        {TIME_KEY: 100, "memory.current": 4096, "pids.current": 1, "usage_usec": 5}
        | {"nr_throttled": 0}
    ]
    assert parse_cgroup_dump(console) == {"memory.events": "oom 1\noom_kill 1\n"}
    assert parse_cgroup_absent(console) == {"pids.peak": "ENOENT"}
    assert cpu_usage_rate(samples) is None and cpu_throttled_rise(samples) is None
    with pytest.raises(ValueError, match="twice"):
        parse_cgroup_dump(console + "BENCH_CG_END cpu.stat\r\n" + console)
    plain = (GUEST_DATA / "serial_ready_vmlinux.log").read_text()
    assert parse_cgroup_dump(plain) == {} and parse_cgroup_samples(plain) == []
    assert parse_cgroup_controllers(plain) is None


def test_cpu_usage_rate_skips_the_first_half_second() -> None:
    # 1 core while starting, then 0.25: the start must not count
    samples = [
        {TIME_KEY: t, "usage_usec": min(t, 400) * 1000 + max(t - 400, 0) * 250}
        for t in range(0, 3001, 100)
    ]
    samples = [{TIME_KEY: s[TIME_KEY] + 5000, "usage_usec": s["usage_usec"]} for s in samples]
    assert cpu_usage_rate(samples) == pytest.approx(0.25)
    assert cpu_usage_rate(samples, skip_first_s=0) == pytest.approx((400 + 650) / 3000)


# --- real boots: the v2 path against a real v2 kernel -------------------------------------


@pytest.fixture(scope="module")
def guest() -> tuple[str, GuestArtifacts]:
    """qemu-system-x86_64 and the guest artefacts built from the current probe.c."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        skip_or_fail("qemu-system-x86_64 not installed (ansible/up.sh installs qemu-system-x86)")
        raise AssertionError("unreachable")
    try:
        return qemu, guest_artifacts()
    except ArtifactError as exc:
        skip_or_fail(f"guest artefacts unavailable: {exc}")
        raise AssertionError("unreachable") from exc


def boot_scenario(
    qemu: str, artifacts: GuestArtifacts, limits: dict[str, str] | None, mode: tuple[str, ...]
) -> QemuBoot:
    """Boot once under TCG (128 MiB, 1 vCPU); QEMU is always gone when this returns."""
    base = artifacts.cmdline_base
    if limits is not None:
        base = f"{base} {guest_cgroup_param(limits)}"
    boot = boot_with_qemu(
        qemu_command(
            artifacts.kernel.path,
            artifacts.initramfs.path,
            boot_cmdline(base, mode),
            accel="tcg",
            memory_mib=GUEST_MEMORY_MIB,
            qemu=qemu,
        ),
        timeout_s=BOOT_TIMEOUT_S,
    )
    assert not boot.timed_out, boot.console[-3000:]
    assert boot.returncode == 0, boot.console[-3000:]  # the guest powered itself off
    assert "Kernel panic" not in boot.console
    return boot


def booted(guest: tuple[str, GuestArtifacts], scenario: Scenario) -> QemuBoot:
    qemu, artifacts = guest
    boot = boot_scenario(qemu, artifacts, scenario.limits, scenario.mode)
    assert parse_cgroup_errors(boot.console) == [], boot.console[-3000:]
    assert set(parse_cgroup_controllers(boot.console) or []) >= {"memory", "pids", "cpu"}
    return boot


def test_real_guest_memory_max_kills_over_the_limit_and_spares_the_control(
    guest: tuple[str, GuestArtifacts],
) -> None:
    over = booted(guest, MEMORY_OVER)
    dump = parse_cgroup_dump(over.console)
    assert over.guest_exit_code == 137, over.console[-3000:]  # SIGKILL
    assert memory_oom_killed(dump), dump
    assert memory_max_bytes(dump) == MEMORY_LIMIT_BYTES
    peak = memory_peak_bytes(dump)
    assert peak is not None and peak <= MEMORY_LIMIT_BYTES + PEAK_TOLERANCE_BYTES, peak
    # the group's limit killed it, not a guest-wide OOM
    assert re.search(r"Memory cgroup out of memory: Killed process \d+ \(probe\)", over.console)
    sampled = [s["memory.current"] for s in parse_cgroup_samples(over.console)]
    assert max(sampled) <= MEMORY_LIMIT_BYTES

    under = booted(guest, MEMORY_UNDER)
    dump = parse_cgroup_dump(under.console)
    assert under.guest_exit_code == 0, under.console[-3000:]
    assert "ALLOCATED 8" in console_lines(under.console)
    assert memory_oom_kills(dump) == 0
    peak = memory_peak_bytes(dump)
    assert peak is not None and 8 * MIB <= peak < MEMORY_LIMIT_BYTES


def test_real_guest_pids_max_refuses_forks_at_the_limit(
    guest: tuple[str, GuestArtifacts],
) -> None:
    boot = booted(guest, PIDS_OVER)
    dump = parse_cgroup_dump(boot.console)
    assert boot.guest_exit_code == 0, boot.console[-3000:]
    # the probe is 1 of the 10 tasks: the 10th fork is refused
    assert "FORK_FAILED 9 EAGAIN" in console_lines(boot.console)
    assert (pids_max_events(dump) or 0) >= 1, dump
    assert pids_limit(dump) == PIDS_LIMIT
    if "pids.peak" in dump:
        assert pids_peak(dump) == PIDS_LIMIT
    assert max(s["pids.current"] for s in parse_cgroup_samples(boot.console)) <= PIDS_LIMIT


def test_real_guest_cpu_max_holds_the_quota(guest: tuple[str, GuestArtifacts]) -> None:
    boot = booted(guest, CPU_QUOTA)
    assert boot.guest_exit_code == 0, boot.console[-3000:]
    samples = parse_cgroup_samples(boot.console)
    # Both usage_usec and the sample stamps are guest clocks: the guest clock is used only
    # as a ratio of guest time to guest time here, never against a host timestamp.
    rate = cpu_usage_rate(samples)
    assert rate is not None, samples
    assert abs(rate - CPU_QUOTA_CORES) <= CPU_TOLERANCE * CPU_QUOTA_CORES, rate
    assert (cpu_throttled_rise(samples) or 0) >= 1, samples
    assert cpu_max_cores(parse_cgroup_dump(boot.console)) == CPU_QUOTA_CORES


def test_real_guest_reports_a_limit_the_kernel_refuses(
    guest: tuple[str, GuestArtifacts],
) -> None:
    qemu, artifacts = guest
    boot = boot_scenario(qemu, artifacts, {"memory.max": "lots"}, ("ready",))
    errors = parse_cgroup_errors(boot.console)
    assert errors == ["write memory.max=lots: Invalid argument"], boot.console[-3000:]
    assert "READY" not in console_lines(boot.console)  # no payload ran unlimited
    assert boot.guest_exit_code == 4


def test_real_guest_without_the_parameter_prints_exactly_what_it_did_before(
    guest: tuple[str, GuestArtifacts],
) -> None:
    qemu, artifacts = guest
    boot = boot_scenario(qemu, artifacts, None, ("ready",))
    user_lines = [line for line in console_lines(boot.console) if line and not line.startswith("[")]
    assert [re.sub(r"^BENCH_UPTIME \d+\.\d+$", "BENCH_UPTIME x", line) for line in user_lines] == [
        "BENCH_USERSPACE",
        "BENCH_UPTIME x",
        "READY",
        "BENCH_EXIT 0",
    ]


# --- recapture ----------------------------------------------------------------------------


def capture(dest: Path = V2_DATA, log: Callable[[str], None] = print) -> None:
    """Boot every scenario and save its raw console under dest (tests/data/cgroup/v2)."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise SystemExit("qemu-system-x86_64 not installed")
    artifacts = guest_artifacts()
    dest.mkdir(parents=True, exist_ok=True)
    for scenario in SCENARIOS:
        boot = boot_scenario(qemu, artifacts, scenario.limits, scenario.mode)
        (dest / scenario.log).write_bytes(boot.console.encode())
        log(f"{scenario.log}: BENCH_EXIT {boot.guest_exit_code}, {boot.to_exit_s:.2f} s")
    log(f"kernel {artifacts.kernel.release} ({artifacts.kernel.path.name})")


if __name__ == "__main__":
    capture()
    sys.exit(0)
