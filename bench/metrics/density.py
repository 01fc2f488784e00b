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
import itertools
import math
import os
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from bench.backends.base import Backend, Instance
from bench.errors import BenchError
from bench.metrics.base import Metric, RunContext
from bench.metrics.memory import idle_spec
from bench.metrics.procmem import MIB, mem_available_bytes, pss_bytes, rss_bytes_self
from bench.noise import psi_some_total_us
from bench.plan import Step
from bench.samples import Sample
from bench.scenario import DensityOptions, Scenario

STOP_MAX_COUNT = "max_count"
STOP_MEM_FLOOR = "mem_floor"
STOP_HOST_OOM = "host_oom"
STOP_SLO = "slo_p99"
STOP_ERRORS = "error_rate"

# What a failed instance ran into, by the words engines use (first match wins).
ERROR_CLASSES = (
    ("engine_limit:file_descriptors", ("too many open files", "emfile")),
    ("engine_limit:processes", ("resource temporarily unavailable", "eagain", "fork")),
    ("engine_limit:ports", ("address already in use", "port is already allocated")),
    ("memory", ("cannot allocate memory", "enomem", "out of memory", "oom")),
    ("timeout", ("before the timeout", "timed out", "timeout")),
)
KNEE_MIN_GAP = 0.1
VMSTAT_KEYS = ("pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct", "oom_kill")


def classify_error(text: str) -> str:
    """The class of a failed instance's error (engine limit, memory, timeout, other). Pure."""
    lowered = text.lower()
    for name, words in ERROR_CLASSES:
        if any(word in lowered for word in words):
            return name
    return "other"


def read_vmstat(proc: str = "/proc") -> dict[str, int]:
    """Reclaim and OOM counters of /proc/vmstat (the ones a ramp watches)."""
    values: dict[str, int] = {}
    try:
        text = Path(proc, "vmstat").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, number = line.partition(" ")
        if name in VMSTAT_KEYS:
            values[name] = int(number)
    return values


class KernelOomWatch:
    """Counts the host's *global* OOM kills from /dev/kmsg, from now on.

    /proc/vmstat's oom_kill also counts kills inside memory cgroups (a limit check, any
    container over its limit): only the kernel's log tells a global "Out of memory:
    Killed process" from a "Memory cgroup out of memory: ...". Without /dev/kmsg the
    watch counts nothing and says so (``available``).
    """

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self.kills = 0
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self.close()

    @property
    def available(self) -> bool:
        """Whether the kernel's log can be read at all."""
        return self._fd is not None

    def poll(self) -> int:
        """Read the records logged since the last call; return the global OOM kills so far."""
        while self._fd is not None:
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: records were overwritten before we read them
                continue
            if not record:
                break
            self.kills += is_global_oom_record(record)
        return self.kills

    def close(self) -> None:
        """Stop watching."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def is_global_oom_record(record: bytes) -> bool:
    """True for the kernel's record of a global OOM kill (not a memory cgroup's). Pure."""
    text = record.split(b";", 1)[-1]
    return text.startswith(b"Out of memory: Killed process")


def knee_index(values: list[float]) -> int | None:
    """Where a rising curve bends upwards (Kneedle, Satopaa et al., 2011); None if never.

    Kneedle on y against its index: a running median of 5 smooths single outliers, then
    the curve is read as its running maximum (the worst startup seen up to N: a curve
    that only rises, so a quiet last few instances cannot make the end look like a
    bend). Both axes are scaled to [0, 1]; the knee is the point farthest below the
    diagonal from the first point to the last, which both lie on. None under 5 points.
    """
    if len(values) < 5:
        return None
    smooth = [statistics.median(values[max(0, i - 2) : i + 3]) for i in range(len(values))]
    rising = list(itertools.accumulate(smooth, max))
    low, high = rising[0], rising[-1]
    if high == low:
        return None
    last = len(rising) - 1
    gaps = [i / last - (y - low) / (high - low) for i, y in enumerate(rising)]
    best = max(range(len(gaps)), key=lambda i: gaps[i])
    # a bend smaller than a tenth of the range is noise on a straight line, not a knee
    return best if gaps[best] > KNEE_MIN_GAP else None


@dataclass
class RampState:
    """What the ramp knows so far (the input of the stop rules)."""

    started: int = 0
    ready: int = 0
    failed: int = 0
    latencies_s: list[float] = field(default_factory=list)
    mem_available_bytes: int | None = None
    host_oom_kills: int = 0
    mem_available_start_bytes: int | None = None


def projected_mem_available_bytes(state: RampState) -> int | None:
    """MemAvailable once the instances still starting and one more have taken their share.

    Each instance's share is what the ramp has cost so far per READY instance; the
    instances still starting are counted as if they had taken nothing yet (the safe
    side). None until one instance is READY.
    """
    now, start = state.mem_available_bytes, state.mem_available_start_bytes
    if now is None or start is None or state.ready == 0:
        return None
    per_instance = max(0, start - now) / state.ready
    in_flight = max(0, state.started - state.ready - state.failed)
    return int(now - per_instance * (in_flight + 1))


def p99(values: list[float]) -> float:
    """The 99th percentile by the nearest-rank method (no interpolation past the data)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(0.99 * len(ordered)))
    return ordered[rank - 1]


def stop_reason(state: RampState, options: DensityOptions) -> str | None:
    """The first stop rule that fires for ``state``, or None to keep ramping. Pure.

    ``host_oom`` is the host's own OOM killer (global memory exhausted), never a kill
    inside a memory cgroup: those are limits doing their job.
    """
    if state.host_oom_kills > 0:
        return STOP_HOST_OOM
    if state.started >= options.max_count:
        return STOP_MAX_COUNT
    floor = options.mem_floor_mib * MIB
    if state.mem_available_bytes is not None and state.mem_available_bytes < floor:
        return STOP_MEM_FLOOR
    # the floor is never crossed: no instance starts that would take the host under it
    projected = projected_mem_available_bytes(state)
    if projected is not None and projected < floor:
        return STOP_MEM_FLOOR
    done = state.ready + state.failed
    if done >= options.slo_min_instances:
        if state.latencies_s and p99(state.latencies_s) > options.slo_p99_s:
            return STOP_SLO
        if state.failed / done > options.max_error_rate:
            return STOP_ERRORS
    return None


# The ramp's total PSS is read at most this often (it reads every instance's smaps).
PSS_INTERVAL_S = 2.0
# How long teardown waits for an in-flight create/start call before removing anyway.
START_CALL_GRACE_S = 120.0


def _start_and_wait(backend: Backend, instance: Instance, timeout_s: float) -> Instance:
    """Start (create + start: short) then wait for READY (long), marking when start returned.

    Teardown waits for ``start_returned`` before removing, so a create call still in
    flight on a worker thread can never leave behind what it creates after the removal.
    """
    started = instance.extra.setdefault("start_returned", threading.Event())
    try:
        backend.start(instance.spec, instance.name, instance.run_id, instance)
    finally:
        started.set()
    backend.wait_ready(instance, timeout_s)
    return instance


def harness_cpu_s() -> float:
    """CPU seconds the harness process itself has used (user + system, all its threads)."""
    times = os.times()
    return times.user + times.system


class DensityMetric(Metric):
    """One step = one ramp of one backend and case, until a stop rule fires."""

    name = "density"

    def rounds(self, scenario: Scenario) -> tuple[int, int]:
        """One ramp per backend and case in each block."""
        return 0, 1

    def describe(self, step: Step) -> str:
        """What the step ramps."""
        return f"density: ramping {step.backend}, {step.case.name}"

    def measure(self, ctx: RunContext, step: Step) -> Iterator[Sample]:
        """Ramp; yield each step's records as it completes, then the final stop record."""
        yield from run_density(ctx, ctx.backends[step.backend], step)


def run_density(ctx: RunContext, backend: Backend, step: Step) -> Iterator[Sample]:
    """Ramp one backend for one case; yield step samples and a final stop record."""
    options: DensityOptions = ctx.scenario.density
    case = step.case
    spec = idle_spec(ctx.spec_for(case.spec))
    start_available = mem_available_bytes()
    state = RampState(
        mem_available_bytes=start_available, mem_available_start_bytes=start_available
    )
    instances: list[Instance] = []
    pending: dict[Future[Instance], Instance] = {}
    harness_rss_max = 0
    origin = time.monotonic()
    cpu_origin_s = harness_cpu_s()
    vmstat_origin = read_vmstat()
    oom_watch = KernelOomWatch()
    psi_origin = psi_some_total_us("memory")
    error_classes: dict[str, int] = {}
    last_pss_s = 0.0

    def step_record(view: str, value: float | None, unit: str, labels: dict[str, object]) -> Sample:
        return Sample(
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

    def total_pss_bytes() -> int:
        total = 0
        for instance in instances:
            if "ready" not in instance.t_ns:
                continue
            with contextlib.suppress(Exception):
                for pids in backend.host_processes(instance).values():
                    total += sum(pss_bytes(pid) or 0 for pid in pids)
        return total

    def complete(future: Future[Instance]) -> list[Sample]:
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
        vmstat = read_vmstat()
        state.host_oom_kills = oom_watch.poll()
        pressure: dict[str, float] = {
            f"{k}_since_start": v - vmstat_origin.get(k, 0) for k, v in vmstat.items()
        }
        psi = psi_some_total_us("memory")
        if psi is not None and psi_origin is not None:
            pressure["psi_memory_some_s_since_start"] = round((psi - psi_origin) / 1e6, 3)
        labels: dict[str, object] = {
            "instance": instance.name,
            "step": state.ready + state.failed,
            "count_started": state.started,
            "count_ready": state.ready,
            "failures": state.failed,
            "elapsed_s": round(time.monotonic() - origin, 3),
            "harness_cpu_s": round(harness_cpu_s() - cpu_origin_s, 3),
            "accel": instance.labels.get("accel", "n/a"),
            "host_oom_kills": state.host_oom_kills if oom_watch.available else None,
            **pressure,
        }
        if error:
            labels["error"] = error
            error_class = classify_error(error)
            labels["error_class"] = error_class
            error_classes[error_class] = error_classes.get(error_class, 0) + 1
        ctx.progress(
            f"{backend.name} ramp: {state.ready} READY, {state.failed} failed of "
            f"{state.started} started; MemAvailable {state.mem_available_bytes / MIB:.0f} MiB"
        )
        records = [
            step_record("startup_s", latency, "s", labels),
            step_record("mem_available", state.mem_available_bytes / MIB, "MiB", labels),
            step_record("harness_rss", rss / MIB, "MiB", labels),
        ]
        # total PSS reads every instance's smaps_rollup: at most every PSS_INTERVAL_S, so
        # a ramp of hundreds does not spend its CPU on watching itself
        nonlocal last_pss_s
        if time.monotonic() - last_pss_s >= PSS_INTERVAL_S or not pending:
            last_pss_s = time.monotonic()
            records.append(step_record("total_pss", total_pss_bytes() / MIB, "MiB", labels))
        return records

    reason: str | None = None
    executor = ThreadPoolExecutor(max_workers=min(64, options.max_count), thread_name_prefix="ramp")
    ramp_s = 0.0
    ramp_cpu_s = 0.0
    vanished: list[Instance] = []
    try:
        while True:
            for future in [f for f in pending if f.done()]:
                yield from complete(future)
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
            instance = ctx.new_instance(backend, spec)
            instance.extra["start_returned"] = threading.Event()
            instances.append(instance)
            state.started += 1
            pending[
                executor.submit(_start_and_wait, backend, instance, options.ready_timeout_s)
            ] = instance
        # the rule fired: in-flight instances still finish (each under its timeout)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                yield from complete(future)
        ramp_s = time.monotonic() - origin
        ramp_cpu_s = harness_cpu_s() - cpu_origin_s
        # count only what is really there at the stop: an instance removed from outside
        # (a bench clean, an engine restart) is a failure with its cause, not a success
        vanished = [i for i in instances if "ready" in i.t_ns and not backend.is_alive(i)]
        for instance in vanished:
            state.ready -= 1
            state.failed += 1
            yield step_record(
                "vanished",
                None,
                "instances",
                {
                    "instance": instance.name,
                    "error": f"{instance.name} was READY but is gone at the stop: removed "
                    "from outside the run (bench clean --all, an engine restart?)",
                },
            )
    finally:
        for future, instance in list(pending.items()):
            if future.cancel():
                # never started: nothing was created, and teardown need not wait for it
                instance.extra["start_returned"].set()
        teardown_started = time.monotonic()
        teardown_errors = _teardown(ctx, backend, instances)
        oom_watch.close()
        executor.shutdown(wait=True, cancel_futures=True)
        teardown_s = time.monotonic() - teardown_started
    knee = knee_index(state.latencies_s)
    knee_count = knee + 1 if knee is not None else None
    knee_startup_s = state.latencies_s[knee] if knee is not None else None
    yield step_record(
        "count_reached",
        float(state.ready),
        "instances",
        {
            "stop_reason": reason or "interrupted",
            "stop_detail": _stop_detail(reason, state, options, error_classes),
            "error_classes": error_classes,
            "knee_count": knee_count,
            "knee_startup_s": knee_startup_s,
            "host_oom_kills": state.host_oom_kills,
            "count_started": state.started,
            "failures": state.failed,
            "p99_startup_s": p99(state.latencies_s) if state.latencies_s else None,
            "harness_rss_max_mib": harness_rss_max / MIB,
            "harness_cpu_s": round(ramp_cpu_s, 3),
            "ramp_s": round(ramp_s, 3),
            "harness_cpu_fraction": round(ramp_cpu_s / ramp_s, 4) if ramp_s > 0 else None,
            "teardown_s": round(teardown_s, 3),
            "teardown_errors": teardown_errors,
            "vanished": len(vanished),
            "mem_floor_mib": options.mem_floor_mib,
            "slo_p99_s": options.slo_p99_s,
            "interval_s": options.interval_s,
            "accel": next(
                (str(i.labels["accel"]) for i in instances if "accel" in i.labels), "n/a"
            ),
        },
    )


def _stop_detail(
    reason: str | None, state: RampState, options: DensityOptions, errors: dict[str, int]
) -> str:
    """The stop reason in words, with the figures that made the rule fire."""
    if reason == STOP_MEM_FLOOR and state.mem_available_bytes is not None:
        if state.mem_available_bytes < options.mem_floor_mib * MIB:
            return (
                f"MemAvailable {state.mem_available_bytes / MIB:.0f} MiB fell under the "
                f"floor of {options.mem_floor_mib} MiB"
            )
        start = state.mem_available_start_bytes or state.mem_available_bytes
        share = max(0, start - state.mem_available_bytes) / max(1, state.ready)
        return (
            f"MemAvailable {state.mem_available_bytes / MIB:.0f} MiB: one more instance "
            f"(~{share / MIB:.0f} MiB each so far) would take it under the floor of "
            f"{options.mem_floor_mib} MiB"
        )
    if reason == STOP_HOST_OOM:
        return f"the host's OOM killer fired {state.host_oom_kills} time(s) during the ramp"
    if reason == STOP_SLO and state.latencies_s:
        return f"p99 startup {p99(state.latencies_s):.2f} s over the SLO of {options.slo_p99_s} s"
    if reason == STOP_ERRORS:
        worst = max(errors, key=lambda k: errors[k]) if errors else "other"
        return f"{state.failed} failed of {state.ready + state.failed}; mostly {worst}"
    if reason == STOP_MAX_COUNT:
        return f"the safety cap of {options.max_count} instances (the host's limit not reached)"
    return "interrupted before a stop rule fired"


def _teardown(ctx: RunContext, backend: Backend, instances: list[Instance]) -> list[str]:
    """Remove every instance of the ramp in parallel; return what failed.

    Its own pool: the ramp's workers may still be waiting for READY of instances this
    removes (the removal is what ends those waits).
    """

    def remove(instance: Instance) -> str | None:
        started = instance.extra.get("start_returned")
        if started is not None:
            started.wait(START_CALL_GRACE_S)
        try:
            ctx.finish(backend, instance, gone_timeout_s=30)
        except Exception as exc:
            return f"{instance.name}: {exc}"
        return None

    if not instances:
        return []
    with ThreadPoolExecutor(
        max_workers=min(32, len(instances)), thread_name_prefix="teardown"
    ) as pool:
        results = list(pool.map(remove, instances))
    return [r for r in results if r]
