"""Limit enforcement, measured: set a limit, push the payload past it, record what held.

Not "we set a limit" but "the limit held, and here is the measurement" (MEASURE.md):
- memory: limit L, the probe allocates more than L. Enforced = the kernel killed it for
  the cgroup's limit (v1 memory.oom_control oom_kill, v2 memory.events oom_kill, docker's
  OOMKilled) and peak usage stayed within L + tolerance. A control run under L must live.
- cpu: quota Q cores, more busy threads than Q. Enforced = used CPU / wall within the
  tolerance of Q (cpuacct.usage or cpu.stat usage_usec, sampled while it runs) and
  nr_throttled rose.
- pids: limit P, the probe forks past it. Enforced = forks refused at P and pids.events
  ``max`` rose.
cgroup files are sampled at a fixed interval while the instance lives (its cgroup
vanishes at exit); each record keeps a downsampled time series for plotting.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.backends.base import Backend, Instance
from bench.cgroups.layout import CgroupLayout
from bench.cgroups.layout import detect as detect_layout
from bench.cgroups.readers import (
    instance_cgroup_dirs,
    read_cpu_usage,
    read_memory_events,
    read_memory_usage,
    read_pids,
)
from bench.cgroups.sampler import CgroupSampler, Series
from bench.errors import BenchError
from bench.metrics.procmem import MIB
from bench.samples import Sample
from bench.scenario import Case, InstanceSpec, LimitOptions, Payload

SERIES_MAX_POINTS = 200
CPU_WARMUP_S = 0.5
MEMORY_SAMPLE_INTERVAL_S = 0.002


@dataclass
class LimitCheck:
    """One check's outcome: what was set, what was measured, and whether it held."""

    kind: str  # memory | memory_control | cpu | pids
    set_value: float | None
    set_unit: str
    measured: float | None
    unit: str
    enforced: bool | None  # None = not applicable
    evidence: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    error: str | None = None


def downsample(
    points: list[tuple[int, Any]], origin_ns: int, scale: float = 1.0
) -> list[list[float]]:
    """Series points as [seconds since origin, value * scale], at most SERIES_MAX_POINTS."""
    if not points:
        return []
    step = max(1, len(points) // SERIES_MAX_POINTS)
    picked = points[::step]
    if picked[-1] is not points[-1]:
        picked.append(points[-1])
    return [[round((t - origin_ns) / 1e9, 4), float(v) * scale] for t, v in picked]


def cpu_cores_used(usage: list[tuple[int, Any]], skip_s: float = CPU_WARMUP_S) -> float | None:
    """Average cores used between the first point after ``skip_s`` and the last point."""
    if len(usage) < 2:
        return None
    start_ns = usage[0][0] + int(skip_s * 1e9)
    window = [(t, v) for t, v in usage if t >= start_ns] or usage
    if len(window) < 2:
        window = usage
    (t0, u0), (t1, u1) = window[0], window[-1]
    if t1 <= t0:
        return None
    return float(u1 - u0) / float(t1 - t0)


def rate_series(usage: list[tuple[int, Any]]) -> list[tuple[int, float]]:
    """Per-interval rate (cores) from cumulative (ns, cpu ns) points."""
    return [
        (t1, (u1 - u0) / (t1 - t0)) for (t0, u0), (t1, u1) in itertools.pairwise(usage) if t1 > t0
    ]


def cpu_verdict(
    measured_cores: float | None, quota_cores: float, throttled_delta: int | None, tolerance: float
) -> bool:
    """Enforced when measured is within ``tolerance`` of the quota and throttling was seen."""
    if measured_cores is None or throttled_delta is None:
        return False
    return abs(measured_cores - quota_cores) <= tolerance * quota_cores and throttled_delta > 0


def memory_verdict(
    killed: bool, peak_bytes: int | None, limit_bytes: int, tolerance_bytes: float
) -> bool:
    """Enforced when the payload was OOM-killed and peak usage stayed within the limit."""
    return killed and peak_bytes is not None and peak_bytes <= limit_bytes + tolerance_bytes


def parse_fork_output(text: str) -> dict[str, Any]:
    """The probe's fork report: ``FORK_FAILED k ERRNO`` (first refusal) and ``FORKED k``."""
    failed = re.search(r"^FORK_FAILED (\d+) (\S+)", text, re.M)
    forked = re.search(r"^FORKED (\d+)", text, re.M)
    return {
        "refused_after": int(failed.group(1)) if failed else None,
        "errno": failed.group(2) if failed else None,
        "forked": int(forked.group(1)) if forked else None,
    }


def pids_verdict(fork: dict[str, Any], limit: int, max_events_delta: int | None) -> bool:
    """Enforced when forks were refused exactly at the limit (the probe is one task of P)."""
    return (
        fork.get("refused_after") is not None
        and fork["refused_after"] + 1 == limit
        and (max_events_delta is None or max_events_delta > 0)
    )


def cpu_check(
    quota: float,
    usage: list[tuple[int, Any]],
    throttled_delta: int | None,
    options: LimitOptions,
    evidence: dict[str, Any],
    error: str | None = None,
) -> LimitCheck:
    """The CPU check's verdict and record from cumulative (ns, cpu ns) usage points."""
    measured = cpu_cores_used(usage)
    origin = usage[0][0] if usage else 0
    return LimitCheck(
        "cpu",
        quota,
        "cores",
        measured,
        "cores",
        cpu_verdict(measured, quota, throttled_delta, options.cpu_tolerance),
        {
            "nr_throttled_delta": throttled_delta,
            "threads": options.cpu_threads,
            "seconds": options.cpu_seconds,
            "samples": len(usage),
            "error_fraction": abs(measured - quota) / quota if measured is not None else None,
            **evidence,
        },
        {"cores": downsample(rate_series(usage), origin)},
        error=error,
    )


def _reader(dirs: dict[str, Any], layout: CgroupLayout) -> Callable[[], dict[str, Any]]:
    def read() -> dict[str, Any]:
        values: dict[str, Any] = {}
        if "memory" in dirs:
            values.update(read_memory_usage(dirs["memory"], layout))
            values.update(read_memory_events(dirs["memory"], layout))
        values.update(read_cpu_usage(dirs, layout))
        if "pids" in dirs:
            values.update({f"pids_{k}": v for k, v in read_pids(dirs["pids"]).items()})
        return values

    return read


def _delta(series: Series, key: str) -> int | None:
    values = series.values(key)
    if len(values) < 2:
        return None
    return int(values[-1][1] - values[0][1])


class LimitRunner:
    """Runs the limit checks of one backend and case, with cleanup on every path."""

    def __init__(
        self,
        backend: Backend,
        case: Case,
        options: LimitOptions,
        run_id: str,
        names: Callable[[], str],
        live: dict[str, tuple[Backend, Instance]],
        timeout_s: float,
    ) -> None:
        self.backend = backend
        self.case = case
        self.options = options
        self.run_id = run_id
        self.names = names
        self.live = live
        self.timeout_s = timeout_s
        self.layout = detect_layout()

    def _sampled_run(
        self, spec: InstanceSpec, interval_s: float | None = None
    ) -> tuple[Instance, Series, int | None, dict[str, Any]]:
        """Start, sample the cgroup until the payload exits, collect exit details, remove."""
        name = self.names()
        instance = Instance(self.backend.name, name, spec, self.run_id)
        self.live[name] = (self.backend, instance)
        sampler: CgroupSampler | None = None
        details: dict[str, Any] = {}
        code: int | None = None
        try:
            self.backend.start(spec, name, self.run_id, instance)
            self.backend.wait_ready(instance, self.timeout_s)
            pid = self.backend.main_pid(instance)
            if pid is None:
                raise BenchError(f"{name}: no host pid to find its cgroup")
            dirs = instance_cgroup_dirs(pid, self.layout)
            details["cgroup"] = {k: str(v) for k, v in dirs.items()}
            sampler = CgroupSampler(
                _reader(dirs, self.layout), interval_s or self.options.sample_interval_s
            ).start()
            code = self.backend.wait_exit(instance, self.timeout_s)
            details.update(self.backend.exit_details(instance))
        finally:
            series = sampler.stop() if sampler is not None else Series()
            try:
                self.backend.stop(instance)
                self.backend.wait_gone(instance)
            finally:
                self.live.pop(name, None)
        details["exit_code"] = code
        details["output"] = instance.output_text(400)
        details["series_end"] = series.ended_reason
        return instance, series, code, details

    def memory(self) -> list[LimitCheck]:
        """Over-limit run (killed, peak within L + tolerance) and control run (must live)."""
        options = self.options
        limit_bytes = options.memory_limit_mib * MIB
        checks = []
        for kind, alloc_mib in (
            ("memory", options.memory_alloc_mib),
            ("memory_control", options.memory_control_mib),
        ):
            spec = self.case.spec.model_copy(
                update={
                    "memory_mib": options.memory_limit_mib,
                    "payload": Payload(mode="alloc", alloc_mib=alloc_mib, seconds=1.0),
                }
            )
            try:
                # the payload reaches the limit within tens of ms and the cgroup of a
                # container vanishes when it dies: sample fast to catch the high-water mark
                _instance, series, code, details = self._sampled_run(
                    spec, interval_s=min(options.sample_interval_s, MEMORY_SAMPLE_INTERVAL_S)
                )
            except BenchError as exc:
                checks.append(
                    LimitCheck(
                        kind, options.memory_limit_mib, "MiB", None, "MiB", False, error=str(exc)
                    )
                )
                continue
            candidates = [
                series.maximum("peak_bytes"),
                series.maximum("usage_bytes"),
                details.get("peak_bytes_final"),  # only backends whose cgroup outlives exit
            ]
            known = [v for v in candidates if v is not None]
            peak = max(known) if known else None
            oom_kills = series.maximum("oom_kill")
            oom_kill_final = details.get("oom_kill_final")
            killed = bool(details.get("oom_killed")) or (
                code in (137, -9) and max(oom_kills or 0, oom_kill_final or 0) > 0
            )
            evidence = {
                "killed": killed,
                "exit_code": code,
                "oom_kill_count": max(oom_kills or 0, oom_kill_final or 0),
                "failcnt": series.maximum("failcnt"),
                "docker_oom_killed": details.get("oom_killed"),
                "allocated_line": "ALLOCATED" in details["output"],
                "alloc_mib": alloc_mib,
                "samples": len(series.points),
                "cgroup": details.get("cgroup", {}).get("memory"),
            }
            if kind == "memory":
                enforced = memory_verdict(
                    killed,
                    peak,
                    limit_bytes,
                    options.memory_tolerance_mib * MIB,
                )
            else:
                enforced = (not killed) and code == 0 and evidence["allocated_line"]
            origin = series.points[0][0] if series.points else 0
            checks.append(
                LimitCheck(
                    kind,
                    options.memory_limit_mib,
                    "MiB",
                    peak / MIB if peak is not None else None,
                    "MiB",
                    enforced,
                    evidence,
                    {"usage_mib": downsample(series.values("usage_bytes"), origin, 1 / MIB)},
                )
            )
        return checks

    def cpu(self) -> list[LimitCheck]:
        """For each quota Q: burn more threads than Q and measure cores used and throttling."""
        options = self.options
        checks = []
        for quota in options.cpu_quotas:
            spec = self.case.spec.model_copy(
                update={
                    "cpus": quota,
                    "payload": Payload(
                        mode="burn", threads=options.cpu_threads, seconds=options.cpu_seconds
                    ),
                }
            )
            try:
                _instance, series, code, details = self._sampled_run(spec)
            except BenchError as exc:
                checks.append(
                    LimitCheck("cpu", quota, "cores", None, "cores", False, error=str(exc))
                )
                continue
            usage = series.values("usage_ns")
            checks.append(
                cpu_check(
                    quota,
                    usage,
                    _delta(series, "nr_throttled"),
                    options,
                    {
                        "exit_code": code,
                        "cgroup": details.get("cgroup", {}).get("cpu"),
                    },
                )
            )
        return checks

    def pids(self) -> list[LimitCheck]:
        """Fork past P and check forks were refused at P and pids.events max rose."""
        options = self.options
        spec = self.case.spec.model_copy(
            update={
                "pids_limit": options.pids_limit,
                "payload": Payload(mode="fork", forks=options.pids_forks, seconds=1.0),
            }
        )
        try:
            _instance, series, code, details = self._sampled_run(spec)
        except BenchError as exc:
            return [
                LimitCheck(
                    "pids", options.pids_limit, "tasks", None, "tasks", False, error=str(exc)
                )
            ]
        fork = parse_fork_output(details["output"])
        max_events = series.maximum("pids_max_events")
        peak_tasks = series.maximum("pids_current")
        enforced = pids_verdict(fork, options.pids_limit, max_events)
        reached = fork["refused_after"] + 1 if fork["refused_after"] is not None else peak_tasks
        origin = series.points[0][0] if series.points else 0
        return [
            LimitCheck(
                "pids",
                options.pids_limit,
                "tasks",
                reached,
                "tasks",
                enforced,
                {
                    **fork,
                    "pids_events_max": max_events,
                    "pids_current_peak": peak_tasks,
                    "attempted": options.pids_forks,
                    "exit_code": code,
                    "cgroup": details.get("cgroup", {}).get("pids"),
                },
                {"tasks": downsample(series.values("pids_current"), origin)},
            )
        ]


def to_samples(
    checks: list[LimitCheck], backend: Backend, case: Case, run_id: str, seq: Callable[[], int]
) -> list[Sample]:
    """One tidy record per check: value = measured, labels = set value, verdict, evidence."""
    samples = []
    for check in checks:
        labels: dict[str, Any] = {
            "view": check.kind,
            "set_value": check.set_value,
            "set_unit": check.set_unit,
            "enforced": check.enforced,
            "applicable": check.enforced is not None,
            "evidence": check.evidence,
            "series": check.series,
            "accel": check.evidence.get("accel", "n/a"),
        }
        samples.append(
            Sample(
                run_id=run_id,
                seq=seq(),
                metric="limits",
                backend=backend.name,
                case=case.name,
                value=check.measured,
                unit=check.unit,
                ok=check.error is None and (check.measured is not None or check.enforced is None),
                error=check.error,
                instance="*",
                params=dict(case.params),
                labels=labels,
            )
        )
    return samples


def measure_limits(
    backend: Backend,
    case: Case,
    options: LimitOptions,
    run_id: str,
    names: Callable[[], str],
    live: dict[str, tuple[Backend, Instance]],
    seq: Callable[[], int],
    timeout_s: float,
) -> list[Sample]:
    """Run every requested limit check for one backend and case; return their records."""
    runner_class: type[LimitRunner] = LimitRunner
    if backend.name == "libvirt":
        from bench.metrics.limits_vm import VmLimitRunner

        runner_class = VmLimitRunner
    checker = runner_class(backend, case, options, run_id, names, live, timeout_s)
    checks: list[LimitCheck] = []
    for kind in options.kinds:
        try:
            checks.extend(getattr(checker, kind)())
        except BenchError as exc:
            checks.append(LimitCheck(kind, None, "", None, "", False, error=str(exc)))
    return to_samples(checks, backend, case, run_id, seq)
