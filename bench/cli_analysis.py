"""The analysis commands: compare, check, baseline, report. Thin: parse, call the library, print.

``bench.cli`` calls ``register(app, console, err_console)`` at import. Exit codes follow
bench's: 0 success, 1 a check failed (a metric left its band), 2 bad input (unreadable
runs or baseline, nothing to compare), 3 reserved for unavailable backends.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.errors import BenchError

RunsArgument = Annotated[
    list[Path], typer.Argument(help="Run directories, or trees containing them.")
]


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
    "incomparable": "yellow",
    "missing": "yellow",
    "not significant": "dim",
}


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

    @app.command()
    def compare(
        runs: RunsArgument,
        group_by: Annotated[
            str,
            typer.Option(
                "--group-by",
                help="run (each run; the first is the baseline), backend (backends within "
                "each run), or a host fact: kernel, cpu.model, cgroup.version, "
                "software.docker.runc ...",
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
            float, typer.Option("--min-effect", help="Smallest ratio change reported (0.05=5%).")
        ] = 0.05,
        alpha: Annotated[float, typer.Option("--alpha", help="Mann-Whitney U level.")] = 0.05,
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
        """Compare runs (or kernels, hosts, backends): ratio with CI and a verdict per metric."""
        from bench.analysis.compare import (
            compare_dataset,
            format_csv,
            format_json,
            format_markdown,
        )
        from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset
        from bench.analysis.stats import scipy_stats

        # import scipy.stats on a thread while the runs load: big runs are decoded by
        # worker processes, so the import costs the command next to nothing
        importer = threading.Thread(target=scipy_stats, daemon=True)
        importer.start()
        try:
            dataset = load_dataset(runs, labels=ANALYSIS_LABELS)
            importer.join()
            report = compare_dataset(
                dataset,
                group_by,
                baseline=baseline,
                stages=stages,
                metrics=metric or (),
                min_effect=min_effect,
                alpha=alpha,
                ignore_keys=ignore_key or (),
            )
        except BenchError as exc:
            raise fail(exc) from None
        for warning in dataset.warnings:
            err_console.print(Text.assemble(("warning: ", "yellow"), warning), highlight=False)
        if output_format is CompareFormat.json:
            emit(format_json(report), output)
        elif output_format is CompareFormat.csv:
            emit(format_csv(report), output)
        elif output_format is CompareFormat.markdown:
            emit(format_markdown(report), output)
        else:
            _print_comparison(console, report)

    @app.command()
    def baseline(
        runs: RunsArgument,
        output: Annotated[Path, typer.Option("-o", "--output", help="Baseline file to write.")],
        tolerance: Annotated[
            float, typer.Option("--tolerance", help="Smallest band half-width (0.10 = 10%).")
        ] = 0.10,
        stages: Annotated[
            bool, typer.Option("--stages", help="Bands for every stage too.")
        ] = False,
        replace: Annotated[
            bool, typer.Option("--replace", help="Start a new file instead of updating it.")
        ] = False,
    ) -> None:
        """Write per-host tolerance bands from a good run (updates an existing file)."""
        from bench.analysis.baseline import make_baseline, read_baseline, write_baseline
        from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset

        try:
            dataset = load_dataset(runs, labels=ANALYSIS_LABELS)
            existing = read_baseline(output) if output.exists() and not replace else None
            document = make_baseline(dataset, tolerance=tolerance, stages=stages, existing=existing)
            write_baseline(output, document)
        except BenchError as exc:
            raise fail(exc) from None
        table = Table(title=f"baseline {output}")
        for column in ("host", "scenario", "source run", "bands"):
            table.add_column(column)
        for host, entry in document["hosts"].items():
            for scenario in entry["scenarios"].values():
                table.add_row(
                    Text(host),
                    Text(str(scenario["scenario"])),
                    Text(str(scenario["source_run"])),
                    str(len(scenario["bands"])),
                )
        console.print(table)

    @app.command()
    def check(
        runs: RunsArgument,
        baseline_file: Annotated[
            Path, typer.Option("--baseline", help="Baseline file written by bench baseline.")
        ],
        stages: Annotated[bool, typer.Option("--stages", help="Check every stage too.")] = False,
        output_format: Annotated[
            CheckFormat, typer.Option("--format", help="Output format.")
        ] = CheckFormat.table,
    ) -> None:
        """Check runs against a baseline's tolerance bands; exit 1 when a metric leaves its band."""
        import json

        from bench.analysis.baseline import check_dataset, read_baseline
        from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset

        try:
            document = read_baseline(baseline_file)
            dataset = load_dataset(runs, labels=ANALYSIS_LABELS)
            result = check_dataset(dataset, document, stages=stages)
        except BenchError as exc:
            raise fail(exc) from None
        if output_format is CheckFormat.json:
            payload = {"failed": result.failed, "rows": [row.as_dict() for row in result.rows]}
            typer.echo(json.dumps(payload, indent=2))
        else:
            failing_first = sorted(result.rows, key=lambda row: not row.failed)
            _print_check(console, failing_first)
            failures = result.failures
            if failures:
                console.print(
                    f"[bold red]FAILED:[/] {len(failures)} of {len(result.rows)} quantities "
                    f"left their band (baseline {baseline_file})",
                    highlight=False,
                )
            else:
                console.print(
                    f"[bold green]ok:[/] {len(result.rows)} quantities within their bands",
                    highlight=False,
                )
        if result.failed:
            raise typer.Exit(1)

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
        from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset
        from bench.report import DEFAULT_REPORTS_DIR, write_report

        try:
            dataset = load_dataset(runs, labels=ANALYSIS_LABELS)
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
            err_console.print(Text.assemble(("warning: ", "yellow"), warning), highlight=False)
        console.print(
            f"report: {outcome.path}  ({outcome.size_bytes / 1e6:.1f} MB, {outcome.plots} plots, "
            f"{outcome.runs} run(s), {outcome.samples} samples, {outcome.seconds:.1f} s)",
            highlight=False,
            markup=False,
        )


def _print_comparison(console: Console, report: object) -> None:
    from bench.analysis.compare import ComparisonReport, format_ratio, row_title
    from bench.analysis.units import format_quantity

    assert isinstance(report, ComparisonReport)
    for label, reasons in report.incomparable.items():
        console.print(
            Text.assemble(
                ("incomparable: ", "bold yellow"),
                f"{label} vs {report.baseline}: ",
                "; ".join(reasons),
            )
        )
    if any("tcg" in (r.accel_baseline, r.accel_contender) for r in report.rows):
        console.print(
            "[bold yellow]VMs ran under TCG (software emulation), not KVM:[/] "
            "their figures are not hardware-virtualization figures."
        )
    settings = report.settings
    table = Table(
        title=Text(
            f"compare by {report.group_by}; baseline {report.baseline} "
            f"(significant: Mann-Whitney p < {settings['alpha']} and effect >= "
            f"{settings['min_effect']:.0%})"
        )
    )
    with_run = report.group_by == "backend" and len({r.run_id for r in report.rows}) > 1
    columns = [
        "what",
        *(["run"] if with_run else []),
        "contender",
        "baseline",
        "contender ",
        "ratio [95% CI]",
        "p",
        "verdict",
    ]
    for column in columns:
        table.add_column(
            column.strip(),
            justify="right"
            if column in {"baseline", "contender ", "ratio [95% CI]", "p"}
            else "left",
            overflow="fold",
        )
    for row in report.rows:
        style = _OUTCOME_STYLES.get(row.outcome, "")
        cells: list[Text | str] = [
            Text(row_title(row)),
            *([Text(row.run_id[-6:])] if with_run else []),
            Text(row.contender),
            format_quantity(row.median_baseline, row.unit),
            format_quantity(row.median_contender, row.unit),
            format_ratio(row),
            "-" if row.p_value is None else f"{row.p_value:.3g}",
            Text(row.verdict, style=style),
        ]
        table.add_row(*cells)
    console.print(table)
    warned = [r for r in report.rows if r.warnings]
    if warned:
        console.print("[yellow]stability warnings:[/]")
        for row in warned:
            console.print(Text(f"  {row_title(row)} ({row.contender}): {'; '.join(row.warnings)}"))


def _print_check(console: Console, rows: Sequence[object]) -> None:
    from bench.analysis.baseline import CheckRow
    from bench.analysis.units import format_quantity

    table = Table(title="baseline check (median of this run against its band)")
    for column in ("host", "what", "status", "median", "band", "baseline median", "detail"):
        table.add_column(column, overflow="fold")
    for row in rows:
        assert isinstance(row, CheckRow)
        what = " ".join(
            p
            for p in (row.metric, row.backend, row.case, row.view, row.stage)
            if p and p != "value"
        )
        band = (
            f"{format_quantity(row.lower, row.unit)} - {format_quantity(row.upper, row.unit)}"
            if row.lower is not None and row.upper is not None
            else "-"
        )
        style = "bold red" if row.failed else ("green" if row.status == "ok" else "dim")
        table.add_row(
            Text(row.host),
            Text(what),
            Text(row.status, style=style),
            format_quantity(row.median, row.unit),
            band,
            format_quantity(row.baseline_median, row.unit),
            Text(row.detail),
        )
    console.print(table)
