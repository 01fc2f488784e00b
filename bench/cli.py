"""The command line: thin typer commands that call library code and own the console (rich).

Exit codes: 0 success, 1 a run had failed samples or a check failed, 2 bad input
(scenario or results files), 3 a backend or artefact is unavailable, 130 interrupted.

Text bench did not write (engine errors, qemu logs, paths, scenario names) is never
rendered as rich markup. Tables honour ``COLUMNS``; piped output gets plain ASCII tables
and no progress bar. ``--json`` gives machine-readable output where a person would
otherwise read a table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from bench import __version__
from bench.errors import BenchError, ScenarioError


def _console(stderr: bool = False) -> Console:
    """A console that honours COLUMNS, and stays plain (no colour codes) when piped."""
    stream = sys.stderr if stderr else sys.stdout
    columns = os.environ.get("COLUMNS")
    width = int(columns) if columns and columns.isdigit() else None
    tty = stream.isatty()
    return Console(
        stderr=stderr,
        width=width if width else (None if tty else 120),
        no_color=not tty or None,
        highlight=False,
    )


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bench {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="bench",
    help="Measure VMs against containers and a native baseline on this host.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = _console()
err_console = _console(stderr=True)


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Measure VMs against containers and a native baseline on this host."""


DEFAULT_RESULTS = Path("results")
ResultsOption = Annotated[Path, typer.Option("--results", help="Results root directory.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _table(title: str | None = None) -> Table:
    """A table: box-drawn on a terminal, plain ASCII when piped."""
    return Table(
        title=Text(title) if title else None,
        box=box.HEAVY_HEAD if console.is_terminal else box.ASCII,
    )


def _fail(exc: BenchError) -> typer.Exit:
    err_console.print(
        Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True
    )
    return typer.Exit(exc.exit_code)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def run(
    scenario_file: Annotated[
        Path | None, typer.Argument(help="Scenario YAML file (not with --resume).")
    ] = None,
    results: ResultsOption = DEFAULT_RESULTS,
    reports: Annotated[
        Path, typer.Option("--reports", help="Where the run's HTML report goes.")
    ] = Path("reports"),
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Do not write reports/<run_id>.html.")
    ] = False,
    samples: Annotated[
        int | None, typer.Option("--samples", min=1, help="Override the scenario's samples.")
    ] = None,
    warmups: Annotated[
        int | None, typer.Option("--warmups", min=0, help="Override the scenario's warmups.")
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", help="Only these backends (repeatable; override)."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the plan's seed.")] = None,
    repeat: Annotated[
        int | None,
        typer.Option(
            "--repeat",
            min=1,
            help="Blocks: run the whole plan this many times (overrides the scenario's "
            "repeats; not part of the scenario hash).",
        ),
    ] = None,
    inject_spin_ms: Annotated[
        float | None,
        typer.Option(
            "--inject-spin-ms",
            min=0.001,
            help="Make the probe busy-spin this long before READY in every backend: a known "
            "slowdown, to check that comparisons detect it. Recorded in run.json; the "
            "scenario (and its hash) is unchanged.",
        ),
    ] = None,
    target_mde: Annotated[
        str | None,
        typer.Option(
            "--target-mde",
            help="Run blocks until every startup quantity's minimum detectable effect "
            "(between blocks) is at or under this (10% or 0.1), after the scenario's own "
            "repeats and 2 at least; at most --max-blocks, within --max-wall-s. Stops on "
            "precision only, never on what the figures show.",
        ),
    ] = None,
    max_blocks: Annotated[
        int, typer.Option("--max-blocks", min=2, help="With --target-mde: the block cap.")
    ] = 20,
    max_wall_s: Annotated[
        float | None,
        typer.Option("--max-wall-s", min=1, help="With --target-mde: the time budget (s)."),
    ] = None,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Hold the CPUs out of deep idle states (/dev/cpu_dma_latency 0, as "
            "pyperf's system tune) and keep moves into cgroups as cheap after a pause as "
            "back to back (a favordynmods cgroup hierarchy), for the run; recorded in "
            "run.json as tuning.",
        ),
    ] = False,
    skip_unavailable: Annotated[
        bool,
        typer.Option(
            "--skip-unavailable",
            help="Measure the backends that are available; record why the others are not.",
        ),
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Continue an interrupted or abandoned run (its id or directory)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a scenario and record every sample under results/<host>/<run_id>/."""
    from bench.resume import resume_run
    from bench.runner import RunOptions, apply_overrides, run_scenario
    from bench.scenario import load_scenario

    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("samples", samples),
            ("warmups", warmups),
            ("backends", backend),
            ("seed", seed),
            ("repeats", repeat),
        )
        if value is not None
    }
    scenario = None
    text = ""
    try:
        if resume is not None:
            if scenario_file is not None or overrides or inject_spin_ms is not None:
                raise ScenarioError(
                    "--resume continues a run as it was planned: give no scenario file "
                    "and no overrides"
                )
            run_dir = _find_run(resume, results)
        else:
            if scenario_file is None:
                raise ScenarioError("give a scenario file (or --resume RUN_ID)")
            scenario, text = load_scenario(scenario_file)
            scenario = apply_overrides(scenario, overrides)
    except BenchError as exc:
        raise _fail(exc) from None
    progress, on_event = _progress(as_json)
    try:
        with progress:
            if resume is not None:
                outcome = resume_run(run_dir, on_event)
            else:
                assert scenario is not None
                options = RunOptions(
                    inject_spin_ms=inject_spin_ms,
                    skip_unavailable=skip_unavailable,
                    tune=tune,
                    target_mde=_fraction(target_mde, "--target-mde"),
                    max_blocks=max_blocks,
                    max_wall_s=max_wall_s,
                    overrides=tuple(sorted(overrides.items())),
                )
                outcome = run_scenario(
                    scenario, text, str(scenario_file), results, on_event, options
                )
    except BenchError as exc:
        raise _fail(exc) from None
    failed = outcome.counts.get("failed", 0)
    if as_json:
        _echo_json(
            {
                "run_id": outcome.run_id,
                "directory": str(outcome.directory),
                "status": outcome.status,
                "counts": outcome.counts,
            }
        )
    else:
        console.print(
            f"results: {outcome.directory}  (status {outcome.status}, "
            f"{outcome.counts.get('samples', 0)} samples, {failed} failed)",
            markup=False,
        )
        # The tables and the report need the analysis stack (pandas, plotly): a child
        # process builds them, so the measuring process never loads it.
        command = [sys.executable, "-m", "bench", "show", str(outcome.directory)]
        if not no_report:
            command += ["--report-dir", str(reports)]
        sys.stdout.flush()
        shown = subprocess.run(command, check=False)
        if shown.returncode != 0:
            err_console.print(
                "warning: the run's summary or report could not be produced", markup=False
            )
    if failed:
        raise typer.Exit(1)


def _fraction(text: str | None, option: str) -> float | None:
    """``10%`` or ``0.1`` as 0.1; a value that is neither is a usage error (exit 2)."""
    if text is None:
        return None
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ScenarioError(f"{option}: {text!r} is not a fraction (10% or 0.1)") from None
    if not 0 < value < 1:
        raise ScenarioError(f"{option}: {text!r} must lie between 0 and 100%")
    return value


def _find_run(run: str, results: Path) -> Path:
    """A run directory from its id (under ``results``) or its path."""
    from bench.errors import ResultsError

    path = Path(run)
    if (path / "run.json").is_file():
        return path
    found = sorted(results.glob(f"*/{run}/run.json")) if results.is_dir() else []
    if not found:
        raise ResultsError(f"no run {run!r} under {results}")
    return found[0].parent


def _progress(quiet: bool) -> tuple[Progress, Any]:
    """The progress display of ``bench run`` and its event handler.

    On a terminal: a bar over the plan's steps with an ETA, and the current median of
    each backend's startup (like hyperfine's current estimate). Piped: one plain line per
    phase and per sample. ``quiet`` (JSON output): nothing but failures, on stderr.
    """
    from bench.runner import RunEvent

    interactive = console.is_terminal and not quiet
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not interactive,
    )
    state: dict[str, Any] = {"task": None, "startup": {}}

    def estimate() -> str:
        medians = []
        for name, values in state["startup"].items():
            ordered = sorted(values)
            medians.append(f"{name} {_format_value(ordered[len(ordered) // 2], 's')}")
        return ("  now: " + ", ".join(medians)) if medians else ""

    def on_event(event: RunEvent) -> None:
        if event.kind in ("phase", "warning"):
            if quiet and event.kind == "phase":
                return
            target = err_console if quiet else console
            style = "yellow" if event.kind == "warning" else "dim"
            target.print(Text(event.message, style=style))
        elif event.kind == "planned":
            if not quiet:
                console.print(f"{event.message}: {event.total} steps", markup=False)
            state["task"] = progress.add_task("measuring", total=event.total)
        elif event.kind == "step":
            if state["task"] is not None:
                progress.update(state["task"], advance=1, description="measuring" + estimate())
        elif event.kind == "progress":
            # a long step says where it is: in place on a terminal, a plain line piped
            if state["task"] is not None and interactive:
                progress.update(state["task"], description=event.message)
            elif not quiet and not interactive:
                console.print(event.message, markup=False)
        elif event.kind == "sample" and event.sample is not None:
            sample = event.sample
            if sample.metric == "noise":
                return
            if sample.metric == "startup" and sample.ok and not sample.warmup:
                state["startup"].setdefault(sample.backend, []).append(sample.value)
            if quiet:
                if not sample.ok:
                    err_console.print(
                        f"{sample.backend} {sample.metric} FAILED: {sample.error}", markup=False
                    )
                return
            # piped: one line per startup, limit check and ramp result, and every failure;
            # a ramp's or a memory group's per-instance records stay in samples.jsonl
            headline = sample.metric in ("startup", "limits") or sample.labels.get("view") in (
                "count_reached",
                "memavailable_drop",
                "memavailable_slope",
            )
            if not sample.ok or (not interactive and headline):
                console.print(_sample_line(sample), markup=False)

    return progress, on_event


def _sample_line(sample: Any) -> str:
    value = _format_value(sample.value, sample.unit)
    view = sample.labels.get("view")
    if view:
        role = sample.labels.get("role")
        value = f"{view}{':' + str(role) if role not in (None, 'total') else ''} {value}"
    tag = " warmup" if sample.warmup else ""
    line = f"{sample.seq:>4} {sample.backend:<12} {sample.case}{tag}: {value}"
    if not sample.ok:
        line += f"  FAILED: {sample.error}"
    return line


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    report_dir: Annotated[
        Path | None,
        typer.Option("--report-dir", help="Also write the run's report to DIR/<run_id>.html."),
    ] = None,
) -> None:
    """Print a run's summary tables (what bench run prints at its end)."""
    from bench.analysis.dataset import load_dataset
    from bench.analysis.summary import summarize

    try:
        dataset = load_dataset([run_dir])
    except BenchError as exc:
        raise _fail(exc) from None
    frame = dataset.samples
    rows = summarize(frame)
    name = next(iter(dataset.runs.values())).scenario_name if dataset.runs else str(run_dir)
    if any(row.accel == "tcg" for row in rows):
        console.print(
            Text.assemble(
                ("VMs ran under TCG (software emulation), not KVM:", "bold yellow"),
                " their figures are not hardware-virtualization figures.",
            )
        )
    if "label.enforced" in frame:
        console.print(_limits_table(name, frame))
    for metric in dict.fromkeys(row.metric for row in rows if row.metric != "limits"):
        title = {
            "startup": "startup to READY",
            "memory": "memory per instance (views; *_overhead = view - native baseline)",
            "density": "density ramp (per step; count_reached = instances READY at stop)",
        }.get(metric, metric)
        table = _table(f"{name}: {title} (measured samples, warmups excluded)")
        for column in ("backend", "accel", "case", "view", "n", "failed", "median", "min", "max"):
            left = column in {"backend", "accel", "case", "view"}
            table.add_column(column, justify="left" if left else "right")
        for row in rows:
            if row.metric != metric:
                continue
            accel = row.accel.upper() if row.accel == "tcg" else row.accel
            table.add_row(
                Text(row.backend),
                Text(accel, style="bold yellow" if row.accel == "tcg" else ""),
                Text(row.case),
                Text(row.view or "-"),
                str(row.n),
                str(row.failed),
                _format_value(row.median, row.unit),
                _format_value(row.minimum, row.unit),
                _format_value(row.maximum, row.unit),
            )
        console.print(table)
    ledger = _ledger_table(name, frame)
    if ledger is not None:
        console.print(ledger)
    if report_dir is not None:
        try:
            from bench.report import write_run_report

            written = write_run_report(run_dir, report_dir)
            console.print(f"report: {written.path}", markup=False)
        except Exception as exc:  # a report must never fail a run that measured
            err_console.print(f"warning: report not written: {exc}", markup=False)


def _ledger_table(name: str, frame: Any) -> Table | None:
    """The memory ledger per backend (MiB per instance), beside the other two views."""
    from bench.analysis.ledger import PART_GROUPS, ledger_rows

    rows = ledger_rows(frame)
    if not rows:
        return None
    table = _table(
        f"{name}: memory ledger, MiB per idle instance (median); unexplained = "
        "MemAvailable drop - total"
    )
    columns = [
        "backend",
        "ksm",
        *PART_GROUPS.values(),
        "total",
        "guest RAM touched/given",
        "JIT",
        "cgroup",
        "MemAvail drop",
        "slope [95% CI]",
        "unexplained",
    ]
    for column in columns:
        table.add_column(column, justify="left" if column in {"backend", "ksm"} else "right")

    def mib(value: float | None) -> str:
        return "-" if value is None or value != value else f"{value:.1f}"

    for row in rows:
        low, high = row.slope_ci
        slope = "-"
        if row.slope is not None:
            slope = f"{row.slope:.1f}"
            if low is not None and high is not None and low == low and high == high:
                slope += f" [{low:.1f}, {high:.1f}]"
            if row.slope_finding.startswith("below 0"):
                slope = "below 0: drift"
        guest = (
            f"{mib(row.guest_ram_touched)}/{mib(row.guest_ram_given)}"
            if row.guest_ram_given is not None
            else "-"
        )
        table.add_row(
            Text(row.backend),
            Text(row.ksm or "-"),
            *(
                Text("n/a", style="dim") if row.parts.get(n) is None else mib(row.parts[n])
                for n in PART_GROUPS.values()
            ),
            mib(row.total),
            guest,
            mib(row.jit_code),
            mib(row.cgroup_usage),
            mib(row.memavailable_drop),
            slope,
            mib(row.unexplained),
        )
    return table


def _limits_table(name: str, frame: Any) -> Table:
    """Backend x limit kind -> set value, measured value, enforced yes/no (with evidence)."""
    table = _table(f"{name}: limit enforcement (measured while the instance lived)")
    for column in ("backend", "accel", "limit", "set", "measured", "enforced", "evidence"):
        table.add_column(column, overflow="fold")
    limits = frame[frame["metric"] == "limits"]
    for _, row in limits.iterrows():
        evidence = row.get("label.evidence") or {}
        enforced = row.get("label.enforced")
        verdict = (
            Text("n/a", style="dim")
            if enforced is None or enforced != enforced
            else Text("yes", style="green")
            if enforced
            else Text("NO", style="bold red")
        )
        keys = (
            "killed",
            "engine_oom_killed",
            "killed_by_host",
            "oom_kill_count",
            "exit_code",
            "guest_exit_code",
            "nr_throttled_delta",
            "refused_after",
            "errno",
            "pids_events_max",
            "reason",
        )
        shown = ", ".join(f"{k}={evidence[k]}" for k in keys if evidence.get(k) is not None)
        note = row.get("label.verdict_note")
        if isinstance(note, str) and note:
            # how the verdict was reached (a CPU quota under contention says so here)
            shown = f"{note}. {shown}" if shown else note
        set_value = row.get("label.set_value")
        table.add_row(
            Text(str(row["backend"])),
            Text(str(row.get("label.accel", "n/a"))),
            Text(str(row["label.view"])),
            f"{set_value:g} {row.get('label.set_unit', '')}"
            if set_value == set_value and set_value is not None
            else "-",
            _format_value(row["value"] if row["value"] == row["value"] else None, str(row["unit"])),
            verdict,
            Text(shown or (str(row["error"]) if row.get("error") else "")),
        )
    return table


def _format_value(value: float | None, unit: str) -> str:
    """Seconds as ms; everything else with its own unit."""
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g} {unit}"


@app.command()
def validate(
    scenario_files: Annotated[list[Path], typer.Argument(help="Scenario YAML files.")],
    as_json: JsonOption = False,
) -> None:
    """Validate scenario files without running anything (every file; exit 2 if any is bad)."""
    from bench.scenario import expand_cases, load_scenario

    results: list[dict[str, Any]] = []
    for path in scenario_files:
        try:
            scenario, _ = load_scenario(path)
        except BenchError as exc:
            results.append({"file": str(path), "ok": False, "error": str(exc)})
            if not as_json:
                err_console.print(Text.assemble(("error:", "bold red"), " ", str(exc)))
            continue
        cases = [c.name for c in expand_cases(scenario)]
        results.append(
            {"file": str(path), "ok": True, "backends": scenario.backends, "cases": cases}
        )
        if not as_json:
            console.print(
                f"{path}: ok ({len(scenario.backends)} backends; cases: {', '.join(cases)})",
                markup=False,
            )
    if as_json:
        _echo_json(results)
    if not all(r["ok"] for r in results):
        raise typer.Exit(ScenarioError.exit_code)


@app.command()
def schema(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the JSON schema.")
    ] = Path("scenarios/schema.json"),
) -> None:
    """Write the scenario JSON schema (for editor completion)."""
    from bench.scenario import json_schema

    output.write_text(json.dumps(json_schema(), indent=2) + "\n")
    console.print(f"wrote {output}", markup=False)


@app.command()
def doctor(
    as_json: JsonOption = False,
    reprobe_kvm: Annotated[
        bool,
        typer.Option(
            "--reprobe-kvm",
            help="Forget the cached KVM decision (~/.cache/bench/accel-probe) and boot a "
            "KVM guest again to decide.",
        ),
    ] = False,
) -> None:
    """Check this host and every backend; say how to fix each failure."""
    from bench.doctor import forget_accel_decisions, run_checks

    if reprobe_kvm:
        forgotten = forget_accel_decisions()
        if not as_json:
            console.print(f"forgot {forgotten} cached KVM decision(s)", markup=False)
    checks = run_checks()
    if as_json:
        _echo_json([check.__dict__ for check in checks])
    else:
        table = _table(f"bench {__version__} doctor")
        for column in ("check", "status", "detail", "fix"):
            table.add_column(column, overflow="fold")
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        for check in checks:
            table.add_row(
                Text(check.name),
                Text(check.status, style=colours.get(check.status, "")),
                Text(check.detail),
                Text(check.fix),
            )
        console.print(table)
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(1)


@app.command()
def clean(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, do not remove.")] = False,
    everything: Annotated[
        bool,
        typer.Option("--all", help="Also remove instances of runs that are still running."),
    ] = False,
    images: Annotated[bool, typer.Option("--images", help="Also remove bench's images.")] = False,
) -> None:
    """Remove the instances bench left behind (by default, only those of runs not alive)."""
    from bench.backends import backend_names, get_backend
    from bench.ownership import active_runs, owned_by_live_run, run_suffix

    live = {run_suffix(str(r["run_id"])) for r in active_runs()}
    failed = False
    for name in backend_names():
        try:
            backend = get_backend(name)
            backend.check_available()
            present = backend.leftovers()
            spared = [] if everything else [n for n in present if owned_by_live_run(n, live)]
            chosen = [n for n in present if n not in spared]
            if dry_run:
                done = chosen
            elif everything:
                backend.sweep()
                still = set(backend.leftovers())
                done = [n for n in present if n not in still]
            else:
                done = backend.remove_leftovers(chosen)
            if images and not dry_run and hasattr(backend, "remove_images"):
                done += backend.remove_images()
            backend.close()
        except BenchError as exc:
            console.print(f"{name}: skipped ({exc})", markup=False)
            continue
        except Exception as exc:
            console.print(f"{name}: clean failed: {exc}", markup=False)
            failed = True
            continue
        verb = "would remove" if dry_run else "removed"
        line = f"{name}: {verb} {len(done)}" + (f": {', '.join(done)}" if done else "")
        if spared:
            line += f"; left {len(spared)} of running runs (--all removes them)"
        if not dry_run and len(done) < len(chosen):
            failed = True
            line += f"; NOT removed: {', '.join(sorted(set(chosen) - set(done)))}"
        console.print(line, markup=False)
    failed |= __import__("bench.cli_fleet").cli_fleet.clean_labhosts(console, dry_run, everything)
    if not dry_run:
        from bench.host_settings import restore_abandoned

        restored = restore_abandoned()
        if restored:
            console.print(
                f"host settings a killed run had changed, given back: {', '.join(restored)}",
                markup=False,
            )
    if failed:
        raise typer.Exit(1)


@app.command("ls")
def list_runs_command(
    results: ResultsOption = DEFAULT_RESULTS, as_json: JsonOption = False
) -> None:
    """List runs on disk, newest first (a dead run still marked running shows as abandoned)."""
    from bench.errors import ResultsError
    from bench.results import list_runs

    if not results.is_dir():
        raise _fail(ResultsError(f"{results}: no such results directory"))
    runs = list_runs(results)
    if as_json:
        _echo_json(runs)
        return
    if not runs:
        console.print(f"no runs under {results}", markup=False)
        return
    table = _table()
    for column in ("run_id", "host", "scenario", "status", "samples", "failed", "path"):
        table.add_column(column, overflow="fold")
    for run_info in runs:
        if "error" in run_info:
            table.add_row(
                "?", "", "", Text(run_info["error"], style="red"), "", "", Text(run_info["path"])
            )
            continue
        table.add_row(
            *(
                Text(str(run_info.get(k) if run_info.get(k) is not None else "-"))
                for k in ("run_id", "host", "scenario", "status", "samples", "failed", "path")
            )
        )
    console.print(table)


@app.command()
def version() -> None:
    """Print bench's version."""
    console.print(__version__, markup=False)


def _register_extra_commands() -> None:
    """Add the analysis commands (compare, check, baseline, report) from their own module."""
    try:
        from bench.cli_analysis import register
    except ImportError:
        return
    register(app, console, err_console)
    __import__("bench.cli_fleet", fromlist=["register"]).register(app, console, err_console)


_register_extra_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except BenchError as exc:  # anything a command did not map itself
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
