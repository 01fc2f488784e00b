"""Limit verdicts and series arithmetic on fixed inputs."""

from __future__ import annotations

import pytest

from bench.metrics.limit_verdicts import (
    cpu_cores_used,
    cpu_verdict,
    downsample,
    memory_verdict,
    parse_fork_output,
    pids_verdict,
    rate_series,
)

MIB = 1024 * 1024


def test_cpu_cores_from_cumulative_usage_skips_warmup() -> None:
    # 2 cores for the first 0.5 s (start transient), then 0.5 cores
    points = [(0, 0), (500_000_000, 1_000_000_000)]
    points += [
        (500_000_000 + i * 100_000_000, 1_000_000_000 + i * 50_000_000) for i in range(1, 31)
    ]
    assert cpu_cores_used(points) == pytest.approx(0.5)
    assert cpu_cores_used(points, skip_s=0) == pytest.approx(2.5e9 / 3.5e9)
    assert cpu_cores_used([(0, 0)]) is None


@pytest.mark.parametrize(
    ("measured", "quota", "throttled", "held", "note"),
    [
        (0.49, 0.5, 10, True, "held at 0.49 of 0.5 cores; throttled 10 times"),
        (0.52, 0.5, 10, True, "held at 0.52 of 0.5 cores"),
        # over the ceiling: the quota did not hold, throttled or not
        (0.53, 0.5, 10, False, "exceeded: used 0.53 of 0.5 cores"),
        # the negative control: no quota, so the kernel never throttles
        (0.5, 0.5, 0, False, "not shown: the kernel never throttled"),
        (1.7, 0.5, 0, False, "exceeded"),
        (None, 0.5, 10, False, "no usage or throttling counters"),
        (0.2401, 0.25, 3, True, "held at 0.24 of 0.25 cores"),
        # a busy host delivered less than the quota, and the kernel throttled whenever
        # the payload reached it: the limit held (CI saw 0.448 of 0.5 with 63 throttles)
        (0.2370, 0.25, 3, True, "the host delivered 0.237 of 0.25 cores (contention)"),
        (0.448, 0.5, 63, True, "the host delivered 0.448 of 0.5 cores (contention)"),
        # under the quota and never throttled: the quota never acted, nothing is shown
        (0.3, 0.5, 0, False, "not shown: the kernel never throttled the group"),
    ],
)
def test_cpu_verdict_rests_on_the_ceiling_and_the_kernels_throttling(
    measured: float | None, quota: float, throttled: int, held: bool, note: str
) -> None:
    verdict = cpu_verdict(measured, quota, throttled, 0.05)
    assert verdict.enforced is held
    assert note in verdict.note


def test_memory_verdict_needs_kill_and_peak_within_tolerance() -> None:
    assert memory_verdict(True, 64 * MIB, 64 * MIB, 4 * MIB)
    assert memory_verdict(True, 67 * MIB, 64 * MIB, 4 * MIB)
    assert not memory_verdict(True, 69 * MIB, 64 * MIB, 4 * MIB)
    assert not memory_verdict(False, 10 * MIB, 64 * MIB, 4 * MIB)
    assert not memory_verdict(True, None, 64 * MIB, 4 * MIB)


def test_fork_output_and_pids_verdict() -> None:
    fork = parse_fork_output("READY\nFORK_FAILED 19 EAGAIN\nFORKED 19\n")
    assert fork == {"refused_after": 19, "errno": "EAGAIN", "forked": 19}
    assert pids_verdict(fork, 20, 1)
    assert not pids_verdict(fork, 30, 1)
    assert not pids_verdict(fork, 20, 0)
    assert not pids_verdict(parse_fork_output("READY\nFORKED 40\n"), 20, None)


def test_downsample_and_rate() -> None:
    points = [(i * 1_000_000, i) for i in range(1000)]
    sampled = downsample(points, 0, 2.0)
    assert len(sampled) <= 201 and sampled[0] == [0.0, 0.0] and sampled[-1] == [0.999, 1998.0]
    assert rate_series([(0, 0), (10, 5), (20, 15)]) == [(10, 0.5), (20, 1.0)]
