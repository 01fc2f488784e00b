"""The runner: checks and prepares backends, executes the plan, records every sample.

It owns the cleanup registry (every instance that may exist is in it until removed),
timeouts, and signal handling: SIGINT/SIGTERM stop the plan, remove live instances, and
mark the run interrupted; samples already taken stay on disk. It never prints: progress
goes to an ``on_event`` callback the CLI renders.
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import host as host_facts
from bench.backends import get_backend
from bench.backends.base import NAME_PREFIX, Backend, Instance
from bench.errors import BenchError
from bench.metrics.density import run_density
from bench.metrics.limits import measure_limits
from bench.metrics.memory import measure_memory, overhead_samples
from bench.metrics.startup import measure_startup
from bench.plan import Step, plan_steps
from bench.results import ResultStore, new_run_id, utc_now_iso
from bench.samples import Sample
from bench.scenario import Scenario, expand_cases, scenario_sha256


@dataclass
class RunEvent:
    """Something the CLI may show: phase changes, a finished sample, a warning."""

    kind: str  # "phase" | "planned" | "sample" | "warning"
    message: str = ""
    total: int = 0
    sample: Sample | None = None


@dataclass
class RunOutcome:
    """What a finished (or interrupted) run left on disk."""

    run_id: str
    directory: Path
    status: str
    counts: dict[str, int] = field(default_factory=dict)


class RunInterrupted(BenchError):
    """The run was stopped by SIGINT/SIGTERM; live instances were removed."""

    exit_code = 130


def drop_page_cache() -> str | None:
    """Drop the host page cache (cold starts); return why not, or None when done."""
    try:
        import os

        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3")
    except OSError as exc:
        return f"cannot drop page cache: {exc.strerror}"
    return None


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _instance_name(run_id: str, step: Step) -> str:
    """Instance names carry bench's prefix and the run's random suffix: bench-a1b2c3-17."""
    return f"{NAME_PREFIX}{run_id[-6:]}-{step.seq}"


def run_scenario(
    scenario: Scenario,
    scenario_text: str,
    source: str,
    results_root: Path,
    on_event: Callable[[RunEvent], None] | None = None,
) -> RunOutcome:
    """Run a validated scenario end to end and return where its results are.

    Nothing is started before every backend reported itself available and prepared its
    artefacts: a missing engine fails the run before any instance exists.
    """
    emit = on_event or (lambda event: None)
    cases = expand_cases(scenario)
    backends: dict[str, Backend] = {name: get_backend(name) for name in scenario.backends}
    emit(RunEvent("phase", "checking backends"))
    for backend in backends.values():
        backend.check_available()
    emit(RunEvent("phase", "building artefacts (not timed)"))
    artefacts = {name: b.prepare([c.spec for c in cases]) for name, b in backends.items()}
    versions = {name: b.versions() for name, b in backends.items()}
    seed = scenario.seed if scenario.seed is not None else secrets.randbits(32)
    steps = (
        plan_steps(list(backends), cases, scenario.samples, scenario.warmups, seed)
        if "startup" in scenario.metrics
        else []
    )
    memory_groups = (
        plan_steps(list(backends), cases, scenario.memory.rounds, 0, seed + 1)
        if "memory" in scenario.metrics
        else []
    )
    limit_groups = (
        plan_steps(list(backends), cases, 1, 0, seed + 3) if "limits" in scenario.metrics else []
    )
    density_ramps = (
        plan_steps(list(backends), cases, 1, 0, seed + 2) if "density" in scenario.metrics else []
    )
    facts = host_facts.collect_host_facts()
    run_id = new_run_id(scenario.name)
    store = ResultStore.create(
        results_root,
        str(facts.get("hostname") or platform.node()),
        run_id,
        {
            "status": "running",
            "started_at_utc": utc_now_iso(),
            "scenario": {
                "name": scenario.name,
                "source": source,
                "text": scenario_text,
                "parsed": scenario.model_dump(mode="json"),
            },
            "scenario_sha256": scenario_sha256(scenario),
            "plan": {
                "seed": seed,
                "steps": len(steps),
                "cases": [c.name for c in cases],
                "order": "warmups first, then randomized ABBA blocks over backend x case",
            },
            "host": facts,
            "load_start": host_facts.load_snapshot(),
            "software": versions,
            "artefacts": artefacts,
        },
    )
    emit(RunEvent("planned", f"run {run_id}", total=len(steps)))
    live: dict[str, tuple[Backend, Instance]] = {}
    status = "failed"
    notes: list[str] = []
    try:
        with _sigterm_as_interrupt():
            counter = itertools.count(len(steps))

            def next_seq() -> int:
                return next(counter)

            def next_name() -> str:
                return f"{NAME_PREFIX}{run_id[-6:]}-{next_seq()}"

            for step in steps:
                if scenario.start == "cold":
                    why_not = drop_page_cache()
                    if why_not and why_not not in notes:
                        notes.append(why_not)
                        emit(RunEvent("warning", why_not))
                sample = measure_startup(
                    backends[step.backend],
                    step,
                    run_id,
                    _instance_name(run_id, step),
                    scenario.timeout_s,
                    live,
                )
                if scenario.start == "cold":
                    sample.labels["cold"] = not notes
                store.append(sample)
                emit(RunEvent("sample", sample=sample))
                if scenario.settle_s:
                    time.sleep(scenario.settle_s)

            def record(sample: Sample) -> None:
                store.append(sample)
                emit(RunEvent("sample", sample=sample))

            memory_samples: list[Sample] = []
            for group in memory_groups:
                emit(
                    RunEvent(
                        "phase",
                        f"memory: {scenario.memory.instances} idle "
                        f"{group.backend} instances, {group.case.name}",
                    )
                )
                taken = measure_memory(
                    backends[group.backend],
                    group.case,
                    scenario.memory,
                    run_id,
                    next_name,
                    live,
                    next_seq,
                    group.round,
                    scenario.timeout_s,
                    drop_page_cache,
                )
                for sample in taken:
                    store.append(sample)
                    emit(RunEvent("sample", sample=sample))
                memory_samples.extend(taken)
            if memory_groups:
                overheads = overhead_samples(memory_samples, run_id, next_seq)
                if not overheads and "process" not in backends:
                    notes.append("memory overhead not computed: no process baseline in the run")
                for sample in overheads:
                    store.append(sample)

            for group in limit_groups:
                emit(RunEvent("phase", f"limits: {group.backend}, {group.case.name}"))
                for sample in measure_limits(
                    backends[group.backend],
                    group.case,
                    scenario.limits,
                    run_id,
                    next_name,
                    live,
                    next_seq,
                    scenario.timeout_s,
                ):
                    record(sample)

            for ramp in density_ramps:
                emit(RunEvent("phase", f"density: ramping {ramp.backend}, {ramp.case.name}"))
                run_density(
                    backends[ramp.backend],
                    ramp.case,
                    scenario.density,
                    run_id,
                    next_name,
                    live,
                    next_seq,
                    on_sample=record,
                )
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise RunInterrupted(
            f"run interrupted; {store.counts['samples']} samples kept in {store.directory}"
        ) from None
    finally:
        cleanup_errors = _remove_live(live)
        store.finish(
            status,
            load_end=host_facts.load_snapshot(),
            notes=notes + cleanup_errors,
        )
        for backend in backends.values():
            backend.close()
    return RunOutcome(run_id, store.directory, status, dict(store.counts))


def _remove_live(live: dict[str, tuple[Backend, Instance]]) -> list[str]:
    errors = []
    for name, (backend, instance) in list(live.items()):
        try:
            backend.stop(instance)
        except Exception as exc:  # cleanup must try every instance
            errors.append(f"cleanup of {name} failed: {exc}")
        live.pop(name, None)
    return errors


def sweep_all(names: list[str] | None = None) -> dict[str, Any]:
    """Remove every instance bench left on this host, per backend; unavailable ones say why."""
    from bench.backends import backend_names

    report: dict[str, Any] = {}
    for name in names or backend_names():
        try:
            backend = get_backend(name)
            backend.check_available()
            report[name] = {"removed": backend.sweep()}
            backend.close()
        except BenchError as exc:
            report[name] = {"error": str(exc)}
    return report
