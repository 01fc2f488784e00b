"""Density: a ramp that adds instances at a fixed cadence until a stop rule fires.

Each instance must reach READY (waited for in parallel, so the cadence never waits for
steady state). At every completed instance the ramp records the count, that instance's
startup latency, host MemAvailable, total PSS of every instance's host processes, the
harness's own RSS and failures. It stops at the first of: max count, MemAvailable under
the floor (the host must never OOM), p99 startup over the SLO, error rate over the limit;
the reason is recorded. Everything is torn down afterwards, also on interrupt.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from bench.backends.base import Backend, Instance
from bench.errors import BenchError
from bench.metrics.memory import idle_spec
from bench.metrics.procmem import MIB, mem_available_bytes, pss_bytes, rss_bytes_self
from bench.samples import Sample
from bench.scenario import Case, DensityOptions

STOP_MAX_COUNT = "max_count"
STOP_MEM_FLOOR = "mem_floor"
STOP_SLO = "slo_p99"
STOP_ERRORS = "error_rate"


@dataclass
class RampState:
    """What the ramp knows so far (the input of the stop rules)."""

    started: int = 0
    ready: int = 0
    failed: int = 0
    latencies_s: list[float] = field(default_factory=list)
    mem_available_bytes: int | None = None


def p99(values: list[float]) -> float:
    """The 99th percentile by the nearest-rank method (no interpolation past the data)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(0.99 * len(ordered)))
    return ordered[rank - 1]


def stop_reason(state: RampState, options: DensityOptions) -> str | None:
    """The first stop rule that fires for ``state``, or None to keep ramping. Pure."""
    if state.started >= options.max_count:
        return STOP_MAX_COUNT
    if (
        state.mem_available_bytes is not None
        and state.mem_available_bytes < options.mem_floor_mib * MIB
    ):
        return STOP_MEM_FLOOR
    done = state.ready + state.failed
    if done >= options.slo_min_instances:
        if state.latencies_s and p99(state.latencies_s) > options.slo_p99_s:
            return STOP_SLO
        if state.failed / done > options.max_error_rate:
            return STOP_ERRORS
    return None


def _start_and_wait(backend: Backend, instance: Instance, timeout_s: float) -> Instance:
    backend.start(instance.spec, instance.name, instance.run_id, instance)
    backend.wait_ready(instance, timeout_s)
    return instance


def run_density(
    backend: Backend,
    case: Case,
    options: DensityOptions,
    run_id: str,
    names: Callable[[], str],
    live: dict[str, tuple[Backend, Instance]],
    seq: Callable[[], int],
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Ramp one backend for one case; return step samples and a final stop record."""
    spec = idle_spec(case.spec)
    state = RampState(mem_available_bytes=mem_available_bytes())
    samples: list[Sample] = []
    instances: list[Instance] = []
    pending: dict[Future[Instance], Instance] = {}
    harness_rss_max = 0
    origin = time.monotonic()

    def emit(sample: Sample) -> None:
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)

    def step_record(view: str, value: float | None, unit: str, labels: dict[str, object]) -> None:
        emit(
            Sample(
                run_id=run_id,
                seq=seq(),
                metric="density",
                backend=backend.name,
                case=case.name,
                value=value,
                unit=unit,
                ok=value is not None,
                error=None if value is not None else str(labels.get("error", "failed")),
                instance=str(labels.get("instance", "*")),
                params=dict(case.params),
                labels={"view": view, **labels},
            )
        )

    def total_pss_bytes() -> int:
        total = 0
        for instance in instances:
            if "ready" not in instance.t_ns:
                continue
            with contextlib.suppress(Exception):
                for pids in backend.host_processes(instance).values():
                    total += sum(pss_bytes(pid) or 0 for pid in pids)
        return total

    def complete(future: Future[Instance]) -> None:
        nonlocal harness_rss_max
        instance = pending.pop(future)
        error = None
        try:
            future.result()
        except BenchError as exc:
            error = str(exc)
        except Exception as exc:  # engine errors are failures of this instance, recorded
            error = f"{type(exc).__name__}: {exc}"
        latency = None
        if error is None and "ready" in instance.t_ns:
            latency = (instance.t_ns["ready"] - instance.t_ns["create"]) / 1e9
            state.ready += 1
            state.latencies_s.append(latency)
        else:
            state.failed += 1
        state.mem_available_bytes = mem_available_bytes()
        rss = rss_bytes_self()
        harness_rss_max = max(harness_rss_max, rss)
        labels: dict[str, object] = {
            "instance": instance.name,
            "step": state.ready + state.failed,
            "count_started": state.started,
            "count_ready": state.ready,
            "failures": state.failed,
            "elapsed_s": round(time.monotonic() - origin, 3),
            "accel": instance.labels.get("accel", "n/a"),
        }
        if error:
            labels["error"] = error
        step_record("startup_s", latency, "s", labels)
        step_record("mem_available", state.mem_available_bytes / MIB, "MiB", labels)
        step_record("total_pss", total_pss_bytes() / MIB, "MiB", labels)
        step_record("harness_rss", rss / MIB, "MiB", labels)

    reason: str | None = None
    executor = ThreadPoolExecutor(max_workers=min(64, options.max_count), thread_name_prefix="ramp")
    try:
        while True:
            for future in [f for f in pending if f.done()]:
                complete(future)
            reason = stop_reason(state, options)
            if reason is not None:
                break
            due = origin + state.started * options.interval_s
            remaining = due - time.monotonic()
            if remaining > 0:
                if pending:
                    wait(list(pending), timeout=remaining, return_when=FIRST_COMPLETED)
                else:
                    time.sleep(remaining)
                continue
            name = names()
            instance = Instance(backend.name, name, spec, run_id)
            live[name] = (backend, instance)
            instances.append(instance)
            state.started += 1
            pending[
                executor.submit(_start_and_wait, backend, instance, options.ready_timeout_s)
            ] = instance
        # the rule fired: in-flight instances still finish (each under its timeout)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                complete(future)
    finally:
        for future in list(pending):
            future.cancel()
        teardown_started = time.monotonic()
        teardown_errors = _teardown(backend, instances, live, executor)
        executor.shutdown(wait=True, cancel_futures=True)
        teardown_s = time.monotonic() - teardown_started
    step_record(
        "count_reached",
        float(state.ready),
        "instances",
        {
            "stop_reason": reason or "interrupted",
            "count_started": state.started,
            "failures": state.failed,
            "p99_startup_s": p99(state.latencies_s) if state.latencies_s else None,
            "harness_rss_max_mib": harness_rss_max / MIB,
            "teardown_s": round(teardown_s, 3),
            "teardown_errors": teardown_errors,
            "mem_floor_mib": options.mem_floor_mib,
            "slo_p99_s": options.slo_p99_s,
            "interval_s": options.interval_s,
            "accel": next(
                (str(i.labels["accel"]) for i in instances if "accel" in i.labels), "n/a"
            ),
        },
    )
    return samples


def _teardown(
    backend: Backend,
    instances: list[Instance],
    live: dict[str, tuple[Backend, Instance]],
    executor: ThreadPoolExecutor,
) -> list[str]:
    """Remove every instance of the ramp in parallel; return what failed."""

    def remove(instance: Instance) -> str | None:
        try:
            backend.stop(instance)
            backend.wait_gone(instance, timeout_s=30)
        except Exception as exc:
            return f"{instance.name}: {exc}"
        finally:
            live.pop(instance.name, None)
        return None

    results = executor.map(remove, instances)
    return [r for r in results if r]
