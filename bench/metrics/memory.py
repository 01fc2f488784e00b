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

import statistics
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping

from bench.backends.base import Backend, Instance, Mechanism
from bench.cgroups.readers import cgroup_dir_for_pid, read_memory_usage
from bench.errors import BenchError
from bench.metrics.base import Metric, RunContext
from bench.metrics.procmem import MIB, mem_available_bytes, pss_bytes
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
        """Memory samples taken before a resume count towards the overheads."""
        self._taken.extend(
            s
            for s in samples
            if s.metric == self.name and "_overhead" not in str(s.labels.get("view", ""))
        )

    def finish(self, ctx: RunContext) -> Iterator[Sample]:
        """Overhead records against the run's native backends."""
        mechanisms = {
            name: backend.capabilities.mechanism for name, backend in ctx.backends.items()
        }
        overheads = overhead_samples(self._taken, mechanisms)
        if self._taken and Mechanism.NATIVE not in mechanisms.values():
            ctx.warn("memory overhead not computed: no native backend (process) in the run")
        yield from overheads


def measure_memory(ctx: RunContext, backend: Backend, step: Step) -> list[Sample]:
    """Start ``memory.instances`` idle instances, settle, read every view, remove them."""
    options = ctx.scenario.memory
    spec = idle_spec(ctx.spec_for(step.case.spec))
    count = options.instances
    cache_note = ctx.drop_page_cache() if options.drop_caches else "not dropped (scenario)"
    before_bytes = mem_available_bytes()
    instances: list[Instance] = []
    samples: list[Sample] = []
    error: str | None = None

    def record(
        instance: Instance | None,
        view: str,
        role: str,
        value_bytes: int | None,
        error: str | None = None,
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
                "page_cache": cache_note or "dropped",
            }
        )
        labels.update(extra)
        samples.append(
            Sample(
                metric="memory",
                backend=backend.name,
                case=step.case.name,
                value=value_bytes / MIB if value_bytes is not None else None,
                unit="MiB",
                ok=value_bytes is not None,
                error=error or (None if value_bytes is not None else f"{view}/{role} unreadable"),
                round=step.round,
                instance=instance.name if instance is not None else "*",
                params=dict(step.case.params),
                labels=labels,
            )
        )

    try:
        for _ in range(count):
            instance = ctx.new_instance(backend, spec)
            instances.append(instance)
            backend.start(spec, instance.name, ctx.run_id, instance)
            backend.wait_ready(instance, ctx.scenario.timeout_s)
        time.sleep(options.settle_s)
        after_bytes = mem_available_bytes()
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
        record(
            None,
            "memavailable_drop",
            "host",
            round((before_bytes - after_bytes) / count),
            before_bytes=before_bytes,
            after_bytes=after_bytes,
            accel=instances[0].labels.get("accel", "n/a") if instances else "n/a",
        )
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


def overhead_samples(
    samples: list[Sample], mechanisms: Mapping[str, Mechanism | str]
) -> list[Sample]:
    """Per instance: view minus the native baseline's median of the same case, view, role.

    A native backend runs the payload alone, so its figure is what the payload itself
    uses. For PSS the whole-instance total is compared; cgroup views compare cgroup
    usage; MemAvailable compares drop per instance. The baseline is taken from the same
    block when that block has one, else from every block.
    """

    def is_native(sample: Sample) -> bool:
        return str(mechanisms.get(sample.backend, "")) == Mechanism.NATIVE

    by_block: dict[tuple[int, str, str, str], list[float]] = defaultdict(list)
    pooled: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for sample in samples:
        if is_native(sample) and sample.ok and sample.value is not None:
            key = (sample.case, str(sample.labels["view"]), str(sample.labels["role"]))
            by_block[(sample.block, *key)].append(sample.value)
            pooled[key].append(sample.value)
    block_medians = {key: statistics.median(values) for key, values in by_block.items()}
    pooled_medians = {key: statistics.median(values) for key, values in pooled.items()}
    results = []
    for sample in samples:
        if is_native(sample) or not sample.ok or sample.value is None:
            continue
        view, role = str(sample.labels["view"]), str(sample.labels["role"])
        if view == "pss" and role != "total":
            continue
        key = (sample.case, view, "total" if view == "pss" else role)
        reference: float | None = block_medians.get((sample.block, *key))
        if reference is None:
            reference = pooled_medians.get(key)
        if reference is None:
            continue
        labels = dict(sample.labels)
        labels.update({"view": f"{view}_overhead", "of_view": view, "baseline_mib": reference})
        results.append(
            Sample(
                metric="memory",
                backend=sample.backend,
                case=sample.case,
                value=sample.value - reference,
                unit="MiB",
                round=sample.round,
                block=sample.block,
                instance=sample.instance,
                params=dict(sample.params),
                labels=labels,
            )
        )
    return results


__all__ = ["MemoryMetric", "idle_spec", "measure_memory", "overhead_samples"]
