"""The runner: checks and prepares backends, executes the plan in one loop, records samples.

It owns the run context (cleanup registry, sample sink, options), block boundaries (host
noise recorded per block, a pause between blocks), the run's registration as alive on
this host (see ``bench.ownership``), resuming, and signal handling: SIGINT/SIGTERM stop
the plan, remove live instances, and mark the run interrupted; samples already taken
stay on disk. It never prints: progress goes to an ``on_event`` callback the CLI
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
from bench import ownership
from bench.backends import get_backend
from bench.backends.base import Backend
from bench.cgroups.layout import detect as detect_layout
from bench.errors import BenchError, ResultsError, ScenarioError
from bench.metrics import metric_class
from bench.metrics.base import (
    Metric,
    RunContext,
    RunEvent,
    RunOptions,
    closing_samples,
)
from bench.metrics.procmem import MIB, mem_available_bytes
from bench.noise import NoiseSnapshot, block_noise, take_snapshot
from bench.plan import MetricShape, Step, plan_steps
from bench.results import (
    ResultStore,
    new_run_id,
    read_run,
    rewrite_samples,
    utc_now_iso,
)
from bench.samples import Sample
from bench.scenario import Case, Scenario, expand_cases, parse_scenario, scenario_sha256

__all__ = [
    "RunEvent",
    "RunInterrupted",
    "RunOptions",
    "RunOutcome",
    "apply_overrides",
    "resume_run",
    "run_scenario",
    "sweep_all",
]

RESUMABLE = ("interrupted", "failed", "running")


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


def apply_overrides(scenario: Scenario, overrides: dict[str, Any]) -> Scenario:
    """The scenario with command-line overrides applied, validated like the file was."""
    if not overrides:
        return scenario
    data = scenario.model_dump(mode="json")
    data.update(overrides)
    return parse_scenario_data(data, "command-line overrides")


def parse_scenario_data(data: dict[str, Any], source: str) -> Scenario:
    """Validate a scenario dict (the same rules and messages as a file)."""
    import json

    return parse_scenario(json.dumps(data), source)


def build_plan(
    scenario: Scenario, backends: list[str], metrics: dict[str, Metric], seed: int
) -> list[Step]:
    """Every step of the run, in order: blocks x metrics x rounds x (backend, case)."""
    shapes = []
    for name, metric in metrics.items():
        warmups, rounds = metric.rounds(scenario)
        shapes.append(MetricShape(name, warmups, rounds))
    return plan_steps(shapes, backends, expand_cases(scenario), scenario.repeats, seed)


def check_fits(
    scenario: Scenario,
    backends: dict[str, Backend],
    cases: list[Case],
    available_bytes: int | None = None,
) -> None:
    """Refuse, with the arithmetic, a scenario whose instances cannot fit in this host.

    The memory metric holds ``memory.instances`` instances at once; a limit check holds
    one that allocates ``limits.memory_alloc_mib``. The host keeps ``density.mem_floor_mib``
    free (a density ramp stops there by itself, so it is not refused here).
    """
    available = mem_available_bytes() if available_bytes is None else available_bytes
    floor = scenario.density.mem_floor_mib * MIB
    room = available - floor
    needs: list[tuple[float, str]] = []
    for name, backend in backends.items():
        for case in cases:
            if "memory" in scenario.metrics:
                spec = case.spec.model_copy(
                    update={
                        "payload": case.spec.payload.model_copy(
                            update={
                                "mode": "idle"
                                if case.spec.payload.mode == "ready"
                                else case.spec.payload.mode
                            }
                        )
                    }
                )
                each = backend.memory_estimate_mib(spec)
                count = scenario.memory.instances
                needs.append(
                    (count * each * MIB, f"memory: {count} x {each:.0f} MiB ({name}, {case.name})")
                )
            if "limits" in scenario.metrics:
                alloc = scenario.limits.memory_alloc_mib
                spec = case.spec.model_copy(
                    update={
                        "guest_memory_mib": max(case.spec.guest_memory_mib, alloc + 128),
                        "payload": case.spec.payload.model_copy(
                            update={"mode": "alloc", "alloc_mib": alloc}
                        ),
                    }
                )
                each = backend.memory_estimate_mib(spec)
                needs.append((each * MIB, f"limits: one {each:.0f} MiB instance ({name})"))
    for need, what in needs:
        if need > room:
            raise ScenarioError(
                f"scenario {scenario.name!r} cannot fit on this host: {what} = "
                f"{need / MIB:.0f} MiB, but MemAvailable {available / MIB:.0f} MiB - floor "
                f"{floor / MIB:.0f} MiB (density.mem_floor_mib) leaves {room / MIB:.0f} MiB"
            )


@dataclass
class _Prepared:
    """Backends checked and prepared, metrics instantiated: everything before the store."""

    backends: dict[str, Backend]
    unavailable: dict[str, str]
    artefacts: dict[str, dict[str, str]]
    versions: dict[str, dict[str, Any]]
    metrics: dict[str, Metric]


def _prepare(
    scenario: Scenario, options: RunOptions, emit: Callable[[RunEvent], None]
) -> _Prepared:
    cases = expand_cases(scenario)
    backends: dict[str, Backend] = {name: get_backend(name) for name in scenario.backends}
    unavailable: dict[str, str] = {}
    try:
        emit(RunEvent("phase", "checking backends"))
        for name, backend in list(backends.items()):
            try:
                backend.check_available()
            except BenchError as exc:
                if not options.skip_unavailable:
                    raise
                unavailable[name] = str(exc)
                backend.close()
                del backends[name]
                emit(RunEvent("warning", f"skipping {name}: {exc}"))
        if not backends:
            raise BenchError(
                "no backend of the scenario is available: "
                + "; ".join(f"{k}: {v}" for k, v in unavailable.items())
            )
        check_fits(scenario, backends, cases)
        emit(RunEvent("phase", "building artefacts (not timed)"))
        artefacts = {name: b.prepare([c.spec for c in cases]) for name, b in backends.items()}
        versions = {name: b.versions() for name, b in backends.items()}
        metrics: dict[str, Metric] = {name: metric_class(name)() for name in scenario.metrics}
    except BaseException:
        for backend in backends.values():
            backend.close()
        raise
    return _Prepared(backends, unavailable, artefacts, versions, metrics)


def run_scenario(
    scenario: Scenario,
    scenario_text: str,
    source: str,
    results_root: Path,
    on_event: Callable[[RunEvent], None] | None = None,
    options: RunOptions | None = None,
) -> RunOutcome:
    """Run a validated scenario end to end and return where its results are.

    Nothing is started before every backend reported itself available (or, with
    ``skip_unavailable``, was set aside with its reason) and prepared its artefacts, and
    the scenario was found to fit in this host's memory.
    """
    emit = on_event or (lambda event: None)
    options = options or RunOptions()
    prepared = _prepare(scenario, options, emit)
    backends = prepared.backends
    try:
        cases = expand_cases(scenario)
        seed = scenario.seed if scenario.seed is not None else secrets.randbits(32)
        steps = build_plan(scenario, list(backends), prepared.metrics, seed)
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
                "overrides": dict(options.overrides),
                "plan": {
                    "seed": seed,
                    "steps": len(steps),
                    "repeats": scenario.repeats,
                    "backends": list(backends),
                    "cases": [c.name for c in cases],
                    "order": "blocks; in each, per metric: warmups first, then randomized "
                    "ABBA rounds over backend x case",
                },
                "steps_done": 0,
                "injected": {
                    k: v
                    for k, v in asdict(options).items()
                    if k == "inject_spin_ms" and v is not None
                },
                "backends": _backend_records(backends),
                "unavailable": prepared.unavailable,
                "host": facts,
                "load_start": host_facts.load_snapshot(),
                "software": prepared.versions,
                "artefacts": prepared.artefacts,
            },
        )
    except BaseException:
        for backend in backends.values():
            backend.close()
        raise
    ctx = _context(run_id, scenario, backends, store, emit, options)
    for name, reason in prepared.unavailable.items():
        ctx.notes.append(f"{name} not measured: {reason}")
    return _execute(ctx, store, steps, prepared.metrics, start=0)


def _context(
    run_id: str,
    scenario: Scenario,
    backends: dict[str, Backend],
    store: ResultStore,
    emit: Callable[[RunEvent], None],
    options: RunOptions,
) -> RunContext:
    """The run context every metric gets: samples go to the store, events to the CLI."""
    return RunContext(
        run_id=run_id,
        scenario=scenario,
        backends=backends,
        layout=detect_layout(),
        sink=store.append,
        emit=emit,
        options=options,
        drop_page_cache=drop_page_cache,
    )


def _backend_records(backends: dict[str, Backend]) -> dict[str, Any]:
    return {
        name: {
            "description": b.description,
            **b.metadata(),
            "limits": {
                kind: {"when": support.when, "how": support.how}
                for kind, support in b.capabilities.limits.items()
            },
        }
        for name, b in backends.items()
    }


def _execute(
    ctx: RunContext, store: ResultStore, steps: list[Step], metrics: dict[str, Metric], start: int
) -> RunOutcome:
    """Register the run as alive, run the plan from ``start``, finish on every path."""
    identity = ownership.register(ctx.run_id, store.directory)
    store.update(process=asdict(identity))
    _note_concurrent_runs(ctx, store, first=True)
    ctx.emit(RunEvent("planned", f"run {ctx.run_id}", total=len(steps) - start))
    status = "failed"
    try:
        with _sigterm_as_interrupt():
            _run_steps(ctx, store, steps, metrics, start)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise RunInterrupted(
            f"run interrupted; {store.counts['samples']} samples kept in {store.directory} "
            f"(bench run --resume {ctx.run_id} continues it)"
        ) from None
    finally:
        cleanup_errors = ctx.registry.remove_all()
        _note_concurrent_runs(ctx, store)
        store.finish(
            status,
            load_end=host_facts.load_snapshot(),
            notes=ctx.notes + cleanup_errors,
        )
        ownership.unregister(ctx.run_id)
        for backend in ctx.backends.values():
            backend.close()
    return RunOutcome(ctx.run_id, store.directory, status, dict(store.counts))


def _note_concurrent_runs(ctx: RunContext, store: ResultStore, first: bool = False) -> None:
    """Record (and warn about) every other bench run that shared this host with this one.

    Those alive now, and those that announced themselves since (a run that started and
    ended inside this one); on the first call, this run announces itself to the others.
    """
    others = [r for r in ownership.active_runs() if r.get("run_id") != ctx.run_id]
    if first:
        ownership.announce(ctx.run_id, [str(r["run_id"]) for r in others])
    found = {str(r["run_id"]): f"pid {r['pid']}" for r in others}
    for run_id in ownership.seen_by(ctx.run_id):
        found.setdefault(run_id, "started and ended during this run")
    seen = store.run.setdefault("concurrent_runs", [])
    added = False
    for run_id, how in found.items():
        if run_id in seen:
            continue
        seen.append(run_id)
        added = True
        ctx.warn(
            f"another bench run was active on this host ({run_id}, {how}): the two "
            "disturb each other's figures"
        )
    if added:
        store.update(concurrent_runs=seen)


def _run_steps(
    ctx: RunContext,
    store: ResultStore,
    steps: list[Step],
    metrics: dict[str, Metric],
    start: int,
) -> None:
    """The one loop: every step through its metric, block boundaries marked by noise records."""
    block: int | None = None
    noise_start = take_snapshot()
    described = ""
    for step in steps[start:]:
        if step.block != block:
            if block is not None:
                _record_noise(ctx, block, noise_start)
                _note_concurrent_runs(ctx, store)
                if ctx.scenario.repeat_gap_s:
                    ctx.phase(f"block {block + 1} done; pausing {ctx.scenario.repeat_gap_s:g} s")
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
        ctx.step = step.index
        with closing_samples(metric.measure(ctx, step)) as samples:
            for sample in samples:
                ctx.record(sample)
        ctx.previous_backend = step.backend
        store.update(steps_done=step.index + 1)
        ctx.emit(RunEvent("step", step=step, total=len(steps)))
    if block is not None:
        _record_noise(ctx, block, noise_start)
    ctx.step = -1
    for metric in metrics.values():
        with closing_samples(metric.finish(ctx)) as derived:
            for sample in derived:
                ctx.record(sample)


def _record_noise(ctx: RunContext, block: int, start: NoiseSnapshot) -> None:
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


def resume_run(
    directory: Path,
    on_event: Callable[[RunEvent], None] | None = None,
) -> RunOutcome:
    """Continue an interrupted, failed or abandoned run where it stopped.

    The plan is rebuilt from the run's own scenario text, overrides and seed, so the order
    is the one the run started with; steps already done are not repeated. Samples of the
    step that was cut short are dropped from the journal (it is measured again), the
    run's leftover instances are removed first, and the gap is recorded in run.json
    (``resumes``).
    """
    emit = on_event or (lambda event: None)
    run = read_run(directory)
    run_id = str(run.get("run_id"))
    status = str(run.get("status"))
    identity = ownership.identity_from(run.get("process"))
    if status == "running" and identity is not None and identity.alive():
        raise BenchError(f"run {run_id} is still running (pid {identity.pid}): not resumed")
    if status not in RESUMABLE:
        raise BenchError(f"run {run_id} is {status}: only an unfinished run can be resumed")
    scenario_record = run.get("scenario") or {}
    scenario = parse_scenario(str(scenario_record.get("text", "")), f"{directory}/run.json")
    scenario = apply_overrides(scenario, dict(run.get("overrides") or {}))
    plan = run.get("plan") or {}
    backend_names = list(plan.get("backends") or (run.get("backends") or {}))
    scenario = scenario.model_copy(update={"backends": backend_names})
    injected = run.get("injected") or {}
    options = RunOptions(
        inject_spin_ms=injected.get("inject_spin_ms"),
        overrides=tuple(sorted((run.get("overrides") or {}).items())),
    )
    prepared = _prepare(scenario, options, emit)
    backends = prepared.backends
    try:
        steps = build_plan(scenario, list(backends), prepared.metrics, int(plan["seed"]))
        if len(steps) != plan.get("steps"):
            raise ResultsError(
                f"{directory}: the rebuilt plan has {len(steps)} steps, the run had "
                f"{plan.get('steps')}: it cannot be resumed with this bench"
            )
        done = int(run.get("steps_done") or 0)
        suffix = ownership.run_suffix(run_id)
        removed = {
            name: [n for n in backend.leftovers() if ownership.instance_run_suffix(n) == suffix]
            for name, backend in backends.items()
        }
        for name, names in removed.items():
            if names:
                backends[name].remove_leftovers(names)
        kept, dropped = rewrite_samples(directory, keep=lambda r: r.get("step", -1) < done)
        store = ResultStore.reopen(directory)
    except BaseException:
        for backend in backends.values():
            backend.close()
        raise
    previous = [Sample.from_dict(record) for record in kept]
    ctx = _context(run_id, scenario, backends, store, emit, options)
    ctx.skip_numbering(
        seq=max((s.seq for s in previous), default=-1) + 1,
        name=_next_instance_number(previous, kept_names=removed),
    )
    for metric in prepared.metrics.values():
        metric.restore(previous)
    resumes = list(run.get("resumes") or [])
    resumes.append(
        {
            "resumed_at_utc": utc_now_iso(),
            "previous_status": status,
            "from_step": done,
            "samples_dropped": dropped,
            "leftovers_removed": {k: v for k, v in removed.items() if v},
        }
    )
    store.update(status="running", resumes=resumes)
    emit(RunEvent("phase", f"resuming {run_id} at step {done + 1} of {len(steps)}"))
    return _execute(ctx, store, steps, prepared.metrics, start=done)


def _next_instance_number(previous: list[Sample], kept_names: dict[str, list[str]]) -> int:
    """An instance counter past every name the run used before (no name is reused)."""
    numbers = [-1]
    names = [s.instance for s in previous] + [n for names in kept_names.values() for n in names]
    for name in names:
        tail = name.rsplit("-", 1)[-1].split(".", 1)[0]
        if tail.isdigit():
            numbers.append(int(tail))
    return max(numbers) + 1


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
