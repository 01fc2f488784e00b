"""The runner: checks and prepares backends, executes the plan in one loop, records samples.

It owns the run context (cleanup registry, sample sink, options), block boundaries (host
noise recorded per block, a pause between blocks), and signal handling: SIGINT/SIGTERM
stop the plan, remove live instances, and mark the run interrupted; samples already
taken stay on disk. It never prints: progress goes to an ``on_event`` callback the CLI
renders. It imports no analysis code (no pandas, no scipy): the measuring process stays
small.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import host as host_facts
from bench.backends import get_backend
from bench.backends.base import Backend
from bench.cgroups.layout import detect as detect_layout
from bench.errors import BenchError
from bench.metrics import metric_class
from bench.metrics.base import (
    Metric,
    RunContext,
    RunEvent,
    RunOptions,
    closing_samples,
)
from bench.noise import block_noise, take_snapshot
from bench.plan import MetricShape, Step, plan_steps
from bench.results import ResultStore, new_run_id, utc_now_iso
from bench.samples import Sample
from bench.scenario import Scenario, expand_cases, scenario_sha256

__all__ = ["RunEvent", "RunInterrupted", "RunOptions", "RunOutcome", "run_scenario", "sweep_all"]


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


def build_plan(
    scenario: Scenario, backends: list[str], metrics: dict[str, Metric], seed: int
) -> list[Step]:
    """Every step of the run, in order: blocks x metrics x rounds x (backend, case)."""
    shapes = []
    for name, metric in metrics.items():
        warmups, rounds = metric.rounds(scenario)
        shapes.append(MetricShape(name, warmups, rounds))
    return plan_steps(shapes, backends, expand_cases(scenario), scenario.repeats, seed)


def run_scenario(
    scenario: Scenario,
    scenario_text: str,
    source: str,
    results_root: Path,
    on_event: Callable[[RunEvent], None] | None = None,
    options: RunOptions | None = None,
) -> RunOutcome:
    """Run a validated scenario end to end and return where its results are.

    Nothing is started before every backend reported itself available and prepared its
    artefacts: a missing engine fails the run before any instance exists.
    """
    emit = on_event or (lambda event: None)
    options = options or RunOptions()
    cases = expand_cases(scenario)
    backends: dict[str, Backend] = {name: get_backend(name) for name in scenario.backends}
    try:
        emit(RunEvent("phase", "checking backends"))
        for backend in backends.values():
            backend.check_available()
        emit(RunEvent("phase", "building artefacts (not timed)"))
        artefacts = {name: b.prepare([c.spec for c in cases]) for name, b in backends.items()}
        versions = {name: b.versions() for name, b in backends.items()}
        metrics: dict[str, Metric] = {name: metric_class(name)() for name in scenario.metrics}
        seed = scenario.seed if scenario.seed is not None else secrets.randbits(32)
        steps = build_plan(scenario, list(backends), metrics, seed)
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
                    "repeats": scenario.repeats,
                    "cases": [c.name for c in cases],
                    "order": "blocks; in each, per metric: warmups first, then randomized "
                    "ABBA rounds over backend x case",
                },
                "injected": {k: v for k, v in asdict(options).items() if v is not None},
                "backends": {
                    name: {
                        "description": b.description,
                        **b.metadata(),
                        "limits": {
                            kind: {"when": support.when, "how": support.how}
                            for kind, support in b.capabilities.limits.items()
                        },
                    }
                    for name, b in backends.items()
                },
                "host": facts,
                "load_start": host_facts.load_snapshot(),
                "software": versions,
                "artefacts": artefacts,
            },
        )
    except BaseException:
        for backend in backends.values():
            backend.close()
        raise
    ctx = RunContext(
        run_id=run_id,
        scenario=scenario,
        backends=backends,
        layout=detect_layout(),
        sink=store.append,
        emit=emit,
        options=options,
        drop_page_cache=drop_page_cache,
    )
    emit(RunEvent("planned", f"run {run_id}", total=len(steps)))
    status = "failed"
    try:
        with _sigterm_as_interrupt():
            _run_steps(ctx, steps, metrics)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise RunInterrupted(
            f"run interrupted; {store.counts['samples']} samples kept in {store.directory}"
        ) from None
    finally:
        cleanup_errors = ctx.registry.remove_all()
        store.finish(
            status,
            load_end=host_facts.load_snapshot(),
            notes=ctx.notes + cleanup_errors,
        )
        for backend in backends.values():
            backend.close()
    return RunOutcome(run_id, store.directory, status, dict(store.counts))


def _run_steps(ctx: RunContext, steps: list[Step], metrics: dict[str, Metric]) -> None:
    """The one loop: every step through its metric, block boundaries marked by noise records."""
    block: int | None = None
    noise_start = take_snapshot()
    described = ""
    for step in steps:
        if step.block != block:
            if block is not None:
                _record_noise(ctx, block, noise_start)
                if ctx.scenario.repeat_gap_s:
                    ctx.phase(f"block {block} done; pausing {ctx.scenario.repeat_gap_s:g} s")
                    time.sleep(ctx.scenario.repeat_gap_s)
            block = step.block
            ctx.block = block
            if ctx.scenario.repeats > 1:
                ctx.phase(f"block {block + 1} of {ctx.scenario.repeats}")
            noise_start = take_snapshot()
        metric = metrics[step.metric]
        description = metric.describe(step)
        if description and description != described:
            ctx.phase(description)
        described = description
        with closing_samples(metric.measure(ctx, step)) as samples:
            for sample in samples:
                ctx.record(sample)
        ctx.emit(RunEvent("step", step=step, total=len(steps)))
    if block is not None:
        _record_noise(ctx, block, noise_start)
    for metric in metrics.values():
        with closing_samples(metric.finish(ctx)) as derived:
            for sample in derived:
                ctx.record(sample)


def _record_noise(ctx: RunContext, block: int, start: Any) -> None:
    """One ``noise`` record per figure of the block just finished."""
    end = take_snapshot()
    window_s = round(end.monotonic_s - start.monotonic_s, 3)
    for view, (value, unit) in block_noise(start, end).items():
        ctx.record(
            Sample(
                metric="noise",
                backend="host",
                case="*",
                value=round(value, 6),
                unit=unit,
                block=block,
                instance="*",
                labels={"view": view, "window_s": window_s},
            )
        )


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
