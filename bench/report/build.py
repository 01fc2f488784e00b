"""The report's content: sections of tables, plots and notes built from a Dataset.

Pure data, no HTML: ``build_report`` returns a ``ReportModel`` the jinja2 template
renders (and tests inspect). Every section renders from the samples it needs when they
are present (metric ``startup``, ``memory``, ``density``, ``limits``) and says "not
measured in these runs" when they are absent, so one template serves a quick startup
run and a full suite alike. Strings from scenarios and hosts are kept as plain text here;
escaping is the template's job (autoescape), and plot JSON is escaped for <script> by
``figure_json``.
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
from bench.analysis.compare import (
    RESULT_COLUMNS,
    CompareError,
    ComparisonReport,
    compare_dataset,
    condensed_warnings,
    method_text,
    result_cells,
    row_title,
)
from bench.analysis.dataset import Dataset, RunInfo, fact
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
_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


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
    rows: list[list[str]]
    caption: str = ""
    numeric: frozenset[int] = frozenset()
    row_classes: list[str] = field(default_factory=list)
    kind: str = "table"


@dataclass
class Note:
    """A paragraph of text; ``level`` is info, warn or alert."""

    text: str
    level: str = "info"
    kind: str = "note"


@dataclass
class Preformatted:
    """Verbatim text (scenario files, kernel command lines) with a heading."""

    heading: str
    text: str
    kind: str = "pre"


Item = Plot | Table | Note | Preformatted


@dataclass
class Section:
    """One titled part of the report."""

    id: str
    title: str
    items: list[Item] = field(default_factory=list)
    measured: bool = True


@dataclass
class ReportModel:
    """Everything the template renders."""

    title: str
    generated_at_utc: str
    bench_version: str
    banners: list[Note]
    summary: list[tuple[str, str]]
    sections: list[Section]

    @property
    def plots(self) -> list[Plot]:
        """Every plot in the report, in order."""
        return [i for s in self.sections for i in s.items if isinstance(i, Plot)]


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
    return frame[frame["metric"].astype(str) == metric] if not frame.empty else frame


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
) -> ReportModel:
    """Build the report model of one or more runs (see the module docstring)."""
    if not dataset.runs:
        raise CompareError("no runs to report on")
    all_measured = measured(dataset.samples)
    frame = without_noise(all_measured)
    if not frame.empty:
        frame = frame.assign(_view=view_labels(frame))
    ok = frame[frame["ok"].to_numpy(dtype=bool)] if not frame.empty else frame
    stats = summarize_stats(dataset.samples, stages=True) if not frame.empty else []
    ids = _Ids()
    naming = _Naming(dataset, ok)
    sections = [
        _facts_section(dataset),
        _startup_section(ok, stats, naming, ids),
        _backends_section(dataset),
        _memory_section(ok, stats, naming, ids),
        _density_section(ok, naming, ids),
        _limits_section(frame, naming, ids),
        _comparison_section(dataset, compare_by, baseline),
        _stability_section(stats, dataset, noise_table(all_measured)),
        _scenario_section(dataset),
    ]
    runs = list(dataset.runs.values())
    scenario_names = sorted({r.scenario_name for r in runs})
    return ReportModel(
        title=title or f"bench report: {', '.join(scenario_names)}",
        generated_at_utc=utc_now_iso(),
        bench_version=__version__,
        banners=_banners(dataset, frame),
        summary=_summary(dataset, frame),
        sections=sections,
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


# --- banners and summary ---------------------------------------------------------------


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


def _banners(dataset: Dataset, frame: pd.DataFrame) -> list[Note]:
    banners: list[Note] = []
    tcg_runs = []
    for run_id, run in dataset.runs.items():
        in_samples = False
        if not frame.empty and "label.accel" in frame.columns:
            part = frame[frame["run_id"].astype(str) == run_id]
            in_samples = bool((part["label.accel"].astype(str) == "tcg").any())
        decided = any(d.startswith("tcg") for d in _accel_decisions(run))
        if in_samples or decided:
            tcg_runs.append(run)
    if tcg_runs:
        reasons = sorted({d for r in tcg_runs for d in _accel_decisions(r) if d.startswith("tcg")})
        text = (
            "VMs in this report ran under TCG (QEMU software emulation), NOT KVM. Their "
            "startup, memory and density figures are not hardware-virtualization figures "
            "and must not be published as VM-vs-container results. "
            f"Runs affected: {', '.join(r.run_id for r in tcg_runs)}."
        )
        if reasons:
            text += f" Recorded reason: {reasons[0]}"
        banners.append(Note(text, "alert"))
    for run_id, run in dataset.runs.items():
        if run.status != "complete":
            banners.append(
                Note(f"run {run_id} is {run.status}: its samples may be incomplete", "warn")
            )
    if not frame.empty:
        failed = int((~frame["ok"].to_numpy(dtype=bool)).sum())
        if failed:
            banners.append(
                Note(
                    f"{failed} measured sample(s) failed; they are counted, never averaged in "
                    "(see the tables' 'failed' columns)",
                    "warn",
                )
            )
    for warning in dataset.warnings:
        banners.append(Note(warning, "warn"))
    return banners


def _summary(dataset: Dataset, frame: pd.DataFrame) -> list[tuple[str, str]]:
    runs = list(dataset.runs.values())
    hosts = sorted({r.hostname for r in runs})
    kernels = sorted({r.kernel_release for r in runs})
    cgroups = sorted({_cgroup_text(r) for r in runs})
    accels = sorted({a for r in runs for a in _accel_decisions(r)}) or ["n/a (no VMs)"]
    metrics = sorted(frame["metric"].astype(str).unique()) if not frame.empty else []
    return [
        ("runs", str(len(runs))),
        ("hosts", ", ".join(hosts)),
        ("kernel", ", ".join(kernels)),
        ("cgroup", ", ".join(cgroups)),
        ("VM accelerator", "; ".join(a.split(":")[0].upper() for a in accels)),
        ("metrics", ", ".join(metrics) or "none"),
        ("samples (measured)", str(len(frame))),
    ]


def _cgroup_text(run: RunInfo) -> str:
    version = fact(run, "cgroup.version")
    mode = fact(run, "cgroup.mode")
    if version is None:
        return "?"
    return f"v{version}" + (f" ({mode})" if mode else "")


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


def _facts_section(dataset: Dataset) -> Section:
    runs = list(dataset.runs.values())
    rows = []
    for label, path in _FACT_ROWS:
        values = [fact(run, path) for run in runs]
        if path == "memory.total_bytes":
            texts = [format_quantity(v, "bytes") if isinstance(v, int) else "-" for v in values]
        else:
            texts = [_fact_text(v) for v in values]
        rows.append([label, *texts])
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
        rows.append([key, *(_fact_text(fact(run, f"software.{key}")) for run in runs)])
    if any(_accel_decisions(run) for run in runs):
        rows.append(["VM accelerator", *("; ".join(_accel_decisions(run)) or "-" for run in runs)])
    items: list[Item] = [
        Table(["fact", *(run.run_id for run in runs)], rows, "Host facts recorded at run start.")
    ]
    for run in runs:
        cmdline = fact(run, "kernel.cmdline")
        if cmdline:
            items.append(Preformatted(f"kernel command line ({run.run_id})", str(cmdline)))
    return Section("facts", "Host and run facts", items)


# --- startup ---------------------------------------------------------------------------


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
        f"{s.cv:.1%}" if math.isfinite(s.cv) else "-",
        "; ".join(s.warnings),
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
    "warnings",
]


def _stats_table(rows: Iterable[StatRow], lead: Sequence[str], lead_of: Any, caption: str) -> Table:
    body = []
    classes = []
    for row in rows:
        body.append([*lead_of(row), *_stat_cells(row)])
        classes.append("unstable" if row.stats.unstable or row.stats.warnings else "")
    first = len(lead)
    numeric = frozenset(range(first, first + len(_STAT_COLUMNS) - 1))
    return Table([*lead, *_STAT_COLUMNS], body, caption, numeric, classes)


def _startup_section(
    frame: pd.DataFrame, stats: list[StatRow], naming: _Naming, ids: _Ids
) -> Section:
    section = Section("startup", "Startup per backend")
    data = _of_metric(frame, "startup")
    if data.empty:
        return _unmeasured(section, f"Startup: {NOT_MEASURED}.")
    cases = list(pd.unique(data["case"].astype(str)))
    multi_case = len(cases) > 1
    for case in cases:
        part = data[data["case"].astype(str) == case]
        groups: list[tuple[str, Any]] = []
        frames: list[tuple[str, pd.DataFrame]] = []
        for (run_id, backend), group in part.groupby(
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
                figures.stage_breakdown_figure(frames, f"Where the time goes{suffix}"),
                "Median of each segment between consecutive recorded stamps; the medians of "
                "segments need not add up to the median total.",
            )
        )
    value_rows = [r for r in stats if r.metric == "startup" and r.stage == VALUE_STAGE]
    section.items.append(
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
    stage_rows = [r for r in stats if r.metric == "startup" and r.stage != VALUE_STAGE]
    if stage_rows:
        section.items.append(
            _stats_table(
                stage_rows,
                ["run", "backend", "case", "stage"],
                lambda r: [naming.short.get(r.run_id, r.run_id), r.backend, r.case, r.stage],
                "Every recorded stage (to_* are measured from the create call; others are "
                "the duration of that step).",
            )
        )
    return section


# --- backends compared within each run -------------------------------------------------


def _comparison_table(report: ComparisonReport, caption: str, with_run: bool) -> Table:
    columns = ["what", "baseline", "contender", *RESULT_COLUMNS]
    if with_run:
        columns.insert(1, "run")
    rows = []
    classes = []
    for row in report.rows:
        cells = [row_title(row), row.baseline, row.contender, *result_cells(row)]
        if with_run:
            cells.insert(1, row.run_id)
        rows.append(cells)
        classes.append(f"outcome-{row.outcome.split(' ')[0]}")
    numeric_from = 4 if with_run else 3
    return Table(columns, rows, caption, frozenset(range(numeric_from, numeric_from + 6)), classes)


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
        items.append(Note("Warnings: " + " · ".join(warnings), "warn"))
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
    section = Section("memory", "Memory overhead per instance")
    data = _of_metric(frame, "memory")
    if data.empty:
        return _unmeasured(section, f"Memory overhead: {NOT_MEASURED}.")
    rows = [r for r in stats if r.metric == "memory" and r.stage == VALUE_STAGE]
    for title, wanted in (
        ("Overhead per instance (view minus the process baseline)", True),
        ("Memory per instance, each view", False),
    ):
        chosen = [r for r in rows if r.view.endswith("_overhead") == wanted and ":" not in r.view]
        if not chosen:
            continue
        views = list(dict.fromkeys(r.view for r in chosen))
        series_names: dict[str, dict[str, StatRow]] = {}
        for r in chosen:
            series_names.setdefault(
                naming.label(r.run_id, r.backend, r.case, _multi_case(chosen)), {}
            )[r.view] = r
        series = []
        ranked = sorted(series_names.items(), key=lambda kv: naming.order.label_rank(kv[0]))
        for name, by_view in ranked:
            picked = [by_view.get(v) for v in views]
            series.append(
                (
                    name,
                    [p.stats.median if p else math.nan for p in picked],
                    [p.stats.ci_low if p else math.nan for p in picked],
                    [p.stats.ci_high if p else math.nan for p in picked],
                )
            )
        unit = chosen[0].unit
        section.items.append(
            ids.plot(figures.bar_figure(views, series, unit, title, naming.colours))
        )
    section.items.append(
        _stats_table(
            rows,
            ["run", "backend", "case", "view", "accel"],
            lambda r: [naming.short.get(r.run_id, r.run_id), r.backend, r.case, r.view, r.accel],
            "Views: pss = PSS of the instance's host processes (pss:<role> by process role), "
            "memavailable_drop = host MemAvailable drop / N, cgroup_usage / cgroup_peak = "
            "the instance's cgroup; *_overhead = that view minus the process baseline.",
        )
    )
    return section


def _multi_case(rows: Sequence[StatRow]) -> bool:
    return len({r.case for r in rows}) > 1


# --- density ---------------------------------------------------------------------------


def _x_of(part: pd.DataFrame) -> tuple[np.ndarray[Any, Any], str]:
    for column, title in (("label.count_ready", "instances READY (N)"), ("label.step", "step (N)")):
        if column in part.columns:
            x = pd.to_numeric(part[column], errors="coerce").to_numpy(dtype=np.float64)
            if np.isfinite(x).any():
                return x, title
    return np.arange(1, len(part) + 1, dtype=np.float64), "sample order"


def _density_section(frame: pd.DataFrame, naming: _Naming, ids: _Ids) -> Section:
    section = Section("density", "Density: instances added until a stop rule fired")
    data = _of_metric(frame, "density")
    if data.empty:
        return _unmeasured(section, f"Density: {NOT_MEASURED}.")
    multi_case = data["case"].astype(str).nunique() > 1
    plots = (
        ("startup_s", "Startup latency of the newest instance vs N", False),
        ("total_pss", "PSS per instance vs N (total PSS / instances READY)", True),
        ("mem_available", "Host MemAvailable vs N", False),
        ("harness_rss", "bench's own RSS vs N", False),
    )
    for view, title, per_instance in plots:
        part = data[data["_view"] == view]
        if part.empty:
            continue
        curves = []
        x_title = "N"
        unit = str(part["unit"].iloc[0])
        for (run_id, backend, case), group in part.groupby(
            ["run_id", "backend", "case"], observed=True, sort=False
        ):
            x, x_title = _x_of(group)
            y = group["value"].to_numpy(dtype=np.float64)
            if per_instance:
                with np.errstate(divide="ignore", invalid="ignore"):
                    y = np.where(x > 0, y / x, np.nan)
            curves.append((naming.label(str(run_id), str(backend), str(case), multi_case), x, y))
        curves.sort(key=lambda c: naming.order.label_rank(c[0]))
        section.items.append(
            ids.plot(figures.curve_figure(curves, x_title, unit, title, naming.colours))
        )
    stops = data[data["_view"] == "count_reached"]
    if not stops.empty:
        rows = []
        for _, record in stops.iterrows():
            rows.append(
                [
                    naming.short.get(str(record["run_id"]), str(record["run_id"])),
                    str(record["backend"]),
                    str(record["case"]),
                    format_quantity(float(record["value"]), str(record["unit"])),
                    _fact_text(record.get("label.stop_reason")),
                    _fact_text(record.get("label.count_started")),
                    _fact_text(record.get("label.failures")),
                    format_quantity(_float(record.get("label.p99_startup_s")), "s"),
                    format_quantity(_float(record.get("label.harness_rss_max_mib")), "MiB"),
                    format_quantity(_float(record.get("label.teardown_s")), "s"),
                ]
            )
        section.items.append(
            Table(
                [
                    "run",
                    "backend",
                    "case",
                    "count reached",
                    "stop reason",
                    "started",
                    "failures",
                    "p99 startup",
                    "harness RSS max",
                    "teardown",
                ],
                rows,
                "Why each ramp stopped: max_count, mem_floor (host MemAvailable under the "
                "floor), slo_p99 (startup p99 over the SLO) or error_rate.",
                frozenset({3, 5, 6, 7, 8, 9}),
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


def _limits_section(frame: pd.DataFrame, naming: _Naming, ids: _Ids) -> Section:
    section = Section("limits", "Limit enforcement (does the limit hold, measured)")
    data = _of_metric(frame, "limits")
    if data.empty:
        return _unmeasured(section, f"Limit enforcement: {NOT_MEASURED}.")
    rows = []
    classes = []
    plotted = 0
    for _, record in data.iterrows():
        enforced = record.get("label.enforced")
        applicable = record.get("label.applicable")
        if (
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
        rows.append(
            [
                naming.short.get(str(record["run_id"]), str(record["run_id"])),
                str(record["backend"]),
                str(record["case"]),
                str(record["_view"]),
                "-" if set_value is None else f"{set_value:g} {set_unit}",
                "-" if value is None else f"{value:.4g} {record['unit']}",
                verdict,
                _evidence_text(record.get("label.evidence")),
                _fact_text(record.get("error")) if not bool(record["ok"]) else "",
            ]
        )
        classes.append(css)
        series = record.get("label.series")
        if isinstance(series, dict) and series and plotted < LIMIT_PLOTS_MAX:
            plotted += 1
            name = naming.label(str(record["run_id"]), str(record["backend"]))
            title = f"{record['_view']} limit, {name}: usage vs limit ({verdict})"
            items = [(str(k), v) for k, v in series.items() if isinstance(v, list)]
            section.items.append(ids.plot(figures.series_figure(items, set_value, set_unit, title)))
    section.items.insert(
        0,
        Table(
            ["run", "backend", "case", "check", "set", "measured", "enforced", "evidence", "error"],
            rows,
            "memory: peak usage vs the limit and an OOM kill by the cgroup; memory_control: "
            "an allocation under the limit must survive; cpu: cores used vs the quota and "
            "throttling; pids: forks refused at the limit.",
            frozenset({4, 5}),
            classes,
        ),
    )
    return section


def _evidence_text(evidence: Any) -> str:
    if not isinstance(evidence, dict):
        return ""
    parts = []
    for key, value in evidence.items():
        if isinstance(value, dict | list) or key in {"cgroup", "output"}:
            continue
        parts.append(f"{key}={value}")
    return ", ".join(parts[:8])


# --- cross-run comparison --------------------------------------------------------------


def _comparison_section(dataset: Dataset, compare_by: str, baseline: str | None) -> Section:
    what = "runs" if compare_by == "run" else compare_by
    section = Section("comparison", f"Comparison across {what}")
    if len(dataset.runs) < 2:
        return _unmeasured(
            section,
            "One run: nothing to compare across runs. Give several runs "
            "(or --compare-by kernel) to compare.",
        )
    try:
        report = compare_dataset(dataset, compare_by, baseline=baseline)
    except CompareError as exc:
        return _unmeasured(section, f"No comparison: {exc}.")
    for label, reasons in report.incomparable.items():
        section.items.append(
            Note(f"{label}: incomparable with {report.baseline}: {'; '.join(reasons)}", "warn")
        )
    section.items.append(
        _comparison_table(report, f"Baseline: {report.baseline}. {method_text(report)}", False)
    )
    section.items.extend(_comparison_notes(report))
    return section


# --- stability and scenarios -----------------------------------------------------------


def _stability_section(stats: list[StatRow], dataset: Dataset, noise: pd.DataFrame) -> Section:
    """At most ``WARNINGS_MAX`` warnings a user can act on, each kind said once."""
    section = Section("stability", "Warnings")
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
    section = Section("scenario", "Scenario text")
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
