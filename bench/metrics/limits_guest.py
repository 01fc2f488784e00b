"""Guest-internal limit rows: the same limits as cgroup v2 files inside a guest.

For backends that boot bench's guest kernel and initramfs (``capabilities.guest_kernel``),
the guest's init mounts cgroup2, writes the limit and runs the payload in that group,
then prints the group's files over the console; the host parses them with the same
readers it uses on v2 hosts (``bench.cgroups.guest_v2``). This is also how bench's v2
logic meets a real v2 kernel on hosts that are themselves v1. A payload killed inside the
guest (the guest's own OOM) is its own row, distinct from a runtime killed by the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

from bench.backends.base import Backend
from bench.cgroups.guest_v2 import (
    TIME_KEY,
    cpu_max_value,
    cpu_throttled_rise,
    cpu_usage_rate,
    guest_cgroup_param,
    memory_max_bytes,
    memory_oom_killed,
    memory_oom_kills,
    memory_peak_bytes,
    parse_cgroup_dump,
    parse_cgroup_errors,
    parse_cgroup_samples,
    pids_max_events,
    pids_peak,
)
from bench.metrics.base import RunContext
from bench.metrics.limit_verdicts import (
    LimitCheck,
    cpu_verdict,
    downsample,
    failed_check,
    memory_verdict,
    parse_fork_output,
    pids_verdict,
)
from bench.metrics.procmem import MIB
from bench.scenario import Case, InstanceSpec, LimitOptions, Payload

CPU_PERIOD_US = 100_000


class GuestBooter(Protocol):
    """What the guest rows need from the limit checks that run them."""

    ctx: RunContext
    backend: Backend
    case: Case
    options: LimitOptions
    timeout_s: float

    def spec(self, payload: Payload, **limits: Any) -> InstanceSpec:
        """The case's spec with this payload (and limits)."""
        ...


class GuestV2Checks:
    """The guest-internal rows of one backend and case (see the module docstring)."""

    def __init__(self, runner: GuestBooter) -> None:
        self.runner = runner

    def rows(self, kind: str) -> list[LimitCheck]:
        """The guest-internal rows for one limit kind (memory, cpu, pids)."""
        options = self.runner.options
        if kind == "memory":
            return [self._row(self.memory, "memory_guest_v2")]
        if kind == "cpu":
            return [
                self._row(functools.partial(self.cpu, quota), "cpu_guest_v2")
                for quota in options.cpu_quotas
            ]
        if kind == "pids":
            return [self._row(self.pids, "pids_guest_v2")]
        return []

    def _row(self, check: Callable[[], LimitCheck], kind: str) -> LimitCheck:
        try:
            return check()
        except Exception as exc:
            return failed_check(kind, None, "", f"{type(exc).__name__}: {exc}")

    def _boot(self, limits: dict[str, str], payload: Payload) -> tuple[str, int | None, str]:
        """Boot a guest whose init applies ``limits`` to the payload's v2 cgroup."""
        runner = self.runner
        ctx = runner.ctx
        spec = runner.spec(payload).model_copy(
            update={"guest_memory_mib": max(runner.case.spec.guest_memory_mib, 128)}
        )
        instance = ctx.new_instance(runner.backend, spec)
        instance.extra["cmdline_extra"] = [guest_cgroup_param(limits)]
        try:
            runner.backend.start(spec, instance.name, ctx.run_id, instance)
            runner.backend.wait_ready(instance, runner.timeout_s)
            code = runner.backend.wait_exit(instance, runner.timeout_s)
        finally:
            ctx.finish(runner.backend, instance)
        return instance.output_text(200_000), code, str(instance.labels.get("accel", "n/a"))

    def memory(self) -> LimitCheck:
        """memory.max = L inside the guest; the payload allocates more than L."""
        options = self.runner.options
        limit = options.memory_limit_mib * MIB
        console, code, accel = self._boot(
            {"memory.max": str(limit)},
            Payload(mode="alloc", alloc_mib=options.memory_alloc_mib, seconds=1.0),
        )
        dump = parse_cgroup_dump(console)
        peak = memory_peak_bytes(dump)
        killed = memory_oom_killed(dump) and code == 137
        return LimitCheck(
            kind="memory_guest_v2",
            set_value=options.memory_limit_mib,
            set_unit="MiB",
            measured=peak / MIB if peak is not None else None,
            unit="MiB",
            enforced=memory_verdict(killed, peak, limit, options.memory_tolerance_mib * MIB),
            evidence={
                "guest_exit_code": code,
                "oom_kill_count": memory_oom_kills(dump),
                "memory_max_file": memory_max_bytes(dump),
                "where": "guest cgroup v2",
                "errors": parse_cgroup_errors(console),
                "accel": accel,
            },
            series={"usage_mib": _guest_series(console, "memory.current", 1 / MIB)},
        )

    def pids(self) -> LimitCheck:
        """pids.max = P inside the guest; the payload forks past it."""
        options = self.runner.options
        console, code, accel = self._boot(
            {"pids.max": str(options.pids_limit)},
            Payload(mode="fork", forks=options.pids_forks, seconds=1.0),
        )
        dump = parse_cgroup_dump(console)
        fork = parse_fork_output(console)
        max_events = pids_max_events(dump)
        return LimitCheck(
            kind="pids_guest_v2",
            set_value=options.pids_limit,
            set_unit="tasks",
            measured=fork["refused_after"] + 1
            if fork["refused_after"] is not None
            else pids_peak(dump),
            unit="tasks",
            enforced=pids_verdict(fork, options.pids_limit, max_events),
            evidence={
                **fork,
                "pids_events_max": max_events,
                "pids_peak": pids_peak(dump),
                "guest_exit_code": code,
                "where": "guest cgroup v2",
                "accel": accel,
            },
            series={"tasks": _guest_series(console, "pids.current")},
        )

    def cpu(self, quota: float) -> LimitCheck:
        """cpu.max = Q inside the guest; cores = guest CPU time / guest time (a ratio)."""
        options = self.runner.options
        console, code, accel = self._boot(
            {"cpu.max": cpu_max_value(round(quota * CPU_PERIOD_US), CPU_PERIOD_US)},
            Payload(mode="burn", threads=options.cpu_threads, seconds=options.cpu_seconds),
        )
        samples = parse_cgroup_samples(console)
        measured = cpu_usage_rate(samples)
        throttled = cpu_throttled_rise(samples)
        verdict = cpu_verdict(measured, quota, throttled, options.cpu_tolerance)
        return LimitCheck(
            kind="cpu_guest_v2",
            set_value=quota,
            set_unit="cores",
            measured=measured,
            unit="cores",
            enforced=verdict.enforced,
            note=verdict.note,
            evidence={
                "nr_throttled_delta": throttled,
                "guest_exit_code": code,
                "where": "guest cgroup v2",
                "clock": "guest CPU time / guest time: a ratio of guest clocks only",
                "accel": accel,
            },
            series={"usage_usec": _guest_series(console, "usage_usec")},
        )


def _guest_series(console: str, key: str, scale: float = 1.0) -> list[list[float]]:
    samples = parse_cgroup_samples(console)
    points = [(int(s[TIME_KEY]) * 1_000_000, s[key]) for s in samples if key in s]
    return downsample(points, points[0][0] if points else 0, scale)
