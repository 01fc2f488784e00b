"""Memory overhead per instance, three views (MEASURE.md), for N idle instances at once.

1. PSS of every host process that exists because of the instance, by role (qemu;
   container processes + containerd-shim; the probe), from /proc/PID/smaps_rollup.
2. Host MemAvailable drop divided by N, page cache dropped first when allowed.
3. The instance's own cgroup usage (v1 memory.usage_in_bytes / max_usage_in_bytes,
   v2 memory.current / memory.peak), read while the instances live.
Overhead = view minus what the payload itself uses, the process backend's figure for the
same case and view; computed by ``overhead_samples`` from recorded values, never guessed.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable

from bench.backends.base import Backend, Instance
from bench.cgroups.layout import detect as detect_layout
from bench.cgroups.readers import cgroup_dir_for_pid, read_memory_usage
from bench.errors import BenchError
from bench.metrics.procmem import MIB, mem_available_bytes, pss_bytes
from bench.samples import Sample
from bench.scenario import Case, InstanceSpec, MemoryOptions, Payload

MEMORY_VIEWS = ("pss", "memavailable_drop", "cgroup_usage", "cgroup_peak")


def idle_spec(spec: InstanceSpec) -> InstanceSpec:
    """The spec with a payload that stays alive (``ready`` exits at once, so it becomes idle)."""
    if spec.payload.mode == "ready":
        return spec.model_copy(update={"payload": Payload(mode="idle")})
    return spec


def measure_memory(
    backend: Backend,
    case: Case,
    options: MemoryOptions,
    run_id: str,
    names: Callable[[], str],
    live: dict[str, tuple[Backend, Instance]],
    seq: Callable[[], int],
    round_number: int,
    timeout_s: float,
    drop_caches: Callable[[], str | None],
) -> list[Sample]:
    """Start ``options.instances`` idle instances, settle, read every view, remove them."""
    spec = idle_spec(case.spec)
    count = options.instances
    cache_note = drop_caches() if options.drop_caches else "page cache not dropped (scenario)"
    before_bytes = mem_available_bytes()
    instances: list[Instance] = []
    samples: list[Sample] = []
    error: str | None = None
    layout = detect_layout()

    def record(
        instance_name: str,
        view: str,
        role: str,
        value_bytes: int | None,
        error: str | None = None,
        **extra: object,
    ) -> None:
        labels: dict[str, object] = {
            "view": view,
            "role": role,
            "instances": count,
            "accel": "n/a",
            "settle_s": options.settle_s,
            "page_cache": cache_note or "dropped",
        }
        if backend.name == "libvirt":
            labels["guest_memory_mib"] = spec.guest_memory_mib
        labels.update(extra)
        samples.append(
            Sample(
                run_id=run_id,
                seq=seq(),
                metric="memory",
                backend=backend.name,
                case=case.name,
                value=value_bytes / MIB if value_bytes is not None else None,
                unit="MiB",
                ok=value_bytes is not None,
                error=error or (None if value_bytes is not None else f"{view}/{role} unreadable"),
                round=round_number,
                instance=instance_name,
                params=dict(case.params),
                labels=labels,
            )
        )

    try:
        for _ in range(count):
            name = names()
            instance = Instance(backend.name, name, spec, run_id)
            live[name] = (backend, instance)
            instances.append(instance)
            backend.start(spec, name, run_id, instance)
            backend.wait_ready(instance, timeout_s)
        time.sleep(options.settle_s)
        after_bytes = mem_available_bytes()
        for instance in instances:
            accel = str(instance.labels.get("accel", "n/a"))
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
                record(
                    instance.name, "pss", role, role_bytes if pids else 0, accel=accel, pids=pids
                )
                total += role_bytes
            record(instance.name, "pss", "total", total if complete else None, accel=accel)
            main = backend.main_pid(instance)
            directory = cgroup_dir_for_pid(main, "memory", layout) if main else None
            usage = read_memory_usage(directory, layout) if directory else {}
            cgroup_name = str(directory) if directory else None
            record(
                instance.name,
                "cgroup_usage",
                "cgroup",
                usage.get("usage_bytes"),
                accel=accel,
                cgroup=cgroup_name,
                cache_bytes=usage.get("cache_bytes"),
            )
            record(
                instance.name,
                "cgroup_peak",
                "cgroup",
                usage.get("peak_bytes"),
                accel=accel,
                cgroup=cgroup_name,
            )
        accel = str(instances[0].labels.get("accel", "n/a")) if instances else "n/a"
        record(
            "*",
            "memavailable_drop",
            "host",
            round((before_bytes - after_bytes) / count),
            accel=accel,
            before_bytes=before_bytes,
            after_bytes=after_bytes,
        )
    except BenchError as exc:
        error = str(exc)
    finally:
        for instance in instances:
            try:
                backend.stop(instance)
                backend.wait_gone(instance)
            except Exception as exc:
                error = error or f"cleanup failed: {exc}"
            live.pop(instance.name, None)
        for name in [n for n, (b, _i) in live.items() if b is backend]:
            _b, leftover = live.pop(name)
            try:
                backend.stop(leftover)
            except Exception as exc:
                error = error or f"cleanup failed: {exc}"
    if error is not None:
        record("*", "error", "-", None, error=error)
    return samples


def overhead_samples(samples: list[Sample], run_id: str, seq: Callable[[], int]) -> list[Sample]:
    """Per instance: view minus the process baseline's median of the same case, view, role.

    The process backend runs the payload alone, so its figure is what the payload itself
    uses. For PSS the whole-instance total is compared; cgroup views compare cgroup
    usage; MemAvailable compares drop per instance. Without a process baseline in the run,
    nothing is computed (and nothing is invented).
    """
    baseline: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for sample in samples:
        if sample.backend == "process" and sample.ok and sample.value is not None:
            key = (sample.case, str(sample.labels["view"]), str(sample.labels["role"]))
            baseline[key].append(sample.value)
    medians = {key: statistics.median(values) for key, values in baseline.items()}
    results = []
    for sample in samples:
        if sample.backend == "process" or not sample.ok or sample.value is None:
            continue
        view, role = str(sample.labels["view"]), str(sample.labels["role"])
        if view == "pss" and role != "total":
            continue
        reference_role = "total" if view == "pss" else role
        reference = medians.get((sample.case, view, reference_role))
        if reference is None:
            continue
        labels = dict(sample.labels)
        labels.update({"view": f"{view}_overhead", "of_view": view, "baseline_mib": reference})
        results.append(
            Sample(
                run_id=run_id,
                seq=seq(),
                metric="memory",
                backend=sample.backend,
                case=sample.case,
                value=sample.value - reference,
                unit="MiB",
                round=sample.round,
                instance=sample.instance,
                params=dict(sample.params),
                labels=labels,
            )
        )
    return results
