"""Limit enforcement, measured: set a limit, push the payload past it, record what held.

Not "we set a limit" but "the limit held, and here is the measurement":
- memory: limit L, the probe allocates more than L. Enforced = the kernel killed it for
  the cgroup's limit (the engine's OOM verdict, or a SIGKILL from the host with the
  cgroup's oom_kill counter risen) and peak usage stayed within L + tolerance. A control
  run under L must live.
- cpu: quota Q cores, more busy threads than Q. Enforced = used CPU / wall at or under
  Q plus the tolerance, and the kernel throttled the group; a busy host that delivered
  less than Q is noted as contention (``verdict_note``), not counted as a failure.
- pids: limit P, the probe forks past it. Enforced = forks refused at P and the pids
  ``max`` event counter rose.

Everything a check needs to know about a backend comes from its declared capabilities:
how (or whether) it applies each limit (a limit it cannot apply is a "not applicable"
record with its reason), whether the limited cgroup also holds its runtime (a VMM with
the guest's RAM, a sandbox kernel: then the memory limit is the runtime's footprint,
calibrated by an unlimited run of the control payload, plus L), and whether it boots
bench's guest kernel (then the guest-internal cgroup v2 rows are taken as well, see
``limits_guest``). Evidence is read through ``backend.limit_readings``, sampled while
the instance lives (its cgroup vanishes at exit), and each record keeps a downsampled
time series for plotting.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench.backends.base import Backend, Instance
from bench.cgroups.sampler import CgroupSampler, Series
from bench.errors import BenchError
from bench.metrics.base import Metric, RunContext
from bench.metrics.limit_verdicts import (
    LimitCheck,
    cpu_check,
    downsample,
    failed_check,
    memory_verdict,
    not_applicable,
    parse_fork_output,
    pids_verdict,
)
from bench.metrics.limits_guest import GuestV2Checks
from bench.metrics.procmem import MIB
from bench.plan import Step
from bench.samples import Sample
from bench.scenario import InstanceSpec, Payload, Scenario

MEMORY_SAMPLE_INTERVAL_S = 0.002
# The memory payloads spin this long before READY, so the sampler is attached (and the
# instance's cgroup found) before the allocation can reach the limit and kill it: a
# sandbox starts its payload before its start call returns, and dies within ms.
MEMORY_ATTACH_MS = 300.0
# How much of an instance's output the checks read (a guest's console also carries the
# kernel's lines, before and after the payload's)
OUTPUT_TAIL_CHARS = 20000
# a guest holds the payload's allocation in its own RAM: this much more than it allocates
GUEST_RAM_HEADROOM_MIB = 128


def _delta(series: Series, key: str) -> int | None:
    values = series.values(key)
    if len(values) < 2:
        return None
    return int(values[-1][1] - values[0][1])


@dataclass
class SampledRun:
    """One instance run to its end under sampling: what it printed, its series, its exit."""

    instance: Instance
    series: Series
    code: int | None
    details: dict[str, Any]


def limit_spec(spec: InstanceSpec, payload: Payload, guest_kernel: bool) -> InstanceSpec:
    """A case's spec with a limit check's payload; a guest gets the RAM to hold it. Pure."""
    update: dict[str, Any] = {"payload": payload}
    if guest_kernel and payload.alloc_mib is not None:
        update["guest_memory_mib"] = max(
            spec.guest_memory_mib, payload.alloc_mib + GUEST_RAM_HEADROOM_MIB
        )
    return spec.model_copy(update=update)


class LimitRunner:
    """Runs the limit checks of one backend and case, with cleanup on every path."""

    def __init__(self, ctx: RunContext, backend: Backend, step: Step) -> None:
        self.ctx = ctx
        self.backend = backend
        self.case = step.case
        self.options = ctx.scenario.limits
        self.timeout_s = ctx.scenario.timeout_s
        self.capabilities = backend.capabilities

    def spec(self, payload: Payload, **limits: Any) -> InstanceSpec:
        """The case's spec with this payload and these limits (a guest gets RAM to hold it)."""
        spec = limit_spec(self.case.spec, payload, self.capabilities.guest_kernel)
        return self.ctx.spec_for(spec.model_copy(update=limits) if limits else spec)

    def sampled_run(self, spec: InstanceSpec, interval_s: float | None = None) -> SampledRun:
        """Start, sample the limit evidence until the payload exits, collect details, remove."""
        ctx = self.ctx
        instance = ctx.new_instance(self.backend, spec)
        sampler: CgroupSampler | None = None
        details: dict[str, Any] = {}
        code: int | None = None
        try:
            self.backend.start(spec, instance.name, ctx.run_id, instance)
            reader = self.backend.limit_readings(instance, ctx.layout)
            sampler = CgroupSampler(reader, interval_s or self.options.sample_interval_s).start()
            try:
                self.backend.wait_ready(instance, self.timeout_s)
                code = self.backend.wait_exit(instance, self.timeout_s)
            except BenchError as exc:
                # a runtime killed for its limit may never print READY or report an exit
                details["wait_error"] = str(exc)
            details.update(self.backend.exit_details(instance))
        finally:
            series = sampler.stop() if sampler is not None else Series()
            ctx.finish(self.backend, instance)
        details["exit_code"] = code
        details["output"] = instance.output_text(OUTPUT_TAIL_CHARS)
        details["series_end"] = series.ended_reason
        return SampledRun(instance, series, code, details)

    def _accel(self, run: SampledRun) -> str:
        return str(run.instance.labels.get("accel", "n/a"))

    # -- memory -------------------------------------------------------------------------

    def memory(self) -> list[LimitCheck]:
        """Over-limit run (killed, peak within the limit + tolerance) and control run (lives)."""
        options = self.options
        support = self.capabilities.limit("memory")
        if not support.applicable:
            return [not_applicable("memory", options.memory_limit_mib, "MiB", support.how)]
        derivation: dict[str, Any] = {"headroom_mib": options.memory_limit_mib}
        limit_bytes = options.memory_limit_mib * MIB
        if self.capabilities.runtime_in_limit:
            footprint = self._calibrate_footprint()
            limit_bytes = footprint + options.memory_limit_mib * MIB
            derivation = {
                "derivation": "calibrated runtime footprint (anonymous-memory peak of an "
                "unlimited run of the control payload) + the scenario's limit",
                "calibration_anon_peak_mib": footprint / MIB,
                "headroom_mib": options.memory_limit_mib,
            }
        limit_mib = math.ceil(limit_bytes / MIB)
        limit_bytes = limit_mib * MIB
        checks = []
        for kind, alloc_mib in (
            ("memory", options.memory_alloc_mib),
            ("memory_control", options.memory_control_mib),
        ):
            spec = self.spec(
                Payload(mode="alloc", alloc_mib=alloc_mib, seconds=1.0, spin_ms=MEMORY_ATTACH_MS),
                memory_mib=limit_mib,
            )
            try:
                # the payload reaches the limit within tens of ms and the cgroup of a
                # container vanishes when it dies: sample fast to catch the high-water mark
                run = self.sampled_run(
                    spec, interval_s=min(options.sample_interval_s, MEMORY_SAMPLE_INTERVAL_S)
                )
            except BenchError as exc:
                checks.append(failed_check(kind, limit_mib, "MiB", str(exc)))
                continue
            checks.append(self._memory_check(kind, alloc_mib, limit_bytes, run, derivation))
        return checks

    def _calibrate_footprint(self) -> int:
        """Anonymous-memory peak of the limited cgroup for the control payload, no limit.

        Anonymous, not usage: page cache charged to the cgroup (kernel and initramfs files
        a VMM read, if nobody cached them first) varies from run to run and is reclaimable,
        so it would make the limit a coin toss.
        """
        options = self.options
        spec = self.spec(
            Payload(
                mode="alloc",
                alloc_mib=options.memory_control_mib,
                seconds=1.0,
                spin_ms=MEMORY_ATTACH_MS,
            )
        )
        run = self.sampled_run(spec)
        peak = run.series.maximum("anon_bytes")
        if peak is None:
            raise BenchError(
                f"{self.backend.name}: calibration run: the limited cgroup's anonymous memory "
                f"could not be sampled ({run.series.ended_reason or 'no samples'})"
            )
        return int(peak)

    def _memory_check(
        self,
        kind: str,
        alloc_mib: int,
        limit_bytes: int,
        run: SampledRun,
        derivation: dict[str, Any],
    ) -> LimitCheck:
        options = self.options
        series, details, code = run.series, run.details, run.code
        candidates = [
            series.maximum("peak_bytes"),
            series.maximum("usage_bytes"),
            details.get("peak_bytes_final"),  # only backends whose cgroup outlives exit
        ]
        known = [v for v in candidates if v is not None]
        peak = max(known) if known else None
        oom_kills = max(series.maximum("oom_kill") or 0, details.get("oom_kill_final") or 0)
        killed = bool(details.get("oom_killed")) or (
            bool(details.get("killed_by_host")) and oom_kills > 0
        )
        evidence = {
            "killed": killed,
            "engine_oom_killed": details.get("oom_killed"),
            "killed_by_host": details.get("killed_by_host"),
            "oom_kill_count": oom_kills,
            "exit_code": code,
            "failcnt": series.maximum("failcnt"),
            "allocated_line": "ALLOCATED" in details["output"],
            "alloc_mib": alloc_mib,
            "samples": len(series.points),
            "applied": self.capabilities.limit("memory").how,
            "accel": self._accel(run),
            **run.instance.labels.get("limits_applied", {}),
            **derivation,
        }
        for key in ("domain_state", "shutoff_reason", "guest_exit_code", "wait_error"):
            if key in details:
                evidence[key] = details[key]
        if kind == "memory":
            enforced = memory_verdict(killed, peak, limit_bytes, options.memory_tolerance_mib * MIB)
        else:
            enforced = (not killed) and code == 0 and evidence["allocated_line"]
        origin = series.points[0][0] if series.points else 0
        return LimitCheck(
            kind=kind,
            set_value=limit_bytes / MIB,
            set_unit="MiB",
            measured=peak / MIB if peak is not None else None,
            unit="MiB",
            enforced=enforced,
            evidence=evidence,
            series={"usage_mib": downsample(series.values("usage_bytes"), origin, 1 / MIB)},
        )

    # -- cpu ----------------------------------------------------------------------------

    def cpu(self) -> list[LimitCheck]:
        """For each quota Q: burn more threads than Q and measure cores used and throttling."""
        options = self.options
        support = self.capabilities.limit("cpu")
        checks = []
        for quota in options.cpu_quotas:
            if not support.applicable:
                checks.append(not_applicable("cpu", quota, "cores", support.how))
                continue
            spec = self.spec(
                Payload(mode="burn", threads=options.cpu_threads, seconds=options.cpu_seconds),
                cpus=quota,
            )
            try:
                run = self.sampled_run(spec)
            except BenchError as exc:
                checks.append(failed_check("cpu", quota, "cores", str(exc)))
                continue
            checks.append(
                cpu_check(
                    quota,
                    run.series.values("usage_ns"),
                    _delta(run.series, "nr_throttled"),
                    options,
                    {
                        "exit_code": run.code,
                        "applied": support.how,
                        "accel": self._accel(run),
                        **run.instance.labels.get("limits_applied", {}),
                    },
                )
            )
        return checks

    # -- pids ---------------------------------------------------------------------------

    def pids(self) -> list[LimitCheck]:
        """Fork past P and check forks were refused at P and the pids max counter rose."""
        options = self.options
        support = self.capabilities.limit("pids")
        if not support.applicable:
            return [not_applicable("pids", options.pids_limit, "tasks", support.how)]
        spec = self.spec(
            Payload(mode="fork", forks=options.pids_forks, seconds=1.0),
            pids_limit=options.pids_limit,
        )
        try:
            run = self.sampled_run(spec)
        except BenchError as exc:
            return [failed_check("pids", options.pids_limit, "tasks", str(exc))]
        series = run.series
        fork = parse_fork_output(run.details["output"])
        max_events = series.maximum("pids_max_events")
        peak_tasks = series.maximum("pids_current")
        enforced = pids_verdict(fork, options.pids_limit, max_events)
        reached = fork["refused_after"] + 1 if fork["refused_after"] is not None else peak_tasks
        origin = series.points[0][0] if series.points else 0
        return [
            LimitCheck(
                kind="pids",
                set_value=options.pids_limit,
                set_unit="tasks",
                measured=reached,
                unit="tasks",
                enforced=enforced,
                evidence={
                    **fork,
                    "pids_events_max": max_events,
                    "pids_current_peak": peak_tasks,
                    "attempted": options.pids_forks,
                    "exit_code": run.code,
                    "applied": support.how,
                    "accel": self._accel(run),
                },
                series={"tasks": downsample(series.values("pids_current"), origin)},
            )
        ]


def to_sample(check: LimitCheck, backend: Backend, step: Step) -> Sample:
    """One tidy record per check: value = measured, labels = set value, verdict, evidence."""
    labels: dict[str, Any] = {
        "view": check.kind,
        "set_value": check.set_value,
        "set_unit": check.set_unit,
        "enforced": check.enforced,
        "verdict_note": check.note or None,
        "applicable": check.enforced is not None,
        "evidence": check.evidence,
        "series": check.series,
        "accel": check.evidence.get("accel", "n/a"),
    }
    return Sample(
        metric="limits",
        backend=backend.name,
        case=step.case.name,
        value=check.measured,
        unit=check.unit,
        ok=check.error is None and (check.measured is not None or check.enforced is None),
        error=check.error,
        round=step.round,
        instance="*",
        params=dict(step.case.params),
        labels=labels,
    )


class LimitsMetric(Metric):
    """One step = every requested limit check for one backend and case."""

    name = "limits"

    def rounds(self, scenario: Scenario) -> tuple[int, int]:
        """One set of checks per backend and case in each block."""
        return 0, 1

    def describe(self, step: Step) -> str:
        """What the step checks."""
        return f"limits: {step.backend}, {step.case.name}"

    def measure(self, ctx: RunContext, step: Step) -> Iterator[Sample]:
        """Run each kind's checks (host side, then guest-internal where the backend boots one)."""
        backend = ctx.backends[step.backend]
        checker = LimitRunner(ctx, backend, step)
        guest = GuestV2Checks(checker) if backend.capabilities.guest_kernel else None
        for kind in ctx.scenario.limits.kinds:
            ctx.progress(f"limits {backend.name}: {kind}")
            checks: list[LimitCheck] = []
            try:
                checks.extend(getattr(checker, kind)())
            except BenchError as exc:
                checks.append(failed_check(kind, None, "", str(exc)))
            if guest is not None:
                checks.extend(guest.rows(kind))
            for check in checks:
                yield to_sample(check, backend, step)
