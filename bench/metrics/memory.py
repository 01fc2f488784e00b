"""Memory overhead per instance, three views, for N idle instances at once.

1. PSS of every host process that exists because of the instance, by role (the
   backend declares its roles: qemu; container processes + containerd-shim; the probe),
   from /proc/PID/smaps_rollup.
2. Host MemAvailable drop divided by N, page cache dropped first when allowed.
3. The instance's own cgroup usage (v1 memory.usage_in_bytes / max_usage_in_bytes,
   v2 memory.current / memory.peak), read while the instances live.
Overhead = view minus what the payload itself uses: the median of the same case and view
on the run's native backends (the mechanism class, never a name), in the same block
where that block has one. Computed from recorded values by ``overhead_samples``; without
a native backend in the run nothing is computed, and nothing is invented.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from bench.backends.base import Backend, Instance, Mechanism
from bench.cgroups.readers import cgroup_dir_for_pid, read_memory_usage
from bench.errors import BenchError
from bench.host_settings import changed_settings
from bench.metrics.base import Metric, RunContext
from bench.metrics.ksm import host_knobs, ksm_on_knobs, settle_ksm
from bench.metrics.ledger import instance_ledger
from bench.metrics.memory_derived import overhead_samples, slope_samples
from bench.metrics.procmem import MIB, mem_available_bytes, pss_bytes
from bench.metrics.slope import (
    fit_group,
)
from bench.plan import Step
from bench.samples import Sample
from bench.scenario import InstanceSpec, Scenario

MEMORY_VIEWS = ("pss", "memavailable_drop", "cgroup_usage", "cgroup_peak")


def idle_spec(spec: InstanceSpec) -> InstanceSpec:
    """The spec with a payload that stays alive (``ready`` exits at once, so it becomes idle)."""
    if spec.payload.mode == "ready":
        return spec.model_copy(update={"payload": spec.payload.model_copy(update={"mode": "idle"})})
    return spec


class MemoryMetric(Metric):
    """One step = N idle instances of one backend and case, every view read, all removed."""

    name = "memory"

    def __init__(self) -> None:
        self._taken: list[Sample] = []

    def rounds(self, scenario: Scenario) -> tuple[int, int]:
        """No warmups; ``memory.rounds`` groups per backend and case in each block."""
        return 0, scenario.memory.rounds

    def describe(self, step: Step) -> str:
        """What the step starts."""
        return f"memory: idle {step.backend} instances, {step.case.name}"

    def measure(self, ctx: RunContext, step: Step) -> Iterator[Sample]:
        """Start the group, settle, read every view, remove the group."""
        for sample in measure_memory(ctx, ctx.backends[step.backend], step):
            self._taken.append(sample)
            yield sample

    def restore(self, samples: list[Sample]) -> None:
        """Memory samples taken before a resume count towards the derived records."""
        self._taken.extend(
            s
            for s in samples
            if s.metric == self.name and s.step >= 0  # derived records carry step -1
        )

    def finish(self, ctx: RunContext) -> Iterator[Sample]:
        """Overhead records against the run's native backends."""
        mechanisms = {
            name: backend.capabilities.mechanism for name, backend in ctx.backends.items()
        }
        overheads = overhead_samples(self._taken, mechanisms)
        overheads += slope_samples(self._taken, mechanisms)
        if self._taken and Mechanism.NATIVE not in mechanisms.values():
            ctx.warn("memory overhead not computed: no native backend (process) in the run")
        yield from overheads


def measure_memory(ctx: RunContext, backend: Backend, step: Step) -> list[Sample]:
    """Start ``memory.instances`` idle instances, settle, read every view, remove them.

    MemAvailable is also read after every instance (``step_settle_s`` after READY), for
    the slope of MemAvailable against N. With ``ksm: both`` the instances are read again
    after KSM settled; KSM and THP are set for the group and given back afterwards.
    """
    options = ctx.scenario.memory
    spec = idle_spec(ctx.spec_for(step.case.spec))
    count = options.instances
    samples: list[Sample] = []
    error: str | None = None
    instances: list[Instance] = []
    state = {"ksm": "off" if options.ksm != "on" else "on"}

    def record(
        instance: Instance | None,
        view: str,
        role: str,
        value_bytes: float | None,
        error: str | None = None,
        seconds: float | None = None,
        not_applicable: str | None = None,
        **extra: object,
    ) -> None:
        labels: dict[str, object] = dict(instance.labels) if instance is not None else {}
        labels.setdefault("accel", "n/a")
        labels.update(
            {
                "view": view,
                "role": role,
                "instances": count,
                "settle_s": options.settle_s,
                "page_cache": state.get("cache_note") or "dropped",
                "ksm": state["ksm"],
                "thp": options.thp,
            }
        )
        labels.update(extra)
        value = (
            seconds
            if seconds is not None
            else (value_bytes / MIB if value_bytes is not None else None)
        )
        samples.append(
            Sample(
                metric="memory",
                backend=backend.name,
                case=step.case.name,
                value=value,
                unit="s" if seconds is not None else "MiB",
                ok=value is not None or not_applicable is not None,
                error=error
                or (
                    None
                    if value is not None or not_applicable is not None
                    else f"{view}/{role} unreadable"
                ),
                round=step.round,
                instance=instance.name if instance is not None else "*",
                params=dict(step.case.params),
                labels=labels,
            )
        )

    try:
        with changed_settings(host_knobs(options), ctx.run_id) as previous:
            state["cache_note"] = (
                ctx.drop_page_cache() if options.drop_caches else "not dropped (scenario)"
            ) or ""
            before_bytes = mem_available_bytes()
            origin = time.monotonic()

            def point(n: int) -> tuple[float, float, float]:
                return (float(n), time.monotonic() - origin, mem_available_bytes() / MIB)

            points = [point(0)]
            for number in range(1, count + 1):
                instance = ctx.new_instance(backend, spec)
                instances.append(instance)
                backend.start(spec, instance.name, ctx.run_id, instance)
                backend.wait_ready(instance, ctx.scenario.timeout_s)
                ctx.progress(f"memory {backend.name}: {number} of {count} idle instances")
                if options.step_settle_s:
                    time.sleep(options.step_settle_s)
                points.append(point(number))
            time.sleep(options.settle_s)
            if options.ksm == "on":
                settled = settle_ksm(options)
                record(None, "ksm_settle", "host", None, seconds=settled.pop("settle_s"), **settled)
            _read_group(ctx, backend, instances, record, before_bytes)
            if options.ksm == "both":
                with changed_settings(ksm_on_knobs(), f"{ctx.run_id}-ksm"):
                    state["ksm"] = "on"
                    settled = settle_ksm(options)
                    record(
                        None, "ksm_settle", "host", None, seconds=settled.pop("settle_s"), **settled
                    )
                    _read_group(ctx, backend, instances, record, before_bytes)
                state["ksm"] = "off"
            else:
                # ramp down, one instance at a time: N falls while time goes on, so the
                # host's drift and the instances' cost can be told apart
                while instances:
                    ctx.finish(backend, instances.pop())
                    if options.step_settle_s:
                        time.sleep(options.step_settle_s)
                    points.append(point(len(instances)))
            _record_slope(record, points, drift_removed=options.ksm != "both")
            for sample in samples:
                sample.labels.setdefault("host_settings_before", previous)
    except BenchError as exc:
        error = str(exc)
    finally:
        for instance in instances:
            try:
                ctx.finish(backend, instance)
            except Exception as exc:
                error = error or f"cleanup failed: {exc}"
    if error is not None:
        record(None, "error", "-", None, error=error)
    return samples


def _read_group(
    ctx: RunContext,
    backend: Backend,
    instances: list[Instance],
    record: Callable[..., None],
    before_bytes: int,
) -> None:
    """Every view and the ledger of each live instance, then the host-wide records."""
    after_bytes = mem_available_bytes()
    totals: list[int] = []
    for instance in instances:
        if not backend.is_alive(instance):
            record(
                instance,
                "pss",
                "total",
                None,
                error=f"{instance.name} vanished while idle: removed from outside the "
                "run (bench clean --all, an engine restart?)",
            )
            continue
        roles = backend.host_processes(instance)
        total = 0
        complete = True
        for role, pids in sorted(roles.items()):
            role_bytes = 0
            for pid in pids:
                value = pss_bytes(pid)
                if value is None:
                    complete = False
                    continue
                role_bytes += value
            record(instance, "pss", role, role_bytes if pids else 0, pids=pids)
            total += role_bytes
        record(instance, "pss", "total", total if complete else None)
        main = backend.main_pid(instance)
        directory = cgroup_dir_for_pid(main, "memory", ctx.layout) if main else None
        usage = read_memory_usage(directory, ctx.layout) if directory else {}
        cgroup_name = str(directory) if directory else None
        record(
            instance,
            "cgroup_usage",
            "cgroup",
            usage.get("usage_bytes"),
            cgroup=cgroup_name,
            cache_bytes=usage.get("cache_bytes"),
        )
        record(instance, "cgroup_peak", "cgroup", usage.get("peak_bytes"), cgroup=cgroup_name)
        ledger = instance_ledger(backend, instance, ctx.layout)
        for part, value in ledger.parts.items():
            note = ledger.notes.get(part)
            if value is None and part in ledger.not_applicable:
                record(instance, "ledger", part, None, not_applicable=note)
            else:
                record(instance, "ledger", part, value, error=note if value is None else None)
        ledger_total = ledger.parts.get("total")
        if ledger_total is not None:
            totals.append(ledger_total)
    count = len(instances)
    accel = instances[0].labels.get("accel", "n/a") if instances else "n/a"
    drop = (before_bytes - after_bytes) / count if count else None
    extra: dict[str, object] = {}
    if drop is not None and totals:
        mean_total = sum(totals) / len(totals)
        extra = {
            "ledger_total_mean_mib": mean_total / MIB,
            "unexplained_mib": (drop - mean_total) / MIB,
        }
    record(
        None,
        "memavailable_drop",
        "host",
        round(drop) if drop is not None else None,
        before_bytes=before_bytes,
        after_bytes=after_bytes,
        accel=accel,
        **extra,
    )


def _record_slope(
    record: Callable[..., None], points: list[tuple[float, float, float]], drift_removed: bool
) -> None:
    """The group's MemAvailable-against-N slope, as the cost of one more instance."""
    fit = fit_group(points, drift_removed)
    if fit is None:
        return
    # MemAvailable falls as N grows: the cost of one more instance is minus the slope
    record(
        None,
        "memavailable_slope",
        "host",
        -fit.slope * MIB,
        ci_low_mib=-fit.ci_high if fit.ci_high is not None else None,
        ci_high_mib=-fit.ci_low if fit.ci_low is not None else None,
        points=[[n, round(t, 2), round(y, 2)] for n, t, y in points],
        drift_removed=drift_removed,
        df=fit.df,
    )
