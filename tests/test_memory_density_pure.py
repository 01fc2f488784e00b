"""Pure parts of the memory and density metrics, on captured files and fixed sequences."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from bench.cgroups.layout import CgroupLayout
from bench.cgroups.readers import (
    cgroup_dir_for_pid,
    parse_flat_keyed,
    parse_int_file,
    parse_proc_cgroup,
    read_memory_usage,
)
from bench.metrics.density import (
    STOP_ERRORS,
    STOP_MAX_COUNT,
    STOP_MEM_FLOOR,
    STOP_SLO,
    RampState,
    p99,
    projected_mem_available_bytes,
    stop_reason,
)
from bench.metrics.memory_derived import overhead_samples
from bench.metrics.procmem import MIB, parse_smaps_rollup
from bench.samples import Sample
from bench.scenario import DensityOptions
from tests.conftest import DATA

V1 = CgroupLayout(
    1,
    "hybrid",
    {"memory": "/sys/fs/cgroup/memory", "cpu": "/sys/fs/cgroup/cpu"},
    "/sys/fs/cgroup/unified",
    ("hugetlb",),
)
V2 = CgroupLayout(2, "unified", {}, "/sys/fs/cgroup", ("cpu", "memory", "pids"))


def test_smaps_rollup_parsed_in_bytes() -> None:
    values = parse_smaps_rollup((DATA / "proc" / "smaps_rollup_python.txt").read_text())
    assert values["Rss"] == 1612 * 1024
    assert values["Pss"] == 301 * 1024
    assert values["Pss"] <= values["Rss"]


def test_proc_cgroup_of_a_docker_container_v1() -> None:
    paths = parse_proc_cgroup((DATA / "cgroup" / "v1" / "proc_pid_cgroup_docker.txt").read_text())
    assert paths["memory"].startswith("/docker/") and len(paths["memory"]) == len("/docker/") + 64
    assert paths["cpu"] == paths["memory"] == paths["pids"]
    assert "name=systemd" not in paths


def test_proc_cgroup_v2_and_comounted() -> None:
    assert parse_proc_cgroup("0::/machine/qemu-1-x.libvirt-qemu/emulator\n") == {
        "unified": "/machine/qemu-1-x.libvirt-qemu/emulator"
    }
    assert parse_proc_cgroup("2:cpu,cpuacct:/a\n") == {"cpu": "/a", "cpuacct": "/a"}


def test_cgroup_dir_for_pid_on_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text("4:memory:/docker/abc\n0::/system.slice/x\n")
    assert cgroup_dir_for_pid(42, "memory", V1, str(tmp_path)) == Path(
        "/sys/fs/cgroup/memory/docker/abc"
    )
    assert cgroup_dir_for_pid(42, "memory", V2, str(tmp_path)) == Path(
        "/sys/fs/cgroup/system.slice/x"
    )
    assert cgroup_dir_for_pid(43, "memory", V1, str(tmp_path)) is None


def test_v1_memory_files_from_a_real_container(tmp_path: Path) -> None:
    source = DATA / "cgroup" / "v1"
    for name in ("memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.stat"):
        (tmp_path / name).write_text((source / f"docker_{name}").read_text())
    usage = read_memory_usage(tmp_path, V1)
    expected_usage = int((source / "docker_memory.usage_in_bytes").read_text())
    assert usage["usage_bytes"] == expected_usage
    assert usage["peak_bytes"] is not None and usage["peak_bytes"] >= expected_usage
    assert (
        usage["cache_bytes"]
        == parse_flat_keyed((source / "docker_memory.stat").read_text())["total_cache"]
    )
    oom = parse_flat_keyed((source / "docker_memory.oom_control").read_text())
    assert oom["oom_kill"] == 0 and oom["oom_kill_disable"] == 0


def test_v2_memory_files(tmp_path: Path) -> None:
    (tmp_path / "memory.current").write_text("1048576\n")
    (tmp_path / "memory.peak").write_text("2097152\n")
    (tmp_path / "memory.stat").write_text("anon 4096\nfile 8192\n")
    assert read_memory_usage(tmp_path, V2) == {
        "usage_bytes": 1048576,
        "peak_bytes": 2097152,
        "cache_bytes": 8192,
        "anon_bytes": 4096,
    }
    assert parse_int_file("max\n") is None


def _memory_sample(backend: str, view: str, role: str, value: float, instance: str = "i") -> Sample:
    return Sample(
        run_id="r",
        seq=0,
        metric="memory",
        backend=backend,
        case="memory",
        value=value,
        unit="MiB",
        instance=instance,
        labels={"view": view, "role": role},
    )


def test_overhead_subtracts_the_process_median_per_view() -> None:
    samples = [
        _memory_sample("process", "pss", "total", 0.4, "p1"),
        _memory_sample("process", "pss", "total", 0.6, "p2"),
        _memory_sample("process", "pss", "probe", 0.5, "p1"),
        _memory_sample("process", "cgroup_usage", "cgroup", 0.2, "p1"),
        _memory_sample("docker", "pss", "total", 7.5, "d1"),
        _memory_sample("docker", "pss", "containerd-shim", 7.0, "d1"),
        _memory_sample("docker", "cgroup_usage", "cgroup", 1.2, "d1"),
        _memory_sample("libvirt", "pss", "total", 160.5, "v1"),
        _memory_sample("libvirt", "memavailable_drop", "host", 140.0, "*"),
    ]
    mechanisms = {"process": "native", "docker": "container", "libvirt": "vm"}
    overheads = overhead_samples(samples, mechanisms)
    by_key = {(s.backend, s.labels["view"]): s for s in overheads}
    assert by_key[("docker", "pss_overhead")].value == pytest.approx(7.0)
    assert by_key[("docker", "cgroup_usage_overhead")].value == pytest.approx(1.0)
    assert by_key[("libvirt", "pss_overhead")].value == pytest.approx(160.0)
    assert ("libvirt", "memavailable_drop_overhead") not in by_key  # no process baseline for it
    assert all(
        s.labels["view"] != "pss_overhead" or s.labels["baseline_mib"] == pytest.approx(0.5)
        for s in overheads
    )
    # the baseline is the native mechanism, whatever its name
    renamed = [
        Sample(**{**vars(s), "backend": "bare" if s.backend == "process" else s.backend})
        for s in samples
    ]
    again = overhead_samples(renamed, {**mechanisms, "bare": "native"})
    assert sorted(cast(float, s.value) for s in again) == sorted(
        cast(float, s.value) for s in overheads
    )


def test_overhead_baseline_comes_from_the_same_block() -> None:
    samples = [
        _memory_sample("process", "pss", "total", 1.0, "p1"),
        _memory_sample("process", "pss", "total", 3.0, "p2"),
        _memory_sample("docker", "pss", "total", 10.0, "d1"),
        _memory_sample("docker", "pss", "total", 10.0, "d2"),
    ]
    for sample, block in zip(samples, (0, 1, 0, 1), strict=True):
        sample.block = block
    overheads = overhead_samples(samples, {"process": "native", "docker": "container"})
    assert sorted((s.block, s.value) for s in overheads) == [(0, 9.0), (1, 7.0)]


def test_overhead_without_baseline_invents_nothing() -> None:
    samples = [_memory_sample("docker", "pss", "total", 7.5)]
    assert overhead_samples(samples, {"docker": "container"}) == []


OPTIONS = DensityOptions(
    max_count=10, mem_floor_mib=2048, slo_p99_s=5, slo_min_instances=3, max_error_rate=0.2
)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (
            RampState(started=10, ready=10, latencies_s=[1.0] * 10, mem_available_bytes=8 << 30),
            STOP_MAX_COUNT,
        ),
        (
            RampState(started=4, ready=4, latencies_s=[1.0] * 4, mem_available_bytes=1 << 30),
            STOP_MEM_FLOOR,
        ),
        (
            RampState(started=4, ready=3, latencies_s=[1.0, 1.0, 6.0], mem_available_bytes=8 << 30),
            STOP_SLO,
        ),
        (
            RampState(
                started=5, ready=3, failed=2, latencies_s=[1.0] * 3, mem_available_bytes=8 << 30
            ),
            STOP_ERRORS,
        ),
        (
            RampState(started=2, ready=1, failed=1, latencies_s=[9.0], mem_available_bytes=8 << 30),
            None,
        ),
        (RampState(started=5, ready=5, latencies_s=[1.0] * 5, mem_available_bytes=8 << 30), None),
    ],
)
def test_stop_rules(state: RampState, reason: str | None) -> None:
    assert stop_reason(state, OPTIONS) == reason


def test_the_floor_rule_stops_before_the_next_instance_would_cross_it() -> None:
    gib = 1 << 30
    # 6 READY cost 0.6 GiB: ~100 MiB each; 2.1 GiB left, 2 still starting: the next would
    # end at ~1.8 GiB, under the 2 GiB floor, although the host is above it now
    crossing = RampState(
        started=8,
        ready=6,
        latencies_s=[1.0] * 6,
        mem_available_bytes=int(2.1 * gib),
        mem_available_start_bytes=int(2.7 * gib),
    )
    assert stop_reason(crossing, OPTIONS) == STOP_MEM_FLOOR
    projected = projected_mem_available_bytes(crossing)
    assert projected is not None and abs(projected - int(1.8 * gib)) < 1 << 20
    roomy = RampState(
        started=8,
        ready=6,
        latencies_s=[1.0] * 6,
        mem_available_bytes=4 * gib,
        mem_available_start_bytes=int(4.6 * gib),
    )
    assert stop_reason(roomy, OPTIONS) is None
    unknown = RampState(
        started=1, mem_available_bytes=int(2.1 * gib), mem_available_start_bytes=3 * gib
    )
    assert projected_mem_available_bytes(unknown) is None, "no READY instance: no estimate"


def test_stop_rule_order_max_count_first() -> None:
    state = RampState(started=10, ready=3, failed=7, latencies_s=[99.0] * 3, mem_available_bytes=0)
    assert stop_reason(state, OPTIONS) == STOP_MAX_COUNT


def test_p99_nearest_rank() -> None:
    assert p99([1.0]) == 1.0
    assert p99([float(i) for i in range(1, 101)]) == 99.0
    assert p99([float(i) for i in range(1, 201)]) == 198.0
    assert MIB == 1048576


def test_root_cgroup_is_never_an_instance_cgroup(tmp_path: Path) -> None:
    # an exited task can show the hierarchy root; reading it would report host totals
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text("4:memory:/\n0::/\n")
    assert cgroup_dir_for_pid(7, "memory", V1, str(tmp_path)) is None
    assert cgroup_dir_for_pid(7, "memory", V2, str(tmp_path)) is None


def test_error_classes_name_what_the_engine_ran_into() -> None:
    from bench.metrics.density import classify_error

    assert (
        classify_error("OSError: [Errno 24] Too many open files") == "engine_limit:file_descriptors"
    )
    assert classify_error("fork/exec: resource temporarily unavailable") == "engine_limit:processes"
    assert (
        classify_error("Bind for 0.0.0.0:80 failed: port is already allocated")
        == "engine_limit:ports"
    )
    assert classify_error("qemu: cannot allocate memory") == "memory"
    assert classify_error("domain bench-1: no READY line before the timeout") == "timeout"
    assert classify_error("something else") == "other"


def test_knee_of_a_startup_curve() -> None:
    from bench.metrics.density import knee_index

    flat_then_steep = [1.0] * 20 + [1.0 + 0.5 * i for i in range(1, 11)]
    knee = knee_index(flat_then_steep)
    assert knee is not None and 17 <= knee <= 22
    assert knee_index([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]) is None, "a flat curve has no knee"
    assert knee_index([1.0, 2.0]) is None
    # a curve whose highest point is not its last: the chord runs from the first to the
    # last point, so the end is never taken for a knee
    bumpy = [1.8] * 60 + [2.2] * 30 + [3.5] * 5 + [2.3] * 30 + [2.5] * 10
    knee = knee_index(bumpy)
    assert knee is None or knee < len(bumpy) - 5, knee
    # a straight line bends nowhere: at most a point where noise says so, never past the middle
    line = [float(i) for i in range(30)]
    assert knee_index(line) is None


def test_host_oom_stops_a_ramp_first() -> None:
    state = RampState(started=3, ready=3, host_oom_kills=1)
    assert stop_reason(state, OPTIONS) == "host_oom"


def test_only_a_global_oom_kill_counts_as_the_hosts() -> None:
    from bench.metrics.density import KernelOomWatch, is_global_oom_record

    memcg = b"3,7926,7445392869,-;Memory cgroup out of memory: Killed process 20696 (qemu)"
    host = b"3,7927,7445392900,-;Out of memory: Killed process 4242 (qemu-system-x86)"
    assert not is_global_oom_record(memcg)
    assert is_global_oom_record(host)
    watch = KernelOomWatch("/nonexistent/kmsg")
    assert not watch.available and watch.poll() == 0
