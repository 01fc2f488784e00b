"""HTML reports: one self-contained file (plotly.js inlined once) from any set of runs.

``write_report(paths, output)`` is what ``bench report`` calls; ``write_run_report`` is
what ``bench run`` calls for its own run (reports/<run_id>.html).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.analysis.dataset import ANALYSIS_LABELS, Dataset, load_dataset
from bench.report.build import ReportModel, build_report
from bench.report.render import render_html, write_html

DEFAULT_REPORTS_DIR = Path("reports")


@dataclass(frozen=True)
class ReportOutcome:
    """Where a report went, how big it is, how many plots it has, how long it took."""

    path: Path
    size_bytes: int
    plots: int
    runs: int
    samples: int
    seconds: float
    warnings: tuple[str, ...] = ()


def write_report(
    source: Dataset | str | Path | Iterable[str | Path],
    output: Path,
    *,
    title: str | None = None,
    compare_by: str = "run",
    baseline: str | None = None,
) -> ReportOutcome:
    """Load runs (or take a loaded Dataset), build the report and write it to ``output``."""
    started = time.perf_counter()
    dataset = (
        source if isinstance(source, Dataset) else load_dataset(source, labels=ANALYSIS_LABELS)
    )
    model: ReportModel = build_report(
        dataset, title=title, compare_by=compare_by, baseline=baseline
    )
    size = write_html(output, render_html(model))
    return ReportOutcome(
        path=Path(output),
        size_bytes=size,
        plots=len(model.plots),
        runs=len(dataset.runs),
        samples=len(dataset.samples),
        seconds=time.perf_counter() - started,
        warnings=tuple(dataset.warnings),
    )


def write_run_report(run_directory: Path, reports_dir: Path = DEFAULT_REPORTS_DIR) -> ReportOutcome:
    """Write ``reports_dir/<run_id>.html`` for one run directory."""
    dataset = load_dataset(run_directory, labels=ANALYSIS_LABELS)
    run_id = next(iter(dataset.runs), Path(run_directory).name)
    return write_report(dataset, Path(reports_dir) / f"{run_id}.html")


__all__ = ["ReportOutcome", "write_report", "write_run_report"]
