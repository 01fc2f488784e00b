"""Resuming a run that stopped (interrupted, failed, or abandoned by a killed process).

The plan is rebuilt from the run's own scenario text, overrides and seed; finished steps
are not repeated, the step that was cut short is measured again, and the gap is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench import ownership
from bench.errors import BenchError, ResultsError
from bench.metrics.base import RunEvent, RunOptions
from bench.results import ResultStore, read_run, rewrite_samples, utc_now_iso
from bench.runner import RunOutcome, _context, _execute, _prepare, apply_overrides, build_plan
from bench.samples import Sample
from bench.scenario import parse_scenario

RESUMABLE = ("interrupted", "failed", "running")


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
    # the blocks as planned (a --target-mde run planned its block cap, not the file's)
    repeats = int(plan.get("repeats") or scenario.repeats)
    scenario = scenario.model_copy(update={"backends": backend_names, "repeats": repeats})
    injected = run.get("injected") or {}
    options = RunOptions(
        inject_spin_ms=injected.get("inject_spin_ms"),
        overrides=tuple(sorted((run.get("overrides") or {}).items())),
        tune=bool((run.get("tuning") or {}).get("tune")),  # resumed as it was run
        **{k: v for k, v in (run.get("target") or {}).items() if v is not None},
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
    if ctx.precision is not None:  # the blocks measured before count towards the target
        for sample in previous:
            ctx.precision.add(sample)
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
