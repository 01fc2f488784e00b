"""The command line: thin typer commands that call library code and own the console (rich).

Exit codes: 0 success, 1 a run had failed samples or a check failed, 2 bad input
(scenario or results files), 3 a backend or artefact is unavailable, 130 interrupted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
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
from bench.errors import BenchError

app = typer.Typer(
    name="bench",
    help="Measure VMs against containers and a native baseline on this host.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

DEFAULT_RESULTS = Path("results")
ResultsOption = Annotated[Path, typer.Option("--results", help="Results root directory.")]


def _fail(exc: BenchError) -> typer.Exit:
    err_console.print(
        Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True
    )
    return typer.Exit(exc.exit_code)


@app.command()
def run(
    scenario_file: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    results: ResultsOption = DEFAULT_RESULTS,
    reports: Annotated[
        Path, typer.Option("--reports", help="Where the run's HTML report goes.")
    ] = Path("reports"),
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Do not write reports/<run_id>.html.")
    ] = False,
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
) -> None:
    """Run a scenario and record every sample under results/<host>/<run_id>/."""
    from bench.runner import RunEvent, RunOptions, run_scenario
    from bench.scenario import load_scenario

    try:
        scenario, text = load_scenario(scenario_file)
    except BenchError as exc:
        raise _fail(exc) from None
    if repeat is not None:
        scenario = scenario.model_copy(update={"repeats": repeat})
    interactive = console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not interactive,
    )
    task_id = None

    def on_event(event: RunEvent) -> None:
        nonlocal task_id
        if event.kind in ("phase", "warning"):
            style = "yellow" if event.kind == "warning" else "dim"
            console.print(Text(event.message, style=style))
        elif event.kind == "planned":
            console.print(f"{event.message}: {event.total} steps", highlight=False, markup=False)
            task_id = progress.add_task(scenario.name, total=event.total)
        elif event.kind == "step":
            if task_id is not None:
                progress.advance(task_id)
        elif event.kind == "sample" and event.sample is not None:
            sample = event.sample
            if sample.metric == "noise":
                return
            if not interactive or not sample.ok:
                value = _format_value(sample.value, sample.unit)
                view = sample.labels.get("view")
                if view:
                    role = sample.labels.get("role")
                    value = (
                        f"{view}{':' + str(role) if role not in (None, 'total') else ''} {value}"
                    )
                tag = " warmup" if sample.warmup else ""
                line = f"{sample.seq:>4} {sample.backend:<8} {sample.case}{tag}: {value}"
                if not sample.ok:
                    line += f"  FAILED: {sample.error}"
                console.print(line, highlight=False, markup=False)

    options = RunOptions(inject_spin_ms=inject_spin_ms)
    try:
        with progress:
            outcome = run_scenario(scenario, text, str(scenario_file), results, on_event, options)
    except BenchError as exc:
        raise _fail(exc) from None
    console.print(
        f"results: {outcome.directory}  (status {outcome.status}, "
        f"{outcome.counts.get('samples', 0)} samples, {outcome.counts.get('failed', 0)} failed)",
        highlight=False,
        markup=False,
    )
    # The tables and the report need the analysis stack (pandas, plotly): a child process
    # builds them, so the measuring process never loads it.
    command = [sys.executable, "-m", "bench", "show", str(outcome.directory)]
    if not no_report:
        command += ["--report-dir", str(reports)]
    sys.stdout.flush()
    shown = subprocess.run(command, check=False)
    if shown.returncode != 0:
        err_console.print(
            "warning: the run's summary or report could not be produced", markup=False
        )
    if outcome.counts.get("failed", 0):
        raise typer.Exit(1)


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
            "[bold yellow]VMs ran under TCG (software emulation), not KVM:[/] "
            "their figures are not hardware-virtualization figures."
        )
    if "label.enforced" in frame:
        console.print(_limits_table(name, frame))
    for metric in dict.fromkeys(row.metric for row in rows if row.metric != "limits"):
        title = {
            "startup": "startup to READY",
            "memory": "memory per instance (views; *_overhead = view - native baseline)",
            "density": "density ramp (per step; count_reached = instances READY at stop)",
        }.get(metric, metric)
        table = Table(title=Text(f"{name}: {title} (measured samples, warmups excluded)"))
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
    if report_dir is not None:
        try:
            from bench.report import write_run_report

            written = write_run_report(run_dir, report_dir)
            console.print(f"report: {written.path}", highlight=False, markup=False)
        except Exception as exc:  # a report must never fail a run that measured
            err_console.print(f"warning: report not written: {exc}", markup=False)


def _limits_table(name: str, frame: Any) -> Table:
    """Backend x limit kind -> set value, measured value, enforced yes/no (with evidence)."""
    table = Table(title=f"{name}: limit enforcement (measured while the instance lived)")
    for column in ("backend", "accel", "limit", "set", "measured", "enforced", "evidence"):
        table.add_column(column, overflow="fold")
    limits = frame[frame["metric"] == "limits"]
    for _, row in limits.iterrows():
        evidence = row.get("label.evidence") or {}
        enforced = row.get("label.enforced")
        verdict = (
            "[dim]n/a[/]"
            if enforced is None or enforced != enforced
            else "[green]yes[/]"
            if enforced
            else "[bold red]NO[/]"
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
) -> None:
    """Validate scenario files without running anything."""
    from bench.scenario import expand_cases, load_scenario

    for path in scenario_files:
        try:
            scenario, _ = load_scenario(path)
        except BenchError as exc:
            raise _fail(exc) from None
        cases = ", ".join(c.name for c in expand_cases(scenario))
        console.print(
            f"{path}: ok ({len(scenario.backends)} backends; cases: {cases})", highlight=False
        )


@app.command()
def schema(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the JSON schema.")
    ] = Path("scenarios/schema.json"),
) -> None:
    """Write the scenario JSON schema (for editor completion)."""
    from bench.scenario import json_schema

    output.write_text(json.dumps(json_schema(), indent=2) + "\n")
    console.print(f"wrote {output}")


@app.command()
def doctor() -> None:
    """Check this host: engines reachable, cgroups, KVM, disk, memory; say how to fix failures."""
    from bench.doctor import run_checks

    checks = run_checks()
    table = Table(title=f"bench {__version__} doctor")
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
    images: Annotated[bool, typer.Option("--images", help="Also remove bench's images.")] = False,
) -> None:
    """Remove every instance bench created (found by label or name prefix)."""
    from bench.backends import backend_names, get_backend

    failed = False
    for name in backend_names():
        try:
            backend = get_backend(name)
            backend.check_available()
            found = backend.leftovers() if dry_run else backend.sweep()
            if images and not dry_run and hasattr(backend, "remove_images"):
                found += backend.remove_images()
            backend.close()
        except BenchError as exc:
            console.print(f"{name}: skipped ({exc})", highlight=False)
            continue
        except Exception as exc:
            console.print(f"{name}: clean failed: {exc}", highlight=False)
            failed = True
            continue
        verb = "would remove" if dry_run else "removed"
        console.print(
            f"{name}: {verb} {len(found)}" + (f": {', '.join(found)}" if found else ""),
            highlight=False,
        )
    if failed:
        raise typer.Exit(1)


@app.command("ls")
def list_runs_command(results: ResultsOption = DEFAULT_RESULTS) -> None:
    """List runs on disk, newest first."""
    from bench.results import list_runs

    runs = list_runs(results)
    if not runs:
        console.print(f"no runs under {results}")
        return
    table = Table()
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
                str(run_info.get(k) if run_info.get(k) is not None else "-")
                for k in ("run_id", "host", "scenario", "status", "samples", "failed", "path")
            )
        )
    console.print(table)


@app.command()
def version() -> None:
    """Print bench's version."""
    console.print(__version__)


def _register_extra_commands() -> None:
    """Add the analysis commands (compare, check, baseline, report) from their own module."""
    try:
        from bench.cli_analysis import register
    except ImportError:
        return
    register(app, console, err_console)


_register_extra_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except BenchError as exc:  # anything a command did not map itself
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
