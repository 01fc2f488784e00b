"""The report's content: a summary first screen, then sections of tables, plots and notes.

Pure data, no HTML: ``build_report`` returns a ``ReportModel`` the jinja2 template
renders (and tests inspect). The first screen answers "VM vs container vs native on this
host and kernel": one row per backend (``bench.analysis.headline``) with startup to
READY (median, p95), memory per idle instance, density reached and why it stopped,
limits enforced, the accelerator, each figure beside its multiple of the native
process; and for several runs, the comparison verdicts with absolute differences.
Details follow, long ones collapsed (host facts, statistics tables, scenario text).

Every section renders from the samples it needs when they are present and says "not
measured in these runs" when they are absent, so one template serves a quick startup
run and a full suite alike. Strings from scenarios and hosts are kept as plain text
here; escaping is the template's job (autoescape), and plot JSON is escaped for
<script> by ``figure_json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench import __version__
from bench.analysis.columns import equals, isin, unique_text
from bench.analysis.compare import (
    RESULT_COLUMNS,
    CompareError,
    ComparisonReport,
    ComparisonRow,
    compare_dataset,
    condensed_warnings,
    figure_cells,
    format_difference,
    method_text,
    row_title,
)
from bench.analysis.dataset import Dataset, RunInfo, fact
from bench.analysis.headline import BackendHeadline, headline_rows, multiple_text
from bench.analysis.ledger import PART_GROUPS, ledger_rows
from bench.analysis.noise import busy_block_warnings, noise_table, without_noise
from bench.analysis.order import BackendOrder
from bench.analysis.stats import VALUE_STAGE, StatRow, measured, summarize_stats, view_labels
from bench.analysis.units import format_quantity
from bench.report import figures
from bench.results import utc_now_iso

NOT_MEASURED = "not measured in these runs"
# A report names at most this many warnings: each kind once, the most widespread first.
WARNINGS_MAX = 5
LIMIT_PLOTS_MAX = 12
# Verdict rows on the first screen; the rest are in the comparison section.
FIRST_SCREEN_VERDICTS = 8
METHOD_POINTER = "README, sections Method and Statistics"
_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


@dataclass
class Cell:
    """A table cell: its text, a muted second line, long text folded into a details element."""

    text: str
    sub: str = ""
    detail: str = ""
    href: str = ""
    css: str = ""


CellValue = str | Cell


@dataclass
class Plot:
    """A plotly figure, its JSON made safe for an inline <script>, and a caption."""

    id: str
    figure_json: str
    caption: str = ""
    kind: str = "plot"


@dataclass
class Table:
    """A table of plain-text cells; ``numeric`` columns are right-aligned."""

    columns: list[str]
    rows: list[list[CellValue]]
    caption: str = ""
    numeric: frozenset[int] = frozenset()
    row_classes: list[str] = field(default_factory=list)
    css: str = ""  # "wide": cells never wrap; the table scrolls inside its frame instead
    kind: str = "table"


@dataclass
class Note:
    """A paragraph of text; ``level`` is info, warn or alert; ``detail`` folds long text."""

    text: str
    level: str = "info"
    detail: str = ""
    kind: str = "note"


@dataclass
class Preformatted:
    """Verbatim text (scenario files, kernel command lines) with a heading."""

    heading: str
    text: str
    kind: str = "pre"


@dataclass
class Details:
    """Items folded under a one-line summary (statistics tables, long lists)."""

    summary: str
    items: list[Any] = field(default_factory=list)
    kind: str = "details"


Item = Plot | Table | Note | Preformatted | Details


@dataclass
class Section:
    """One titled part of the report; a collapsed one renders closed."""

    id: str
    title: str
    items: list[Item] = field(default_factory=list)
    measured: bool = True
    collapsed: bool = False


@dataclass
class ReportModel:
    """Everything the template renders."""

    title: str
    generated_at_utc: str
    bench_version: str
    banners: list[Note]
    summary: list[tuple[str, str]]
    sections: list[Section]
    headline: Table | None = None
    headline_notes: list[Note] = field(default_factory=list)
    verdicts: Table | None = None
    links: list[tuple[str, str]] = field(default_factory=list)
    downloads: list[tuple[str, str]] = field(default_factory=list)
    method_pointer: str = METHOD_POINTER

    @property
    def plots(self) -> list[Plot]:
        """Every plot in the report, in order."""
        found: list[Plot] = []

        def walk(items: Iterable[Any]) -> None:
            for item in items:
                if isinstance(item, Plot):
                    found.append(item)
                elif isinstance(item, Details):
                    walk(item.items)

        for section in self.sections:
            walk(section.items)
        return found


def figure_json(figure: figures.Figure) -> str:
    """Serialise a figure for ``<script type="application/json">``: no ``<``, ``>``, ``&``."""
    text = json.dumps(figure, separators=(",", ":"), allow_nan=False)
    return text.translate(_JSON_ESCAPES)


class _Ids:
    """Sequential element ids for plots."""

    def __init__(self) -> None:
        self.count = 0

    def plot(self, figure: figures.Figure, caption: str = "") -> Plot:
        self.count += 1
        return Plot(f"plot-{self.count}", figure_json(figure), caption)


def _of_metric(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The samples of one metric (an empty frame stays as it is)."""
    if frame.empty:
        return frame
    mask = equals(frame["metric"], metric)
    return frame if mask.all() else frame[mask]


def _unmeasured(section: Section, text: str) -> Section:
    """``section`` with only a note saying why it has no content, marked not measured."""
    section.items.append(Note(text))
    section.measured = False
    return section


def build_report(
    dataset: Dataset,
    *,
    title: str | None = None,
    compare_by: str = "run",
    baseline: str | None = None,
    links: Sequence[tuple[str, str]] = (),
    downloads: Sequence[tuple[str, str]] = (),
    status_override: dict[str, str] | None = None,
) -> ReportModel:
    """Build the report model of one or more runs (see the module docstring).

    ``links`` and ``downloads`` (text, relative href) are shown in the header (a
    published site's navigation and the run's raw files); ``status_override`` gives a
    run's effective status (``abandoned`` for a dead ``running`` run).
    """
    if not dataset.runs:
        raise CompareError("no runs to report on")
    statuses = {run_id: run.status for run_id, run in dataset.runs.items()}
    statuses.update(status_override or {})
    all_measured = measured(dataset.samples)
    frame = without_noise(all_measured)
    if not frame.empty:
        frame = frame.assign(_view=view_labels(frame))
    succeeded = frame["ok"].to_numpy(dtype=bool) if not frame.empty else None
    ok = frame if succeeded is None or succeeded.all() else frame[succeeded]
    stats = summarize_stats(dataset.samples, stages=True) if not frame.empty else []
    ids = _Ids()
    naming = _Naming(dataset, ok)
    headline = headline_rows(frame) if not frame.empty else []
    comparison = _cross_run_comparisons(dataset, compare_by, baseline)
    sections = [
        _startup_section(ok, stats, naming, ids),
        _memory_section(ok, stats, naming, ids),
        _density_section(ok, naming, ids),
        _limits_section(frame, naming, ids),
        _backends_section(dataset),
        _comparison_section(dataset, comparison, compare_by),
        _stability_section(stats, dataset, noise_table(all_measured)),
        _facts_section(dataset, statuses),
        _scenario_section(dataset),
    ]
    runs = list(dataset.runs.values())
    scenario_names = sorted({r.scenario_name for r in runs})
    table, notes = _headline_table(headline, len(runs))
    return ReportModel(
        title=title or f"bench report: {', '.join(scenario_names)}",
        generated_at_utc=utc_now_iso(),
        bench_version=__version__,
        banners=_banners(dataset, frame, statuses),
        summary=_summary(dataset, frame, statuses),
        sections=sections,
        headline=table,
        headline_notes=notes,
        verdicts=_verdicts_table(comparison),
        links=list(links),
        downloads=list(downloads),
    )


# --- naming of groups in legends -------------------------------------------------------


class _Naming:
    """Legend labels, and the backends' order and colours.

    A label is the backend, plus the case and run only when there is more than one;
    order and colours come from the backends' mechanism class, never their names.
    """

    def __init__(self, dataset: Dataset, frame: pd.DataFrame) -> None:
        self.multi_run = len(dataset.runs) > 1
        self.short = _short_run_ids(list(dataset.runs))
        self.frame = frame
        self.order = BackendOrder.from_frame(frame)
        self.colours = self.order.colours()

    def label(self, run_id: str, backend: str, case: str = "", multi_case: bool = False) -> str:
        parts = [backend]
        if multi_case and case:
            parts.append(case)
        if self.multi_run:
            parts.append(self.short.get(run_id, run_id))
        return " · ".join(parts)


def _short_run_ids(run_ids: list[str]) -> dict[str, str]:
    """The random suffix of each run id (``dd2217``), or the whole id if suffixes clash."""
    short = {r: r.rsplit("-", 1)[-1] for r in run_ids}
    if len(set(short.values())) != len(short):
        return {r: r for r in run_ids}
    return short


# --- banners and the first screen ------------------------------------------------------


def _accel_decisions(run: RunInfo) -> list[str]:
    """The accelerator decisions any backend recorded in run.json (``tcg: <reason>``).

    A backend that chooses an accelerator records ``software.<backend>.accel`` as
    decisions keyed by what it decided for, each ``{"accel": ..., "reason": ...}``.
    """
    found = []
    for versions in (run.record.get("software") or {}).values():
        accel = versions.get("accel") if isinstance(versions, dict) else None
        if not isinstance(accel, dict):
            continue
        for decision in accel.values():
            if isinstance(decision, dict) and decision.get("accel"):
                found.append(f"{decision.get('accel')}: {decision.get('reason') or ''}".strip())
    return found


def _banners(dataset: Dataset, frame: pd.DataFrame, statuses: dict[str, str]) -> list[Note]:
    banners: list[Note] = []
    tcg_runs = []
    for run_id, run in dataset.runs.items():
        in_samples = False
        if not frame.empty and "label.accel" in frame.columns:
            mine = equals(frame["run_id"], run_id)
            in_samples = bool((mine & equals(frame["label.accel"], "tcg")).any())
        decided = any(d.startswith("tcg") for d in _accel_decisions(run))
        if in_samples or decided:
            tcg_runs.append(run)
    if tcg_runs:
        reasons = sorted({d for r in tcg_runs for d in _accel_decisions(r) if d.startswith("tcg")})
        detail = f"Runs affected: {', '.join(r.run_id for r in tcg_runs)}."
        if reasons:
            detail += f" Recorded reason: {reasons[0]}"
        banners.append(
            Note(
                "VMs ran under TCG (QEMU software emulation), NOT KVM: their figures are "
                "not hardware-virtualization figures; do not publish them as VM results.",
                "alert",
                detail,
            )
        )
    for run_id, status in statuses.items():
        if status != "complete":
            banners.append(Note(f"run {run_id} is {status}: its samples may be incomplete", "warn"))
    if not frame.empty:
        failed = int((~frame["ok"].to_numpy(dtype=bool)).sum())
        if failed:
            banners.append(
                Note(
                    f"{failed} measured sample(s) failed: counted, never averaged in",
                    "warn",
                )
            )
    if dataset.warnings:
        banners.append(
            Note(
                f"{len(dataset.warnings)} reading warning(s)",
                "warn",
                "\n".join(dataset.warnings),
            )
        )
    return banners


def _summary(
    dataset: Dataset, frame: pd.DataFrame, statuses: dict[str, str]
) -> list[tuple[str, str]]:
    """The one-line context of the first screen: host, kernel, scenario, status, samples."""
    runs = list(dataset.runs.values())
    hosts = sorted({r.hostname for r in runs})
    kernels = sorted({r.kernel_release for r in runs})
    scenarios = sorted({r.scenario_name for r in runs})
    accels = sorted({a.split(":")[0].upper() for r in runs for a in _accel_decisions(r)})
    states = sorted(set(statuses.values()))
    started = sorted(str(r.record.get("started_at_utc") or "") for r in runs)
    when = started[0][:16].replace("T", " ") if started and started[0] else "?"
    if len(runs) > 1 and started[-1]:
        when += f" to {started[-1][:16].replace('T', ' ')}"
    return [
        ("host", ", ".join(hosts)),
        ("kernel", ", ".join(kernels)),
        ("scenario", ", ".join(scenarios)),
        ("runs", f"{len(runs)} ({', '.join(states)})"),
        ("started (UTC)", when),
        ("VMs", "/".join(accels) if accels else "n/a"),
        ("samples", f"{len(frame)} measured"),
    ]


def _startup_cell(row: BackendHeadline) -> Cell:
    if row.startup is None:
        return Cell("-")
    s = row.startup
    sub = f"p95 {format_quantity(s.p95_s, 's')}"
    if not row.is_native and "startup" in row.multiples:
        sub += f" · {multiple_text(row.multiples['startup'])}"
    if s.failed:
        sub += f" · {s.failed} failed"
    return Cell(format_quantity(s.median_s, "s"), sub, css="fail" if s.failed else "")


def _memory_cell(row: BackendHeadline) -> Cell:
    m = row.memory
    if m is None:
        return Cell("-")
    text = format_quantity(m.pss_mib, "MiB") if m.pss_mib is not None else "-"
    if row.is_native:
        sub = "the floor"
    elif m.pss_overhead_mib is None:
        sub = ""
    elif m.overhead_distinguishable:
        sub = f"+{format_quantity(m.pss_overhead_mib, 'MiB')}"
    else:
        sub = "≈ native"
    if not row.is_native and "memory" in row.multiples:
        sub += f" · {multiple_text(row.multiples['memory'])}"
    detail = ""
    if m.slope_overhead_mib is not None:
        low, high = m.slope_ci_mib
        ci = f" [{low:+.1f}, {high:+.1f}] MiB" if low is not None and high is not None else ""
        finding = m.slope_finding or "distinguishable from 0"
        if "not distinguishable" in finding or "below native" in finding:
            detail = (
                f"MemAvailable slope over native: {finding} (estimate "
                f"{m.slope_overhead_mib:+.1f} MiB{ci}, 95% CI)"
            )
        else:
            detail = f"MemAvailable slope over native: {m.slope_overhead_mib:+.1f} MiB{ci} (95% CI)"
    return Cell(text, sub.strip(" ·"), detail)


def _density_cell(row: BackendHeadline) -> Cell:
    d = row.density
    if d is None:
        return Cell("-")
    sub = d.stop_reason
    if d.knee_count is not None:
        sub += f" · knee {d.knee_count}"
    return Cell(f"{d.count:.0f}", sub, d.stop_detail)


def _limits_cell(row: BackendHeadline) -> Cell:
    lim = row.limits
    if lim is None:
        return Cell("-")
    text = f"{lim.enforced} of {lim.applicable}" if lim.applicable else "n/a"
    parts = []
    if lim.not_applicable:
        parts.append(f"{len(lim.not_applicable)} n/a")
    if lim.failed:
        parts.append("NOT: " + ", ".join(f.split(":")[0] for f in lim.failed))
    detail_lines = [f"{check}: not applicable: {reason}" for check, reason in lim.not_applicable]
    detail_lines += [f"not enforced: {text}" for text in lim.failed]
    css = "fail" if lim.failed else ("ok" if lim.applicable else "")
    return Cell(text, " · ".join(parts), "\n".join(detail_lines), css=css)


def _headline_table(rows: list[BackendHeadline], runs: int) -> tuple[Table | None, list[Note]]:
    """The summary table: one row per backend, only the columns something measured."""
    if not rows:
        return None, [Note(f"No measured samples: {NOT_MEASURED}.")]
    columns: list[tuple[str, Any]] = [
        (
            "backend · accel",
            lambda r: Cell(
                r.backend, f"{r.mechanism} · {r.accel}" if r.accel != "-" else r.mechanism
            ),
        ),
    ]
    if any(r.startup for r in rows):
        columns.append(("startup to READY: median, p95 · x native", _startup_cell))
    if any(r.memory for r in rows):
        columns.append(("memory per idle instance (PSS): + over native · x", _memory_cell))
    if any(r.density for r in rows):
        columns.append(("density: instances · stop reason", _density_cell))
    if any(r.limits for r in rows):
        columns.append(("limits enforced (n/a apart)", _limits_cell))
    body = [[get(row) for _, get in columns] for row in rows]
    absent = [
        name
        for name, present in (
            ("startup", any(r.startup for r in rows)),
            ("memory", any(r.memory for r in rows)),
            ("density", any(r.density for r in rows)),
            ("limits", any(r.limits for r in rows)),
        )
        if not present
    ]
    caption = (
        "Medians of measured samples (warmups excluded, failures counted apart); "
        "Nx = N times the native process; TCG = a VM under software emulation."
    )
    if runs > 1:
        caption += f" Pooled over {runs} runs; the verdicts compare them."
    notes = []
    if absent:
        notes.append(Note(f"Not measured here: {', '.join(absent)}."))
    if not any(r.is_native for r in rows):
        notes.append(Note("No native backend in these runs: no multiples of native.", "warn"))
    return Table([name for name, _ in columns], body, caption), notes


def _verdict_cells(row: ComparisonRow) -> list[CellValue]:
    return [
        _what(row, False),
        format_quantity(row.median_baseline, row.unit),
        format_quantity(row.median_contender, row.unit),
        format_difference(row),
        Cell(row.verdict, css=f"outcome-{row.outcome.split(' ')[0]}"),
    ]


def _verdicts_table(comparisons: list[tuple[str, ComparisonReport]]) -> Table | None:
    """The first screen's verdicts: judged rows first, at most ``FIRST_SCREEN_VERDICTS``."""
    rows = [
        row
        for _, report in comparisons
        for row in report.rows
        if row.stage == VALUE_STAGE and row.outcome not in {"missing"}
    ]
    if not rows:
        return None
    decisive = {"slower", "faster", "larger", "smaller", "higher", "lower"}
    metrics = ("startup", "memory", "density", "limits")
    headline_views = {"", "pss", "count_reached", "memavailable_slope_overhead"}

    def priority(row: ComparisonRow) -> tuple[int, int, int, str]:
        return (
            0 if row.outcome.split(" ")[0] in decisive else 1,
            0 if row.view in headline_views else 1,
            metrics.index(row.metric) if row.metric in metrics else len(metrics),
            row_title(row),
        )

    rows.sort(key=priority)
    shown = rows[:FIRST_SCREEN_VERDICTS]
    caption = (
        f"Each run against the first of its scenario (block-level 95% t interval; "
        f"{len(rows)} quantities, all in the comparison section below)."
    )
    return Table(
        ["what", "baseline", "contender", "difference", "verdict"],
        [_verdict_cells(r) for r in shown],
        caption,
        frozenset({1, 2, 3}),
    )


# --- host and run facts ----------------------------------------------------------------

_FACT_ROWS: tuple[tuple[str, str], ...] = (
    ("host", "hostname"),
    ("scenario", "scenario.name"),
    ("status", "status"),
    ("started (UTC)", "started_at_utc"),
    ("kernel", "kernel.release"),
    ("distro", "distro.pretty_name"),
    ("CPU", "cpu.model"),
    ("logical cores", "cpu.logical_cores"),
    ("virtualised host", "cpu.virtualized"),
    ("memory total", "memory.total_bytes"),
    ("cgroup version", "cgroup.version"),
    ("cgroup layout", "cgroup.mode"),
    ("KSM run", "ksm.run"),
    ("THP enabled", "thp.enabled"),
    ("CPU governor", "cpu_governor"),
    ("cpuidle driver", "cpuidle.driver"),
    ("/dev/kvm present", "kvm.dev_kvm_present"),
    ("load at start (1m)", "load_start.loadavg.1m"),
    ("load at end (1m)", "load_end.loadavg.1m"),
    ("bench version", "bench.version"),
    ("bench git revision", "bench.git_revision"),
)


def _fact_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _long(text: str, limit: int = 60) -> CellValue:
    """A cell for text that may be long: folded into a details element past ``limit``."""
    if len(text) <= limit:
        return text
    return Cell(text[: limit - 1].rstrip() + "…", detail=text)


def _facts_section(dataset: Dataset, statuses: dict[str, str]) -> Section:
    runs = list(dataset.runs.values())
    rows: list[list[CellValue]] = []
    for label, path in _FACT_ROWS:
        if path == "status":
            rows.append([label, *(statuses.get(run.run_id, run.status) for run in runs)])
            continue
        values = [fact(run, path) for run in runs]
        if path == "memory.total_bytes":
            texts = [format_quantity(v, "bytes") if isinstance(v, int) else "-" for v in values]
        else:
            texts = [_fact_text(v) for v in values]
        rows.append([label, *(_long(t) for t in texts)])
    counts = [(run.record.get("counts") or {}) for run in runs]
    rows.append(
        ["samples / failed", *(f"{c.get('samples', '-')} / {c.get('failed', '-')}" for c in counts)]
    )
    software_keys: dict[str, None] = {}
    for run in runs:
        for backend, versions in (run.record.get("software") or {}).items():
            if isinstance(versions, dict):
                for key, value in versions.items():
                    if not isinstance(value, dict):
                        software_keys[f"{backend}.{key}"] = None
    for key in software_keys:
        rows.append([key, *(_long(_fact_text(fact(run, f"software.{key}"))) for run in runs)])
    if any(_accel_decisions(run) for run in runs):
        rows.append(
            ["VM accelerator", *(_long("; ".join(_accel_decisions(run)) or "-") for run in runs)]
        )
    items: list[Item] = [
        Table(["fact", *(run.run_id for run in runs)], rows, "Host facts recorded at run start.")
    ]
    for run in runs:
        cmdline = fact(run, "kernel.cmdline")
        if cmdline:
            items.append(Preformatted(f"kernel command line ({run.run_id})", str(cmdline)))
    return Section("facts", "Host and run facts", items, collapsed=True)


def _startup_section(
    frame: pd.DataFrame, stats: list[StatRow], naming: _Naming, ids: _Ids
) -> Section:
    section = Section("startup", "Startup to READY")
    data = _of_metric(frame, "startup")
    if data.empty:
        return _unmeasured(section, f"Startup: {NOT_MEASURED}.")
    cases = unique_text(data["case"])
    multi_case = len(cases) > 1
    for case in cases:
        in_case = equals(data["case"], case)
        part = data if in_case.all() else data[in_case]
        groups: list[tuple[str, Any]] = []
        frames: list[tuple[str, pd.DataFrame]] = []
        carried = [
            "run_id",
            "backend",
            "value",
            *(c for c in part.columns if c.startswith("stage.")),
        ]
        for (run_id, backend), group in part[carried].groupby(
            ["run_id", "backend"], observed=True, sort=False
        ):
            label = naming.label(str(run_id), str(backend))
            groups.append((label, group["value"].to_numpy(dtype=np.float64)))
            frames.append((label, group))
        order = sorted(range(len(groups)), key=lambda i: naming.order.label_rank(groups[i][0]))
        groups = [groups[i] for i in order]
        frames = [frames[i] for i in order]
        suffix = f" ({case})" if multi_case else ""
        unit = str(part["unit"].iloc[0])
        segments = [figures.stage_segments(frame) for _, frame in frames]
        section.items.append(
            ids.plot(
                figures.startup_split_figure(frames, f"Where startup goes{suffix}", segments),
                "Each bar is the median to READY; its parts are the stages in their mean "
                "share of it (the means of the stages add up to the mean total). A guest's "
                "boot is split at the kernel's first console line and the init's userspace "
                "marker, both stamped by the host as it reads them.",
            )
        )
        section.items.append(
            ids.plot(
                figures.distribution_figure(
                    groups, unit, f"Startup to READY{suffix}", naming.colours
                ),
                "Box: quartiles, whiskers to the last value within 1.5 IQR, dashed line = mean.",
            )
        )
        section.items.append(
            ids.plot(
                figures.ecdf_figure(
                    groups, unit, f"Startup to READY, cumulative{suffix}", naming.colours
                ),
                "Empirical CDF: the fraction of instances READY within x.",
            )
        )
        section.items.append(
            ids.plot(
                figures.after_ready_figure(
                    frames, f"After READY (not part of startup){suffix}", segments
                ),
                "Exit, removal and teardown, each its own median: what an instance costs "
                "after it answered.",
            )
        )
        boot = _boot_table(frames)
        if boot is not None:
            section.items.append(boot)
    value_rows = [r for r in stats if r.metric == "startup" and r.stage == VALUE_STAGE]
    stage_rows = [r for r in stats if r.metric == "startup" and r.stage != VALUE_STAGE]
    details = Details("Statistics per backend and stage (n, CI of the median, IQR, p95, p99, CV)")
    details.items.append(
        _stats_table(
            value_rows,
            ["run", "backend", "case", "accel"],
            lambda r: [
                naming.short.get(r.run_id, r.run_id),
                r.backend,
                r.case,
                r.accel.upper() if r.accel == "tcg" else r.accel,
            ],
            "Startup to READY (measured samples; warmups excluded, failures counted apart).",
        )
    )
    if stage_rows:
        details.items.append(
            _stats_table(
                stage_rows,
                ["run", "backend", "case", "stage"],
                lambda r: [naming.short.get(r.run_id, r.run_id), r.backend, r.case, r.stage],
                "Every recorded stage (to_* are measured from the create call; others are "
                "the duration of that step).",
            )
        )
    section.items.append(details)
    return section


def _boot_table(frames: list[tuple[str, pd.DataFrame]]) -> Table | None:
    """A guest's boot in its three stages, medians, for the groups that have them."""
    rows: list[list[CellValue]] = []
    for label, part in frames:
        if "stage.to_userspace_s" not in part.columns:
            continue
        userspace = pd.to_numeric(part["stage.to_userspace_s"], errors="coerce")
        if not userspace.notna().any():
            continue
        rows.append(
            [
                label,
                *(
                    format_quantity(_median(part.get(f"stage.{stage}")), "s")
                    for stage in ("to_first_byte_s", "kernel_boot_s", "userspace_to_ready_s")
                ),
                format_quantity(_median(part["value"]), "s"),
            ]
        )
    if not rows:
        return None
    return Table(
        ["guest", "VMM + firmware", "kernel", "userspace", "to READY"],
        rows,
        "Medians of each stage: create call to the kernel's first console line (the VMM's "
        "start and the firmware), from it to the init's userspace marker (the kernel), "
        "and on to READY (userspace).",
        frozenset({1, 2, 3, 4}),
    )


def _median(values: Any) -> float | None:
    if values is None:
        return None
    clean = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return float(clean.median()) if len(clean) else None


# --- backends compared within each run -------------------------------------------------


def _what(row: ComparisonRow, with_case: bool) -> str:
    """A row's quantity: metric, backend, case (only when it tells rows apart), view, stage."""
    parts = [row.metric, row.backend]
    if with_case:
        parts.append(row.case)
    if row.view:
        parts.append(row.view)
    if row.stage != VALUE_STAGE:
        parts.append(row.stage)
    return " ".join(parts)


def _comparison_table(report: ComparisonReport, caption: str, with_run: bool) -> Table:
    columns = ["what", *RESULT_COLUMNS[: RESULT_COLUMNS.index("verdict") + 1]]
    if with_run:
        columns.insert(1, "run")
    rows: list[list[CellValue]] = []
    classes = []
    for row in report.rows:
        what = _what(
            row,
            len({(r.metric, r.case) for r in report.rows}) > len({r.metric for r in report.rows}),
        )
        if report.group_by == "backend":  # the baseline is named in the caption
            what = what.replace(f"{report.baseline} -> ", "")
        cells: list[CellValue] = [what, *figure_cells(row), row.verdict]
        if with_run:
            cells.insert(1, row.run_id[-6:])
        rows.append(cells)
        classes.append(f"outcome-{row.outcome.split(' ')[0]}")
    numeric_from = 2 if with_run else 1
    numeric = frozenset(range(numeric_from, numeric_from + 8))
    return Table(columns, rows, caption, numeric, classes, css="wide")


def _comparison_notes(report: ComparisonReport) -> list[Item]:
    """The comparison's notes (calibration used or not), load differences and warnings."""
    items: list[Item] = [Note(note) for note in report.notes]
    for label, load in report.load.items():
        if load.flagged:
            items.append(
                Note(
                    f"{label} vs {report.baseline}: background load differs "
                    f"({load.summary()}); its verdicts are not to be trusted",
                    "warn",
                )
            )
    warnings = condensed_warnings(report, limit=WARNINGS_MAX)
    if warnings:
        items.append(Note(f"{len(warnings)} kind(s) of warning", "warn", "\n".join(warnings)))
    return items


def _backends_section(dataset: Dataset) -> Section:
    section = Section("backends", "VM vs container vs native (backends compared within each run)")
    try:
        report = compare_dataset(dataset, "backend")
    except CompareError as exc:
        return _unmeasured(section, f"Nothing to compare: {exc}.")
    if not report.rows:
        return _unmeasured(section, "No quantity was measured by two backends of one run.")
    section.items.append(
        _comparison_table(
            report,
            f"Each backend against {report.baseline}, per run, block by block. "
            f"{method_text(report)}",
            with_run=len(dataset.runs) > 1,
        )
    )
    section.items.extend(_comparison_notes(report))
    return section


# --- memory ----------------------------------------------------------------------------


def _memory_section(
    frame: pd.DataFrame, stats: list[StatRow], naming: _Naming, ids: _Ids
) -> Section:
    section = Section("memory", "Memory per idle instance")
    data = _of_metric(frame, "memory")
    if data.empty:
        return _unmeasured(section, f"Memory overhead: {NOT_MEASURED}.")
    rows = [r for r in stats if r.metric == "memory" and r.stage == VALUE_STAGE]
    absolute_views = ("pss", "cgroup_usage", "memavailable_drop")
    per_backend: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.view in absolute_views and r.unit == "MiB":
            label = naming.label(r.run_id, r.backend, r.case, _multi_case(rows))
            per_backend.setdefault(label, {})[r.view] = r.stats.median
    if per_backend:
        ranked = sorted(per_backend.items(), key=lambda kv: naming.order.label_rank(kv[0]))
        section.items.append(
            ids.plot(
                figures.memory_log_figure(
                    ranked, "Memory per idle instance, three views", naming.colours
                ),
                "Log axis: a 0.1 MiB process and a 150 MiB guest on one scale. pss = PSS of "
                "the instance's host processes; cgroup_usage = its own cgroup; "
                "memavailable_drop = the host's MemAvailable drop / N. A value <= 0 cannot "
                "be drawn on a log axis (the table has it).",
            )
        )
    ledger = _ledger_items(data)
    section.items.extend(ledger)
    section.items.append(_overhead_table(rows, data, naming))
    details = Details("Statistics of every memory view and role")
    details.items.append(
        _stats_table(
            rows,
            ["run", "backend", "case", "view", "accel"],
            lambda r: [naming.short.get(r.run_id, r.run_id), r.backend, r.case, r.view, r.accel],
            "Views: pss = PSS of the instance's host processes (pss:<role> by process role), "
            "memavailable_drop = host MemAvailable drop / N, cgroup_usage / cgroup_peak = "
            "the instance's cgroup; *_overhead = that view minus the process baseline.",
        )
    )
    section.items.append(details)
    return section


def _mib(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"


def _ledger_items(frame: pd.DataFrame) -> list[Item]:
    rows = ledger_rows(frame)
    if not rows:
        return []
    body: list[list[CellValue]] = []
    for row in rows:
        notes = "; ".join(f"{k}: {v}" for k, v in row.notes.items())
        body.append(
            [
                Cell(row.backend, row.ksm and f"KSM {row.ksm}", notes),
                *(_mib(row.parts.get(name)) for name in PART_GROUPS.values()),
                _mib(row.total),
                _mib(row.memavailable_drop),
                _mib(row.unexplained),
            ]
        )
    return [
        Table(
            ["backend", *PART_GROUPS.values(), "total", "MemAvail drop", "unexplained"],
            body,
            "The ledger: MiB per idle instance (median over instances), part by part, and "
            "what MemAvailable lost beyond it (kernel memory, the engines' own state, noise).",
            frozenset(range(1, len(PART_GROUPS) + 4)),
        )
    ]


def _overhead_table(rows: list[StatRow], data: pd.DataFrame, naming: _Naming) -> Table:
    """Per backend: each view's overhead over native, and the MemAvailable slope's with CI."""
    overheads: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.view.endswith("_overhead") and ":" not in r.view:
            label = naming.label(r.run_id, r.backend, r.case, _multi_case(rows))
            overheads.setdefault(label, {})[r.view.removesuffix("_overhead")] = r.stats.median
    slopes: dict[str, str] = {}
    slope = data[data["_view"] == "memavailable_slope_overhead"]
    for _, record in slope.iterrows():
        label = naming.label(str(record["run_id"]), str(record["backend"]))
        low, high = _float(record.get("label.ci_low_mib")), _float(record.get("label.ci_high_mib"))
        value = _float(record["value"])
        text = f"{_mib(value)} [{_mib(low)}, {_mib(high)}]"
        finding = str(record.get("label.finding") or "")
        if low is not None and high is not None and low <= 0 <= high:
            finding = finding or "not distinguishable from 0"
        slopes[label] = f"{text} {finding}".strip()
    views = ["pss", "cgroup_usage", "memavailable_drop"]
    body: list[list[CellValue]] = []
    for label in sorted(set(overheads) | set(slopes), key=naming.order.label_rank):
        cells: list[CellValue] = [label]
        for view in views:
            value = overheads.get(label, {}).get(view)
            if value is None:
                cells.append("-")
            elif value <= 0:
                cells.append(Cell("≈ native", f"{value:+.2f} MiB: not an overhead"))
            else:
                cells.append(f"+{value:.2f} MiB")
        cells.append(_long(slopes.get(label, "-"), 40))
        body.append(cells)
    return Table(
        ["backend", "PSS", "cgroup usage", "MemAvailable drop / N", "MemAvailable slope [95% CI]"],
        body,
        "Overhead per instance over the native process (view minus the native median). A "
        "negative difference or a CI holding 0 is not a finding.",
        frozenset({1, 2, 3}),
    )


def _multi_case(rows: Sequence[StatRow]) -> bool:
    return len({r.case for r in rows}) > 1


# --- density ---------------------------------------------------------------------------


def _x_of(part: pd.DataFrame) -> np.ndarray[Any, Any]:
    for column in ("label.count_started", "label.step", "label.count_ready"):
        if column in part.columns:
            x = pd.to_numeric(part[column], errors="coerce").to_numpy(dtype=np.float64)
            if np.isfinite(x).any():
                return x
    return np.arange(1, len(part) + 1, dtype=np.float64)


def _density_section(frame: pd.DataFrame, naming: _Naming, ids: _Ids) -> Section:
    section = Section("density", "Density: instances added until a stop rule fired")
    data = _of_metric(frame, "density")
    if data.empty:
        return _unmeasured(section, f"Density: {NOT_MEASURED}.")
    multi_case = len(unique_text(data["case"])) > 1
    stops = data[data["_view"] == "count_reached"]
    stop_of: dict[tuple[str, str, str], Any] = {}
    for _, record in stops.iterrows():
        stop_of[(str(record["run_id"]), str(record["backend"]), str(record["case"]))] = record
    rules = {
        "startup_s": ("label.slo_p99_s", "SLO p99 {:.3g} s", 1.0),
        "mem_available": ("label.mem_floor_mib", "floor {:.0f} MiB", 1.0),
    }
    plots = (
        ("startup_s", "Startup vs N: running p50 and p99 of the instances so far", "startup", True),
        ("mem_available", "Host MemAvailable vs N", "MemAvailable", False),
        ("total_pss", "PSS per instance vs N (total PSS / instances READY)", "PSS/instance", False),
    )
    for view, title, y_title, running in plots:
        part = data[data["_view"] == view]
        if part.empty:
            continue
        ramps = []
        rule_value: float | None = None
        rule_text = ""
        unit = str(part["unit"].iloc[0])
        for (run_id, backend, case), group in part.groupby(
            ["run_id", "backend", "case"], observed=True, sort=False
        ):
            x = _x_of(group)
            y = group["value"].to_numpy(dtype=np.float64)
            if view == "total_pss":
                n = x
                if "label.count_ready" in group.columns:
                    ready = pd.to_numeric(group["label.count_ready"], errors="coerce")
                    n = ready.to_numpy(dtype=np.float64)
                with np.errstate(divide="ignore", invalid="ignore"):
                    y = np.where(n > 0, y / n, np.nan)
            stopped = stop_of.get((str(run_id), str(backend), str(case)))
            stop = ""
            if stopped is not None:
                stop = f"{stopped.get('label.stop_reason')} at {float(stopped['value']):.0f}"
                if view in rules:
                    value = _float(stopped.get(rules[view][0]))
                    if value is not None:
                        rule_value, rule_text = value, rules[view][1].format(value)
            label = naming.label(str(run_id), str(backend), str(case), multi_case)
            ramps.append((label, x, y, stop))
        ramps.sort(key=lambda c: naming.order.label_rank(c[0]))
        rule = None
        if rule_value is not None:
            rule = (rule_value / (1024.0 if unit == "GiB" else 1.0), rule_text)
        section.items.append(
            ids.plot(
                figures.ramp_figure(
                    ramps,
                    title=title,
                    unit=unit,
                    y_title=y_title,
                    rule=rule,
                    colours=naming.colours,
                    running_percentiles=running,
                )
            )
        )
    if not stops.empty:
        rows: list[list[CellValue]] = []
        for _, record in stops.iterrows():
            knee = _float(record.get("label.knee_count"))
            rows.append(
                [
                    naming.label(str(record["run_id"]), str(record["backend"]), "", False),
                    f"{float(record['value']):.0f}",
                    Cell(
                        _fact_text(record.get("label.stop_reason")),
                        detail=str(record.get("label.stop_detail") or ""),
                    ),
                    "-" if knee is None else f"{knee:.0f}",
                    _fact_text(record.get("label.failures")),
                    format_quantity(_float(record.get("label.p99_startup_s")), "s"),
                    format_quantity(_float(record.get("label.harness_rss_max_mib")), "MiB"),
                ]
            )
        section.items.append(
            Table(
                [
                    "backend",
                    "count reached",
                    "stop reason",
                    "knee (N)",
                    "failures",
                    "p99 startup",
                    "harness RSS max",
                ],
                rows,
                "Why each ramp stopped (host_oom, max_count, mem_floor, slo_p99, error_rate; "
                "the detail gives the figures), and the knee of its startup curve.",
                frozenset({1, 3, 4, 5, 6}),
            )
        )
    return section


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


# --- limits ----------------------------------------------------------------------------


def _set_cell(set_value: float | None, set_unit: str, evidence: Any) -> CellValue:
    """The value a limit was set to, and how it was derived from the scenario's value."""
    if set_value is None:
        return "-"
    text = f"{set_value:g} {set_unit}"
    if not isinstance(evidence, dict) or "derivation" not in evidence:
        return text
    footprint = _float(evidence.get("calibration_anon_peak_mib"))
    headroom = _float(evidence.get("headroom_mib"))
    sub = ""
    if footprint is not None and headroom is not None:
        sub = f"= {footprint:.1f} MiB runtime + {headroom:g} MiB, rounded up"
    return Cell(text, sub, str(evidence.get("derivation")))


def _limits_section(frame: pd.DataFrame, naming: _Naming, ids: _Ids) -> Section:
    section = Section("limits", "Limit enforcement (does the limit hold, measured)")
    data = _of_metric(frame, "limits")
    if data.empty:
        return _unmeasured(section, f"Limit enforcement: {NOT_MEASURED}.")
    rows: list[list[CellValue]] = []
    classes = []
    plots: list[Item] = []
    for _, record in data.iterrows():
        enforced = record.get("label.enforced")
        applicable = record.get("label.applicable")
        evidence = record.get("label.evidence")
        if not bool(record["ok"]):
            verdict, css = "NO (check failed)", "outcome-fail"
        elif (
            applicable is False
            or enforced is None
            or (isinstance(enforced, float) and math.isnan(enforced))
        ):
            verdict, css = "n/a", "outcome-na"
        elif bool(enforced):
            verdict, css = "yes", "outcome-ok"
        else:
            verdict, css = "NO", "outcome-fail"
        set_value = _float(record.get("label.set_value"))
        set_unit = _fact_text(record.get("label.set_unit"))
        value = _float(record.get("value"))
        reason = evidence.get("reason") if isinstance(evidence, dict) else None
        note = record.get("label.verdict_note")
        verdict_cell: CellValue = verdict
        if verdict == "n/a" and reason:
            verdict_cell = Cell(verdict, detail=str(reason))
        elif isinstance(note, str) and note:
            # how the verdict was reached (a CPU quota under contention says so)
            verdict_cell = Cell(verdict, note)
        error = _fact_text(record.get("error")) if not bool(record["ok"]) else ""
        rows.append(
            [
                naming.label(str(record["run_id"]), str(record["backend"])),
                str(record["_view"]),
                _set_cell(set_value, set_unit, evidence),
                "-" if value is None else f"{value:.4g} {record['unit']}",
                verdict_cell,
                _long(_evidence_text(evidence) + (f" error: {error}" if error else ""), 32),
            ]
        )
        classes.append(css)
        series = record.get("label.series")
        if isinstance(series, dict) and series and len(plots) < LIMIT_PLOTS_MAX:
            name = naming.label(str(record["run_id"]), str(record["backend"]))
            title = f"{record['_view']} limit, {name}: usage vs limit ({verdict})"
            items = [(str(k), v) for k, v in series.items() if isinstance(v, list)]
            plots.append(ids.plot(figures.series_figure(items, set_value, set_unit, title)))
    section.items.append(
        Table(
            ["backend", "check", "set", "measured", "enforced", "evidence"],
            rows,
            "memory: peak usage vs the limit and an OOM kill by the cgroup; memory_control: "
            "an allocation under the limit must survive; cpu: cores used vs the quota and "
            "throttling; pids: forks refused at the limit. Where the limited cgroup also "
            "holds the runtime (a VMM, gVisor's Sentry), the set value is its calibrated "
            "footprint plus the scenario's limit. n/a = the limit does not apply, with why.",
            frozenset({2, 3}),
            classes,
        )
    )
    section.items.extend(plots)
    return section


def _evidence_text(evidence: Any) -> str:
    if not isinstance(evidence, dict):
        return ""
    parts = []
    for key, value in evidence.items():
        if isinstance(value, dict | list) or key in {"cgroup", "output", "derivation", "reason"}:
            continue
        parts.append(f"{key}={value}")
    return ", ".join(parts[:10])


# --- cross-run comparison --------------------------------------------------------------


def _cross_run_comparisons(
    dataset: Dataset, compare_by: str, baseline: str | None
) -> list[tuple[str, ComparisonReport]]:
    """Comparisons across runs: by a fact, one over all runs; by run, one per scenario.

    Runs of different scenarios are never each other's "missing" rows.
    """
    if len(dataset.runs) < 2:
        return []
    if compare_by != "run":
        try:
            return [(compare_by, compare_dataset(dataset, compare_by, baseline=baseline))]
        except CompareError:
            return []
    by_scenario: dict[str, list[str]] = {}
    for run_id, run in dataset.runs.items():
        by_scenario.setdefault(run.scenario_sha256, []).append(run_id)
    reports = []
    for run_ids in by_scenario.values():
        if len(run_ids) < 2:
            continue
        subset = Dataset(
            dataset.samples[isin(dataset.samples["run_id"], run_ids)],
            {r: dataset.runs[r] for r in run_ids},
            dataset.warnings,
        )
        wanted = baseline if baseline in run_ids else None
        try:
            report = compare_dataset(subset, "run", baseline=wanted)
        except CompareError:
            continue
        reports.append((dataset.runs[run_ids[0]].scenario_name, report))
    return reports


def _comparison_section(
    dataset: Dataset, comparisons: list[tuple[str, ComparisonReport]], compare_by: str
) -> Section:
    what = "runs" if compare_by == "run" else compare_by
    section = Section("comparison", f"Comparison across {what}")
    if len(dataset.runs) < 2:
        return _unmeasured(
            section,
            "One run: nothing to compare across runs. Give several runs "
            "(or --compare-by kernel) to compare.",
        )
    if not comparisons:
        return _unmeasured(
            section, "No two runs of one scenario: runs of different scenarios are not compared."
        )
    for name, report in comparisons:
        for label, reasons in report.incomparable.items():
            section.items.append(
                Note(f"{label}: incomparable with {report.baseline}", "warn", "; ".join(reasons))
            )
        missing = [r for r in report.rows if r.outcome == "missing"]
        shown = ComparisonReport(
            report.group_by,
            report.baseline,
            report.groups,
            [r for r in report.rows if r.outcome != "missing"],
            report.incomparable,
            report.settings,
            report.load,
            report.notes,
        )
        section.items.append(
            _comparison_table(
                shown,
                f"{name}: baseline {report.baseline}. {method_text(report)}",
                False,
            )
        )
        if missing:
            section.items.append(
                Note(f"{len(missing)} quantities measured on one side only (not compared).")
            )
        section.items.extend(_comparison_notes(report))
    return section


# --- statistics tables, warnings and scenarios -----------------------------------------


def _stat_cells(row: StatRow) -> list[str]:
    s, unit = row.stats, row.unit
    return [
        str(s.n),
        str(row.failed),
        format_quantity(s.median, unit),
        f"{format_quantity(s.ci_low, unit)} - {format_quantity(s.ci_high, unit)}",
        format_quantity(s.iqr, unit),
        format_quantity(s.p95, unit),
        format_quantity(s.p99, unit),
        format_quantity(s.minimum, unit),
        format_quantity(s.maximum, unit),
        (f"{s.cv:.1%}" if math.isfinite(s.cv) else "-") + (" unstable" if s.unstable else ""),
    ]


_STAT_COLUMNS = [
    "n",
    "failed",
    "median",
    "95% CI of median",
    "IQR",
    "p95",
    "p99",
    "min",
    "max",
    "CV",
]


def _stats_table(rows: Iterable[StatRow], lead: Sequence[str], lead_of: Any, caption: str) -> Table:
    body: list[list[CellValue]] = []
    classes = []
    for row in rows:
        body.append([*lead_of(row), *_stat_cells(row)])
        classes.append("unstable" if row.stats.unstable or row.stats.warnings else "")
    first = len(lead)
    numeric = frozenset(range(first, first + len(_STAT_COLUMNS)))
    return Table([*lead, *_STAT_COLUMNS], body, caption, numeric, classes, css="wide")


def _stability_section(stats: list[StatRow], dataset: Dataset, noise: pd.DataFrame) -> Section:
    """At most ``WARNINGS_MAX`` warnings a user can act on, each kind said once."""
    section = Section("stability", "Warnings", collapsed=True)
    if not stats:
        return _unmeasured(section, f"No statistics: {NOT_MEASURED}.")
    messages = busy_block_warnings(noise, limit=2) + stability_messages(stats)
    if not messages:
        section.items.append(
            Note(
                "No warnings: enough samples everywhere, no cluster of outliers, and no block "
                "ran while something else kept the host busy."
            )
        )
        return section
    shown = messages[:WARNINGS_MAX]
    section.title = f"Warnings ({len(messages)})"
    for text in shown:
        section.items.append(Note(text, "warn"))
    if len(messages) > len(shown):
        section.items.append(Note(f"{len(messages) - len(shown)} more warning(s) not shown."))
    unstable = sum(1 for r in stats if r.stage == VALUE_STAGE and r.stats.unstable)
    if unstable:
        section.items.append(
            Note(
                f"{unstable} quantities have a CV >= 10% (marked in the tables): their spread "
                "is what the comparisons' block statistics account for, not a fault."
            )
        )
    return section


def stability_messages(stats: Sequence[StatRow]) -> list[str]:
    """Per-quantity warnings merged by kind: one line per kind, naming an example."""
    kinds: dict[str, list[StatRow]] = {}
    for row in stats:
        if row.stage != VALUE_STAGE:
            continue  # a stage repeats its sample's warning
        for warning in row.stats.warnings:
            kind = "outliers" if "outliers" in warning else warning.split(":")[0]
            kinds.setdefault(kind, []).append(row)
    messages = []
    for kind, rows in sorted(kinds.items(), key=lambda item: -len(item[1])):
        example = f"{rows[0].metric} {rows[0].backend} {rows[0].view}".strip()
        if kind == "too few samples":
            lowest = min(r.stats.n for r in rows)
            messages.append(
                f"too few samples in {len(rows)} quantities (as few as {lowest}, e.g. "
                f"{example}): raise samples, or memory instances x rounds"
            )
        elif kind == "outliers":
            share = max(r.stats.outliers / r.stats.n for r in rows)
            messages.append(
                f"outliers in {len(rows)} quantities (up to {share:.0%} of samples, e.g. "
                f"{example}): something disturbed those runs; rerun on a quiet host"
            )
        else:
            messages.append(f"{kind} in {len(rows)} quantities (e.g. {example})")
    return messages


def _scenario_section(dataset: Dataset) -> Section:
    section = Section("scenario", "Scenario text", collapsed=True)
    seen: dict[str, list[str]] = {}
    texts: dict[str, RunInfo] = {}
    for run_id, run in dataset.runs.items():
        seen.setdefault(run.scenario_sha256, []).append(run_id)
        texts.setdefault(run.scenario_sha256, run)
    for sha, run in texts.items():
        source = (run.record.get("scenario") or {}).get("source") or "?"
        heading = f"{run.scenario_name} ({source}; sha256 {sha[:16]}; runs: {', '.join(seen[sha])})"
        section.items.append(
            Preformatted(heading, run.scenario_text or "(no scenario text recorded)")
        )
    return section
