"""The analysis commands: compare, calibrate, check, baseline, report, publish. Thin.

``bench.cli`` calls ``register(app, console, err_console)`` at import. Exit codes follow
bench's: 0 success, 1 a check failed (a quantity moved away from its baseline), 2 bad
input (unreadable runs, baseline or calibration, nothing to compare or calibrate), 3 a
backend unavailable (calibrate), 130 interrupted. A calibration run's failed samples
are left out, with a warning.

Runs on the command line are run directories, trees containing them, quoted globs
(``'results/lab/*-quick-*'``), or a run with a block selection (``RUN@0-2``,
``RUN@0,2,4``). ``bench compare`` compares each run with the first unless ``--``
splits the arguments into two sides, each a set of runs (or blocks) pooled by block:
``bench compare A1 A2 A3 -- B1 B2 B3``.
"""

from __future__ import annotations

import glob
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from bench.errors import BenchError, ResultsError

if TYPE_CHECKING:
    from bench.analysis.baseline import CheckRow
    from bench.analysis.calibration import Calibration, Costs
    from bench.analysis.compare import ComparisonReport, ComparisonRow, Group
    from bench.analysis.dataset import Dataset

RunsArgument = Annotated[
    list[str],
    typer.Argument(
        help="Run directories, trees containing them, quoted globs, or RUN@BLOCKS "
        "(RUN@0-2, RUN@0,2) to take only some blocks of a run."
    ),
]
SIDES_SEPARATOR = "--"
# What ``--`` becomes before click parses: a positional marker, so options may still
# follow it (``bench compare A -- B --metric startup``) and the split point survives.
_SIDES_MARKER = "\x00sides"


class CompareFormat(StrEnum):
    """Output formats of ``bench compare``."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class CheckFormat(StrEnum):
    """Output formats of ``bench check``."""

    table = "table"
    json = "json"


_OUTCOME_STYLES = {
    "slower": "bold red",
    "larger": "bold red",
    "higher": "bold yellow",
    "faster": "bold green",
    "smaller": "bold green",
    "lower": "bold yellow",
    "equivalent": "green",
    "inconclusive": "dim",
    "incomparable": "yellow",
    "missing": "yellow",
}


class SidesCommand(TyperCommand):
    """A command whose first ``--`` splits its runs into two sides instead of ending options.

    Click would drop ``--`` and treat everything after it as positional; here it becomes
    a positional marker, so the split point reaches the command and options can be
    given anywhere.
    """

    # ctx is click's Context (typer ships its own click; Any keeps this independent of it)
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Replace ``--`` by the side marker, then parse as usual."""
        args = [_SIDES_MARKER if a == SIDES_SEPARATOR else a for a in args]
        return super().parse_args(ctx, args)


# --- run arguments -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunArgument:
    """One run argument: a path (run, tree or glob match) and an optional block selection."""

    text: str
    path: Path
    blocks: frozenset[int] | None = None


def parse_blocks(spec: str) -> frozenset[int]:
    """``0-2`` -> {0, 1, 2}; ``0,2,5-6`` -> {0, 2, 5, 6}."""
    blocks: set[int] = set()
    try:
        for part in spec.split(","):
            first, _, last = part.strip().partition("-")
            start = int(first)
            stop = int(last) if last else start
            if start < 0 or stop < start:
                raise ValueError(part)
            blocks.update(range(start, stop + 1))
    except ValueError:
        raise ResultsError(
            f"bad block selection {spec!r}: use RUN@0-2 or RUN@0,2,4 (blocks count from 0)"
        ) from None
    return frozenset(blocks)


def expand_run_arguments(texts: Sequence[str]) -> list[RunArgument]:
    """Resolve run arguments: a literal path, else ``PATH@BLOCKS``, PATH a path or a glob."""
    found: list[RunArgument] = []
    for text in texts:
        head, blocks = text, None
        if not Path(text).exists():
            before, at, spec = text.rpartition("@")
            if at and before and spec and all(ch.isdigit() or ch in ",-" for ch in spec):
                head, blocks = before, parse_blocks(spec)
        if Path(head).exists():
            found.append(RunArgument(text, Path(head), blocks))
        elif any(ch in head for ch in "*?["):
            matches = sorted(glob.glob(head))
            if not matches:
                raise ResultsError(f"{text}: the pattern matched nothing")
            found.extend(RunArgument(m, Path(m), blocks) for m in matches)
        else:
            raise ResultsError(f"{head}: no such run directory")
    return found


def load_arguments(
    arguments: Sequence[RunArgument],
) -> tuple[Dataset, dict[int, list[str]]]:
    """Load every run the arguments name once; and the run ids of each argument (by index)."""
    from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset
    from bench.results import find_run_dirs

    per_argument: dict[int, list[Path]] = {}
    directories: list[Path] = []
    for index, argument in enumerate(arguments):
        dirs = find_run_dirs([argument.path])
        per_argument[index] = dirs
        directories.extend(dirs)
    dataset = load_dataset(list(dict.fromkeys(directories)), labels=ANALYSIS_LABELS)
    by_directory = {run.directory.resolve(): run_id for run_id, run in dataset.runs.items()}
    run_ids = {
        index: [by_directory[d.resolve()] for d in dirs if d.resolve() in by_directory]
        for index, dirs in per_argument.items()
    }
    return dataset, run_ids


def build_sides(
    arguments: Sequence[RunArgument], run_ids: dict[int, list[str]], split: int
) -> list[Group]:
    """Side A (arguments before ``split``) and side B (from it on), as comparison groups."""
    from bench.analysis.compare import Group, Member

    sides = []
    for label, indices in (("A", range(split)), ("B", range(split, len(arguments)))):
        members = tuple(
            Member(run_id, arguments[i].blocks) for i in indices for run_id in run_ids[i]
        )
        if not members:
            raise ResultsError(f"side {label} of the comparison names no run")
        run_list = tuple(dict.fromkeys(m.run_id for m in members))
        sides.append(Group(label, run_list, members))
    return sides


def register(app: typer.Typer, console: Console, err_console: Console) -> None:
    """Add the analysis commands to bench's typer app."""

    def fail(exc: BenchError) -> typer.Exit:
        message = Text.assemble(("error:", "bold red"), " ", str(exc))
        err_console.print(message, highlight=False, soft_wrap=True)
        return typer.Exit(exc.exit_code)

    def emit(text: str, output: Path | None) -> None:
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            err_console.print(f"wrote {output}", highlight=False)

    def warn(text: str) -> None:
        err_console.print(Text.assemble(("warning: ", "yellow"), text), highlight=False)

    def calibration_choice(
        calibration_file: Path | None, no_calibration: bool
    ) -> Calibration | str | None:
        from bench.analysis.calibration import Calibration

        if no_calibration:
            return None
        if calibration_file is not None:
            return Calibration.read(calibration_file)
        return "auto"

    @app.command(cls=SidesCommand)
    def compare(
        runs: RunsArgument,
        group_by: Annotated[
            str,
            typer.Option(
                "--group-by",
                help="run (each run against the first), backend (backends within each run, "
                "block by block), or a host fact: kernel, cpu.model, cgroup.version, "
                "software.docker.runc ... Ignored when -- splits the runs into two sides.",
            ),
        ] = "run",
        baseline: Annotated[
            str | None,
            typer.Option("--baseline", help="The group to compare against (default: first)."),
        ] = None,
        stages: Annotated[bool, typer.Option("--stages", help="Also compare every stage.")] = False,
        metric: Annotated[
            list[str] | None, typer.Option("--metric", help="Only these metrics (repeatable).")
        ] = None,
        min_effect: Annotated[
            float,
            typer.Option(
                "--min-effect",
                help="Declared margin: the smallest change worth a verdict (0.05 = 5%). "
                "The noise widens the interval, never the margin.",
            ),
        ] = 0.05,
        min_abs_mib: Annotated[
            float,
            typer.Option(
                "--min-abs-mib", help="Floor of the margin of size rows, in MiB (absolute)."
            ),
        ] = 1.0,
        calibration_file: Annotated[
            Path | None,
            typer.Option(
                "--calibration",
                help="Calibration file (default: results/<host>/calibration.json beside "
                "the runs, when present).",
            ),
        ] = None,
        no_calibration: Annotated[
            bool, typer.Option("--no-calibration", help="Ignore any calibration.")
        ] = False,
        ignore_key: Annotated[
            list[str] | None,
            typer.Option("--ignore-key", help="Must-match host key to ignore (repeatable)."),
        ] = None,
        output_format: Annotated[
            CompareFormat, typer.Option("--format", help="Output format.")
        ] = CompareFormat.table,
        output: Annotated[
            Path | None, typer.Option("-o", "--output", help="Write to this file.")
        ] = None,
    ) -> None:
        """Compare runs, sets of runs (A1 A2 -- B1 B2), kernels or backends, block by block."""
        from bench.analysis.compare import (
            compare_dataset,
            format_csv,
            format_json,
            format_markdown,
        )
        from bench.analysis.stats import scipy_special

        # import scipy.special (Student's t) on a thread while the runs load
        importer = threading.Thread(target=scipy_special, daemon=True)
        importer.start()
        try:
            split_at = runs.index(_SIDES_MARKER) if _SIDES_MARKER in runs else None
            if split_at is not None and _SIDES_MARKER in runs[split_at + 1 :]:
                raise ResultsError("compare takes one -- (between the two sides)")
            texts = [r for r in runs if r != _SIDES_MARKER]
            arguments = expand_run_arguments(texts)
            dataset, run_ids = load_arguments(arguments)
            sides = None
            if split_at is not None:
                split = len(expand_run_arguments(texts[:split_at]))
                sides = build_sides(arguments, run_ids, split)
            elif any(a.blocks is not None for a in arguments):
                sides = build_sides_each(arguments, run_ids)
            choice = calibration_choice(calibration_file, no_calibration)
            importer.join()
            report = compare_dataset(
                dataset,
                group_by,
                sides=sides,
                baseline=baseline,
                stages=stages,
                metrics=metric or (),
                min_effect=min_effect,
                min_abs_mib=min_abs_mib,
                ignore_keys=ignore_key or (),
                calibration=choice,  # type: ignore[arg-type]
            )
        except BenchError as exc:
            raise fail(exc) from None
        for warning in dataset.warnings:
            warn(warning)
        if output_format is CompareFormat.json:
            emit(format_json(report), output)
        elif output_format is CompareFormat.csv:
            emit(format_csv(report), output)
        elif output_format is CompareFormat.markdown:
            emit(format_markdown(report), output)
        else:
            _print_comparison(console, report)

    def build_sides_each(
        arguments: Sequence[RunArgument], run_ids: dict[int, list[str]]
    ) -> list[Group]:
        """Without ``--``, each argument with a block selection is its own side."""
        from bench.analysis.compare import Group, Member

        groups = []
        for index, argument in enumerate(arguments):
            for run_id in run_ids[index]:
                member = Member(run_id, argument.blocks)
                groups.append(Group(member.text(), (run_id,), (member,)))
        return groups

    @app.command()
    def calibrate(
        sources: Annotated[
            list[str] | None,
            typer.Argument(
                help="A scenario file to run (default scenarios/quick.yaml), or existing "
                "A/A runs of one scenario to calibrate from without running anything."
            ),
        ] = None,
        runs_count: Annotated[
            int, typer.Option("--runs", min=1, help="Separate runs of the scenario.")
        ] = 2,
        repeat: Annotated[
            int, typer.Option("--repeat", min=1, help="Repeats (blocks) in each run.")
        ] = 3,
        results: Annotated[Path, typer.Option("--results", help="Results root directory.")] = Path(
            "results"
        ),
        output: Annotated[
            Path | None,
            typer.Option(
                "-o", "--output", help="Calibration file (default results/<host>/calibration.json)."
            ),
        ] = None,
        min_effect: Annotated[
            float,
            typer.Option(
                "--min-effect", help="The margin the printed designs must resolve (0.05 = 5%)."
            ),
        ] = 0.05,
    ) -> None:
        """Measure this host's noise by A/A repeats (both levels); compare and check use it.

        Prints, per quantity, the runs x blocks a side a comparison needs for an MDE at
        or under the margin, and what that costs in wall time here.
        """
        from bench.analysis.calibration import (
            CALIBRATION_FILE,
            Calibration,
            design_costs,
            make_calibration,
            read_calibration,
            write_calibration,
        )
        from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset

        texts = sources or ["scenarios/quick.yaml"]
        scenario_file = Path(texts[0])
        try:
            if len(texts) == 1 and scenario_file.suffix in {".yaml", ".yml"}:
                directories = _calibration_runs(
                    console, err_console, scenario_file, runs_count, repeat, results
                )
            else:
                directories = [a.path for a in expand_run_arguments(texts)]
            dataset = load_dataset(directories, labels=ANALYSIS_LABELS)
            host_dir = _host_directory(dataset)
            target = output or host_dir / CALIBRATION_FILE
            existing = read_calibration(target) if target.exists() else None
            document = make_calibration(dataset, existing=existing)
            write_calibration(target, document)
        except BenchError as exc:
            raise fail(exc) from None
        _print_calibration(
            console, Calibration.from_document(document, target), design_costs(dataset), min_effect
        )
        console.print(f"calibration: {target}", highlight=False, markup=False)
        failed = sum(
            int((run.record.get("counts") or {}).get("failed", 0)) for run in dataset.runs.values()
        )
        if failed:
            warn(f"{failed} sample(s) failed during calibration; they are left out")

    @app.command()
    def baseline(
        runs: RunsArgument,
        output: Annotated[Path, typer.Option("-o", "--output", help="Baseline file to write.")],
        tolerance: Annotated[
            float,
            typer.Option(
                "--tolerance",
                help="The gate's declared margin (0.10 = 10%). The noise widens the "
                "interval, never the margin.",
            ),
        ] = 0.10,
        stages: Annotated[
            bool, typer.Option("--stages", help="References for every stage too.")
        ] = False,
        replace: Annotated[
            bool, typer.Option("--replace", help="Start a new file instead of updating it.")
        ] = False,
    ) -> None:
        """Write per-host references (block medians) from good runs (updates an existing file)."""
        from bench.analysis.baseline import make_baseline, read_baseline, write_baseline

        try:
            dataset, _ = load_arguments(expand_run_arguments(runs))
            existing = read_baseline(output) if output.exists() and not replace else None
            document = make_baseline(dataset, tolerance=tolerance, stages=stages, existing=existing)
            write_baseline(output, document)
        except BenchError as exc:
            raise fail(exc) from None
        table = Table(title=f"baseline {output}")
        for column in ("host", "scenario", "source runs", "blocks", "references"):
            table.add_column(column)
        single_block = False
        for host, entry in document["hosts"].items():
            for scenario in entry["scenarios"].values():
                blocks = int(scenario.get("blocks", 1))
                single_block = single_block or blocks < 2
                table.add_row(
                    Text(host),
                    Text(str(scenario["scenario"])),
                    Text(", ".join(scenario.get("source_runs", []))),
                    str(blocks),
                    str(len(scenario["references"])),
                )
        console.print(table)
        if single_block:
            warn(
                "a reference of one block has no run-to-run noise of its own: bench check "
                "can only judge it with a calibration of this host (bench calibrate), or "
                "write the baseline from runs with --repeat 3"
            )

    @app.command()
    def check(
        runs: RunsArgument,
        baseline_file: Annotated[
            Path, typer.Option("--baseline", help="Baseline file written by bench baseline.")
        ],
        stages: Annotated[bool, typer.Option("--stages", help="Check every stage too.")] = False,
        calibration_file: Annotated[
            Path | None,
            typer.Option("--calibration", help="Calibration file (default: beside the runs)."),
        ] = None,
        no_calibration: Annotated[
            bool, typer.Option("--no-calibration", help="Ignore any calibration.")
        ] = False,
        output_format: Annotated[
            CheckFormat, typer.Option("--format", help="Output format.")
        ] = CheckFormat.table,
        allow_inconclusive: Annotated[
            bool,
            typer.Option(
                "--allow-inconclusive",
                help="Pass when nothing moved, even where the check could not tell "
                "(underpowered, or run-to-run noise unknown).",
            ),
        ] = False,
    ) -> None:
        """Check runs against a baseline with compare's verdicts.

        Exit 1 when a quantity moved; 5 when nothing moved but some quantity could not be
        told (its MDE over the margin, or the noise between runs unknown), unless
        --allow-inconclusive.
        """
        import json

        from bench.analysis.baseline import EXIT_CANNOT_TELL, check_dataset, read_baseline

        try:
            document = read_baseline(baseline_file)
            dataset, _ = load_arguments(expand_run_arguments(runs))
            result = check_dataset(
                dataset,
                document,
                stages=stages,
                calibration=calibration_choice(calibration_file, no_calibration),  # type: ignore[arg-type]
            )
        except BenchError as exc:
            raise fail(exc) from None
        if output_format is CheckFormat.json:
            payload = {
                "failed": result.failed,
                "notes": result.notes,
                "rows": [row.as_dict() for row in result.rows],
            }
            typer.echo(json.dumps(payload, indent=2))
        else:
            failing_first = sorted(result.rows, key=lambda row: not row.failed)
            _print_check(console, failing_first)
            for note in result.notes:
                console.print(Text(f"note: {note}", style="dim"))
            failures = result.failures
            unjudged = result.unjudged
            if unjudged:
                warn(
                    f"{len(unjudged)} of {len(result.rows)} quantities could not be told "
                    "(underpowered, or run-to-run noise unknown): run bench calibrate on "
                    "this host for the runs and blocks a check needs, or write the baseline "
                    "from more runs"
                )
            if failures:
                console.print(
                    f"[bold red]FAILED:[/] {len(failures)} of {len(result.rows)} quantities "
                    f"moved away from the baseline (baseline {baseline_file})",
                    highlight=False,
                )
            else:
                console.print(
                    f"[bold green]ok:[/] no quantity moved beyond its margin "
                    f"({len(result.rows)} checked)",
                    highlight=False,
                )
        if result.failed:
            raise typer.Exit(1)
        if result.unjudged and not allow_inconclusive:
            raise typer.Exit(EXIT_CANNOT_TELL)

    @app.command()
    def report(
        runs: RunsArgument,
        output: Annotated[
            Path | None,
            typer.Option(
                "-o",
                "--output",
                help="HTML file (default reports/<run_id>.html for one run, "
                "reports/report-<time>.html for several).",
            ),
        ] = None,
        title: Annotated[str | None, typer.Option("--title", help="Report title.")] = None,
        compare_by: Annotated[
            str,
            typer.Option("--compare-by", help="Cross-run comparison: run, kernel, or a fact."),
        ] = "run",
        baseline: Annotated[
            str | None, typer.Option("--baseline", help="Baseline group of the comparison.")
        ] = None,
    ) -> None:
        """Write one self-contained HTML report (plotly.js inlined; works offline)."""
        from bench.report import DEFAULT_REPORTS_DIR, write_report

        try:
            dataset, _ = load_arguments(expand_run_arguments(runs))
            if output is None:
                if len(dataset.runs) == 1:
                    output = DEFAULT_REPORTS_DIR / f"{next(iter(dataset.runs))}.html"
                else:
                    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                    output = DEFAULT_REPORTS_DIR / f"report-{stamp}.html"
            outcome = write_report(
                dataset, output, title=title, compare_by=compare_by, baseline=baseline
            )
        except BenchError as exc:
            raise fail(exc) from None
        for warning in outcome.warnings:
            warn(warning)
        console.print(
            f"report: {outcome.path}  ({outcome.size_bytes / 1e6:.1f} MB, {outcome.plots} plots, "
            f"{outcome.runs} run(s), {outcome.samples} samples, {outcome.seconds:.1f} s)",
            highlight=False,
            markup=False,
        )

    @app.command()
    def publish(
        results: Annotated[
            list[Path],
            typer.Argument(help="Results directories (or run directories) to publish."),
        ],
        site: Annotated[
            Path, typer.Option("-o", "--output", help="Site directory (created if absent).")
        ],
        full: Annotated[
            bool,
            typer.Option("--full", help="Render every run again (default: only new or changed)."),
        ] = False,
    ) -> None:
        """Build a static site of every run: index, a page per run, trends, kernel pairs."""
        from bench.report.site import publish_site

        def progress(text: str) -> None:
            err_console.print(Text(text, style="dim"), highlight=False)

        try:
            outcome = publish_site(results, site, full=full, progress=progress)
        except BenchError as exc:
            raise fail(exc) from None
        for warning in outcome.warnings:
            warn(warning)
        console.print(
            outcome.summary(),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _calibration_runs(
    console: Console,
    err_console: Console,
    scenario_file: Path,
    runs_count: int,
    repeat: int,
    results: Path,
) -> list[Path]:
    """Run the scenario ``runs_count`` times with ``repeat`` blocks each; their directories."""
    from bench.runner import RunEvent, run_scenario
    from bench.scenario import load_scenario

    scenario, text = load_scenario(scenario_file)
    repeated = scenario.model_copy(update={"repeats": repeat})
    directories: list[Path] = []

    def on_event(event: RunEvent) -> None:
        if event.kind in {"phase", "warning", "planned"}:
            style = "yellow" if event.kind == "warning" else "dim"
            console.print(Text(event.message, style=style), highlight=False)
        elif event.kind == "sample" and event.sample is not None and not event.sample.ok:
            err_console.print(
                f"failed sample {event.sample.backend} {event.sample.case}: {event.sample.error}",
                highlight=False,
                markup=False,
            )

    for index in range(runs_count):
        console.print(
            f"calibration run {index + 1} of {runs_count}: {scenario.name}, {repeat} repeats",
            highlight=False,
        )
        outcome = run_scenario(repeated, text, str(scenario_file), results, on_event)
        if outcome.status != "complete":
            raise BenchError(f"calibration run {outcome.run_id} ended {outcome.status}")
        directories.append(outcome.directory)
    return directories


def _host_directory(dataset: Dataset) -> Path:
    """``results/<host>``: the directory the (first) run lives in."""
    run = next(iter(dataset.runs.values()), None)
    if run is None:
        raise ResultsError("no runs to calibrate from")
    return run.directory.parent


def _print_calibration(
    console: Console, calibration: Calibration, costs: Costs | None, min_effect: float
) -> None:
    """Both levels of noise per quantity, and the design that resolves ``min_effect``."""
    from bench.analysis.calibration import design_for, value_entries
    from bench.analysis.units import format_quantity, unit_kind
    from bench.analysis.verdict import percent

    target = percent(min_effect)
    table = Table(
        title=f"noise on {calibration.host}: between the blocks of a run, and between runs "
        f"beyond that; the runs x blocks a side a comparison needs for an MDE <= {target}"
    )
    columns = ["scenario", "metric", "backend", "case", "view", "runs", "blocks", "median"]
    columns += ["block noise", "run noise", f"for MDE <= {target}", "costs"]
    numeric = {"runs", "blocks", "median", "block noise", "run noise", "costs"}
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left")

    def level(fraction: float | None, sigma: float | None, unit: str) -> str:
        if sigma is None:
            return "-"
        if fraction is not None and unit_kind(unit) != "size":
            return percent(fraction)
        return format_quantity(sigma, unit)

    for entry in value_entries(calibration):
        median = sorted(entry.block_medians)[len(entry.block_medians) // 2]
        design = design_for(entry, min_effect, costs) if costs is not None else None
        if design is None:
            needed = "run level unknown: calibrate with --runs 2 or more"
            cost = "-"
        else:
            mde = (
                percent(math.expm1(design.mde))
                if design.log_scale
                else format_quantity(design.mde, entry.unit)
            )
            needed = f"{design.runs} x {design.blocks_per_run} (MDE {mde})"
            needed += "" if design.meets else ": not within 12 x 12"
            cost = f"{design.cost_s / 60:.0f} min a side"
        table.add_row(
            Text(entry.scenario),
            entry.metric,
            Text(entry.backend),
            Text(entry.case),
            Text(entry.view or "-"),
            str(len(entry.runs)),
            str(entry.blocks),
            format_quantity(median, entry.unit),
            level(entry.noise_fraction, entry.sigma_abs, entry.unit),
            level(entry.run_noise_fraction, entry.run_sigma_abs, entry.unit),
            needed,
            cost,
        )
    console.print(table)


def _print_comparison(console: Console, report: ComparisonReport) -> None:
    from bench.analysis.compare import (
        condensed_warnings,
        figure_cells,
        method_text,
        row_title,
    )

    if report.group_by == "sides":
        for group in report.groups:
            members = ", ".join(m.text() for m in group.all_members())
            console.print(Text(f"{group.label} = {members}"), highlight=False)
    for label, reasons in report.incomparable.items():
        console.print(
            Text.assemble(
                ("incomparable: ", "bold yellow"),
                f"{label} vs {report.baseline}: ",
                "; ".join(reasons),
            )
        )
    for label, load in report.load.items():
        if load.flagged:
            console.print(
                Text.assemble(
                    ("background load differs: ", "bold yellow"),
                    f"{report.baseline} vs {label}: {load.summary()}",
                )
            )
    if any("tcg" in (r.accel_baseline, r.accel_contender) for r in report.rows):
        console.print(
            "[bold yellow]VMs ran under TCG (software emulation), not KVM:[/] "
            "their figures are not hardware-virtualization figures."
        )
    by_contender: dict[str, list[ComparisonRow]] = {}
    for row in report.rows:
        by_contender.setdefault(row.contender, []).append(row)
    with_run = report.group_by == "backend" and len({r.run_id for r in report.rows}) > 1
    for contender, rows in by_contender.items():
        how = (
            "backends of each run, block by block"
            if report.group_by == "backend"
            else (f"compare by {report.group_by}")
        )
        title = f"{contender} against {report.baseline} ({how})"
        table = Table(title=Text(title))
        columns = [
            ("what", "left"),
            *([("run", "left")] if with_run else []),
            ("baseline", "right"),
            ("contender", "right"),
            ("ratio [95% CI]", "right"),
            ("difference", "right"),
            ("margin", "right"),
            ("MDE", "right"),
            ("blocks", "right"),
            ("p / Holm", "right"),
            ("verdict", "left"),
        ]
        for name, justify in columns:
            table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for row in rows:
            cells: list[Text | str] = [
                Text(row_title(row) if report.group_by != "backend" else _backend_title(row)),
                *([Text(row.run_id[-6:])] if with_run else []),
                *figure_cells(row),
                Text(row.verdict, style=_OUTCOME_STYLES.get(row.outcome, "")),
            ]
            table.add_row(*cells)
        console.print(table)
    console.print(Text(method_text(report), style="dim"))
    for note in report.notes:
        console.print(Text(f"note: {note}", style="dim"))
    warnings = condensed_warnings(report)
    if warnings:
        console.print("[yellow]warnings:[/]")
        for line in warnings:
            console.print(Text(f"  {line}"))


def _backend_title(row: ComparisonRow) -> str:
    parts = [row.metric, row.backend.split(" -> ")[-1], row.case]
    if row.view:
        parts.append(row.view)
    if row.stage != "value":
        parts.append(row.stage)
    return " ".join(parts)


def _print_check(console: Console, rows: Sequence[CheckRow]) -> None:
    from bench.analysis.units import format_quantity

    table = Table(title="baseline check (this run's blocks against the baseline's)")
    for column in (
        "host",
        "what",
        "status",
        "median",
        "baseline",
        "ratio [95% CI]",
        "margin",
        "verdict",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        what = " ".join(
            p
            for p in (row.metric, row.backend, row.case, row.view, row.stage)
            if p and p != "value"
        )
        style = "bold red" if row.failed else ("green" if row.status == "ok" else "dim")
        table.add_row(
            Text(row.host),
            Text(what),
            Text(row.status, style=style),
            format_quantity(row.median, row.unit),
            format_quantity(row.baseline_median, row.unit),
            Text(row.ratio_text()),
            Text(row.margin_text()),
            Text(row.detail),
        )
    console.print(table)
