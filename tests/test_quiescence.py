"""A quiet host before each sample, and what bench run --tune holds (idle, cgroup moves)."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from bench.host_settings import (
    CPU_DMA_LATENCY,
    FAVOR_DYNMODS_NAME,
    cgroup_fast_moves,
    low_latency,
    restore_abandoned,
)
from bench.quiescence import cpu_seconds, engine_pids, wait_for_quiet


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waits_until_the_engines_stop_using_cpu() -> None:
    clock = _Clock()
    # busy for three windows (5 ms of CPU in each 20 ms), then idle
    readings = iter([0.0, 0.005, 0.010, 0.015, 0.015, 0.015])
    quiet = wait_for_quiet(
        ["dockerd"],
        clock=clock,
        sleep=clock.sleep,
        cpu=lambda pids: {pid: next(readings) for pid in pids},
        scan=lambda names: [4242],
    )
    assert quiet.quiet and quiet.waited_s == pytest.approx(0.08) and quiet.engine_pids == 1


def test_an_engine_that_exits_or_starts_during_a_window_neither_hides_nor_adds_work() -> None:
    clock = _Clock()
    # conmon (pid 2) exits after a busy window: its CPU time must not look like negative work
    # that hides dockerd's (pid 1); a new process (pid 3) counts from its second reading
    windows = iter(
        [
            {1: 0.0, 2: 5.0},
            {1: 0.004},  # dockerd busy, conmon gone: busy, not "-4.996 s"
            {1: 0.004, 3: 9.0},  # dockerd idle; pid 3 only appeared: quiet
        ]
    )
    quiet = wait_for_quiet(
        ["dockerd", "conmon"],
        clock=clock,
        sleep=clock.sleep,
        cpu=lambda pids: next(windows),
        scan=lambda names: [1],
    )
    assert quiet.quiet and quiet.waited_s == pytest.approx(0.04)


def test_gives_up_at_the_timeout_and_says_so() -> None:
    clock = _Clock()
    used = iter(float(i) for i in range(10_000))
    quiet = wait_for_quiet(
        ["dockerd"],
        clock=clock,
        sleep=clock.sleep,
        cpu=lambda pids: {7: next(used)},
        scan=lambda names: [7],
        timeout_s=0.5,
    )
    assert not quiet.quiet and quiet.waited_s >= 0.5


def test_nothing_to_watch_is_quiet_at_once() -> None:
    assert wait_for_quiet([]).waited_s == 0.0
    assert wait_for_quiet(["no-such-daemon-here"]).quiet


def test_cpu_time_of_real_threads_to_the_nanosecond() -> None:
    me = os.getpid()
    name = Path(f"/proc/{me}/comm").read_text().strip()
    assert me in engine_pids([name])
    before = cpu_seconds([me])[me]
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert cpu_seconds([me])[me] - before >= 0.04
    assert cpu_seconds([2**22 + 7]) == {}, "a process that is gone is left out"


@pytest.mark.cgroups
def test_tune_holds_the_idle_latency_at_zero_while_the_run_lasts() -> None:
    if not os.access(CPU_DMA_LATENCY, os.R_OK | os.W_OK):
        pytest.skip(f"{CPU_DMA_LATENCY} is not writable here")

    def current_us() -> int:
        with open(CPU_DMA_LATENCY, "rb") as handle:
            return int(struct.unpack("i", handle.read(4))[0])

    before = current_us()
    with low_latency(True) as tuning:
        assert tuning == {
            "tune": True,
            "cpu_dma_latency_us": 0,
            "held_through": str(CPU_DMA_LATENCY),
        }
        assert current_us() == 0
    assert current_us() == before, "the request ends with the file"
    with low_latency(False) as untouched:
        assert untouched == {"tune": False} and current_us() == before
    with low_latency(True, Path("/nonexistent/cpu_dma_latency")) as refused:
        assert refused["tune"] is False and "cannot open" in refused["reason"]


def _favor_mounts() -> dict[str, str]:
    """Mount point -> super options of every favordynmods hierarchy bench mounted."""
    found = {}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if f"name={FAVOR_DYNMODS_NAME}" in fields[-1]:
                found[fields[4]] = fields[-1]
    return found


@pytest.mark.cgroups
def test_tune_mounts_a_favordynmods_hierarchy_for_the_run_and_clean_removes_a_killed_runs(
    tmp_path: Path,
) -> None:
    # the mount comes and goes; the kernel mode it sets may outlive it (see
    # cgroup_fast_moves): it only makes moves into cgroups cheaper, never breaks one
    base = tmp_path / "favordynmods"
    mine = base / str(os.getpid())
    with cgroup_fast_moves(True, base) as moves:
        if not moves.get("cgroup_favordynmods"):
            pytest.fail(f"the kernel refused the mount: {moves}")
        assert moves["cgroup_favordynmods"] is True and moves["held_through"] == str(mine)
        assert "favordynmods" in _favor_mounts()[str(mine)]
        # a killed run's mount: its pid is gone; bench clean unmounts it, spares the live one
        dead = subprocess.Popen(["true"])
        dead.wait()
        left = base / str(dead.pid)
        left.mkdir()
        options = f"none,name={FAVOR_DYNMODS_NAME},favordynmods"
        subprocess.run(["mount", "-t", "cgroup", "-o", options, "cgroup", str(left)], check=True)
        assert str(left) in _favor_mounts()
        done = restore_abandoned(tmp_path / "saved", favor_dir=base)
        assert done == [f"unmounted {left}"] and not left.exists()
        assert str(mine) in _favor_mounts(), "the live run's mount is spared"
    assert str(mine) not in _favor_mounts() and not mine.exists(), "given back with the run"
    with cgroup_fast_moves(False, base) as untouched:
        assert untouched == {} and str(mine) not in _favor_mounts()
