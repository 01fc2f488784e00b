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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import host as host_facts
from bench import interrupts, ownership
from bench.backends import get_backend
from bench.backends.base import Backend
from bench.capacity import check_fits
from bench.cgroups.layout import detect as detect_layout
from bench.errors import BenchError, ResultsStorageError
from bench.host_settings import cgroup_fast_moves, low_latency
from bench.metrics import metric_class
from bench.metrics.base import (
    Metric,
    RunContext,
    RunEvent,
    RunOptions,
    closing_samples,
)
from bench.noise import NoiseSnapshot, block_noise, take_snapshot
from bench.plan import MetricShape, Step, plan_steps
from bench.precision import PrecisionTracker
from bench.results import (
    ResultStore,
    new_run_id,
    utc_now_iso,
)
from bench.samples import Sample
from bench.scenario import Scenario, expand_cases, parse_scenario, scenario_sha256

__all__ = [
    "RunEvent",
    "RunInterrupted",
    "RunOptions",
    "RunOutcome",
    "apply_overrides",
    "run_scenario",
    "sweep_all",
]


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
    if options.target_mde is not None:
        # the blocks the precision target may take; the scenario's own repeats are the least
        options = replace(options, min_blocks=max(2, scenario.repeats))
        scenario = scenario.model_copy(
            update={"repeats": max(options.max_blocks, options.min_blocks)}
        )
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
                # --target-mde: the blocks run until the figures are precise enough
                "target": {
                    k: getattr(options, k)
                    for k in ("target_mde", "min_blocks", "max_blocks", "max_wall_s")
                }
                if options.target_mde is not None
                else None,
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
        precision=(
            PrecisionTracker(options.target_mde) if options.target_mde is not None else None
        ),
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
    status = "failed"
    failure: dict[str, str] = {}
    with interrupts.handling():
        try:
            store.update(process=asdict(identity))
            _note_concurrent_runs(ctx, store, first=True)
            ctx.emit(RunEvent("planned", f"run {ctx.run_id}", total=len(steps) - start))
            with (
                low_latency(ctx.options.tune) as tuning,
                cgroup_fast_moves(ctx.options.tune) as moves,
            ):
                store.update(tuning={**tuning, **moves})
                for applied in (tuning, moves):
                    if ctx.options.tune and "reason" in applied:
                        ctx.warn(f"--tune not fully applied: {applied['reason']}")
                _run_steps(ctx, store, steps, metrics, start)
            status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
            raise RunInterrupted(
                f"run interrupted; {store.counts['samples']} samples kept in "
                f"{store.directory} (bench run --resume {ctx.run_id} continues it)"
            ) from None
        except BaseException as exc:
            # the run stops here (a full disk, an error bench did not expect): run.json
            # says why, beside status failed
            failure["error"] = str(exc) if isinstance(exc, BenchError) else repr(exc)
            raise
        finally:
            interrupts.stopping()  # a second Ctrl-C must not cut the cleanup short
            try:
                cleanup_errors = ctx.registry.remove_all()
                cleanup_errors += _reap_by_name(ctx)
                # kept in memory if the disk is full: the last record below carries it
                with contextlib.suppress(ResultsStorageError):
                    _note_concurrent_runs(ctx, store)
                store.finish(
                    status,
                    load_end=host_facts.load_snapshot(),
                    notes=ctx.notes + cleanup_errors,
                    **failure,
                )
            finally:
                ownership.unregister(ctx.run_id)
                for backend in ctx.backends.values():
                    backend.close()
    return RunOutcome(ctx.run_id, store.directory, status, dict(store.counts))


def _reap_by_name(ctx: RunContext) -> list[str]:
    """Remove any instance of this run the registry missed, found by its name; say which.

    The registry removes what the run knew of; this asks each backend what exists with
    the run's suffix in its name, so nothing survives the run whatever path created it.
    A finding is a bug in bench, reported among the run's notes.
    """
    suffix = ownership.run_suffix(ctx.run_id)
    notes = []
    for name, backend in ctx.backends.items():
        try:
            found = [n for n in backend.leftovers() if ownership.instance_run_suffix(n) == suffix]
            if not found:
                continue
            removed = backend.remove_leftovers(found)
        except Exception as exc:  # cleanup must try every backend
            notes.append(f"{name}: could not list or remove this run's leftovers: {exc}")
            continue
        still = sorted(set(found) - set(removed))
        notes.append(
            f"{name}: {len(found)} instance(s) outside the cleanup registry at the end, "
            f"removed by name: {', '.join(removed) or 'none'}"
            + (f"; still present: {', '.join(still)}" if still else "")
        )
    return notes


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
    began = time.monotonic()  # a resumed run's time budget counts from the resume
    stopped = "the block cap"
    blocks_seen: set[int] = {s.block for s in steps[:start]}
    for step in steps[start:]:
        if step.block != block:
            if block is not None:
                _record_noise(ctx, block, noise_start)
                _note_concurrent_runs(ctx, store)
                reason = _precision_reached(ctx, block + 1, time.monotonic() - began)
                if reason is not None:
                    stopped = reason
                    block = None  # its noise is recorded: the loop ends on a boundary
                    break
                if ctx.scenario.repeat_gap_s:
                    ctx.phase(f"block {block + 1} done; pausing {ctx.scenario.repeat_gap_s:g} s")
                    time.sleep(ctx.scenario.repeat_gap_s)
            block = step.block
            blocks_seen.add(block)
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
    if ctx.precision is not None:
        if not ctx.precision.values:
            ctx.warn("--target-mde: this scenario measures no replicated quantity (startup)")
        elif not ctx.precision.short():
            stopped = "every quantity at or under the target"
        summary = ctx.precision.summary(len(blocks_seen), stopped)
        store.update(precision=summary)
        if summary["short"]:
            ctx.warn(
                f"--target-mde {ctx.precision.target_mde:.0%} not reached ({stopped}) for: "
                + ", ".join(map(str, summary["short"]))  # type: ignore[call-overload]
            )
    ctx.step = -1
    for metric in metrics.values():
        with closing_samples(metric.finish(ctx)) as derived:
            for sample in derived:
                ctx.record(sample)


def _precision_reached(ctx: RunContext, blocks_done: int, elapsed_s: float) -> str | None:
    """Why the run stops after this block (``--target-mde``), or None to go on.

    Precision only, never significance: every quantity's MDE at or under the target
    (after two blocks at least, and the scenario's own repeats), or the time budget spent.
    """
    tracker, options = ctx.precision, ctx.options
    if tracker is None:
        return None
    if blocks_done >= max(2, options.min_blocks):
        if not tracker.values:
            return "no replicated quantity to judge"
        if not tracker.short():
            return "every quantity at or under the target"
    if options.max_wall_s is not None and elapsed_s >= options.max_wall_s:
        return f"the time budget of {options.max_wall_s:g} s"
    return None


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
