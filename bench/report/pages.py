"""The overview pages of a published site, as ReportModels: index, trends, kernel pairs.

They are built from the site manifest's entries (``bench.report.site``): each run's
host, kernel, scenario, status and headline figures per backend, so drawing them needs
no samples. Links are relative paths between pages of the site.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from bench import __version__
from bench.analysis.changepoint import ChangePoint, change_points, strongest_change
from bench.analysis.multiplicity import ALPHA, BENJAMINI_HOCHBERG, adjust
from bench.analysis.order import PALETTE, mechanism_rank
from bench.analysis.units import display_scale, format_quantity
from bench.report import figures
from bench.report.build import (
    Cell,
    CellValue,
    Item,
    Note,
    ReportModel,
    Section,
    Table,
    _Ids,
)
from bench.report.site import (
    KERNELS_PAGE,
    TREND_FIGURES,
    run_page_path,
    trend_page_path,
)
from bench.results import utc_now_iso

STATUS_CSS = {"complete": "ok", "failed": "fail", "abandoned": "fail", "interrupted": "fail"}
CHANGE_POINT_METHOD = (
    "Change points: E-Divisive (Matteson and James, JASA 2014; the method of MongoDB's "
    "performance CI, Daly et al., ICPE 2020) on the figures of complete runs in time "
    "order, each split judged by a permutation test within every segment (999 "
    "permutations), segments of at least 3 runs. The strongest split of each series is "
    "corrected over every series of this page (Benjamini-Hochberg: p / BH); a series "
    "whose split survives is searched for further changes at p <= 0.05. Marked with a "
    "dotted line where the later segment starts. Runs that did not complete are drawn "
    "hollow and left out of the search."
)


def _model(title: str, sections: list[Section], links: list[tuple[str, str]]) -> ReportModel:
    return ReportModel(
        title=title,
        generated_at_utc=utc_now_iso(),
        bench_version=__version__,
        banners=[],
        summary=[],
        sections=sections,
        links=links,
    )


def _relative(from_page: str, target: str) -> str:
    return "../" * from_page.count("/") + target


def _headline_text(entry: dict[str, Any]) -> str:
    """``process 6.7 ms · docker 79 ms · ...``: startup medians of a run, in order."""
    parts = []
    for row in entry.get("headline", []):
        value = row.get("figures", {}).get("startup_median_s")
        if value is not None:
            parts.append(f"{row['backend']} {format_quantity(value, 's')}")
    return " · ".join(parts)


def index_model(runs: dict[str, Any], kernel_pairs: dict[str, Any]) -> ReportModel:
    """The site's index: every run by host, kernel and scenario, newest first."""
    sections: list[Section] = []
    by_host: dict[str, list[dict[str, Any]]] = {}
    for entry in runs.values():
        by_host.setdefault(entry["host"], []).append(entry)
    overview_rows: list[list[CellValue]] = []
    for host, entries in sorted(by_host.items()):
        for scenario in sorted({e["scenario"] for e in entries}):
            mine = [e for e in entries if e["scenario"] == scenario]
            kernels = sorted({e["kernel"] for e in mine})
            overview_rows.append(
                [
                    host,
                    Cell(scenario, href=trend_page_path(host, scenario)),
                    str(len(mine)),
                    ", ".join(kernels),
                    max(e["started_at_utc"] for e in mine)[:16].replace("T", " "),
                ]
            )
    sections.append(
        Section(
            "overview",
            "Hosts and scenarios",
            [
                Table(
                    ["host", "scenario (trends)", "runs", "kernels", "latest (UTC)"],
                    overview_rows,
                    f"{len(runs)} runs. A scenario's trend page follows its headline figures "
                    "over time and kernels, with change points.",
                    frozenset({2}),
                ),
                Note(f"{len(kernel_pairs)} kernel pair(s) compared: see the kernels page."),
            ],
        )
    )
    for host, entries in sorted(by_host.items()):
        rows: list[list[CellValue]] = []
        classes = []
        for entry in sorted(
            entries,
            key=lambda e: (e["kernel"], e["scenario"], e["started_at_utc"]),
            reverse=True,
        ):
            status = entry["status"]
            rows.append(
                [
                    entry["kernel"],
                    entry["scenario"],
                    Cell(entry["run_id"], href=entry["page"]),
                    Cell(status, css=STATUS_CSS.get(status, "")),
                    f"{entry.get('samples') or 0} / {entry.get('failed') or 0}",
                    Cell(_short(_headline_text(entry), 70), detail=_headline_text(entry))
                    if len(_headline_text(entry)) > 70
                    else _headline_text(entry),
                ]
            )
            classes.append("")
        sections.append(
            Section(
                f"host-{len(sections)}",
                f"Host {host}",
                [
                    Table(
                        ["kernel", "scenario", "run", "status", "samples / failed", "startup"],
                        rows,
                        "A run still marked running whose process is gone is abandoned.",
                        frozenset({4}),
                        classes,
                    )
                ],
            )
        )
    return _model("bench results", sections, [("kernel comparisons", KERNELS_PAGE)])


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trend_model(host: str, scenario: str, entries: list[dict[str, Any]], page: str) -> ReportModel:
    """A host and scenario over time: each headline figure per backend, change points marked."""
    entries = sorted(entries, key=lambda e: (e["started_at_utc"], e["run_id"]))
    ids = _Ids()
    items: list[Item] = []
    changes: list[list[CellValue]] = []
    mechanisms: dict[str, str] = {}
    for entry in entries:
        for row in entry.get("headline", []):
            mechanisms.setdefault(row["backend"], row.get("mechanism", ""))
    backends = sorted(mechanisms, key=lambda b: (mechanism_rank(mechanisms[b]), b))
    colours = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(backends)}
    kernels = sorted({e["kernel"] for e in entries})
    figures_by_key: dict[str, figures.Figure] = {}
    # the first stage of every series of the page, corrected over them all (BH)
    candidates: list[tuple[str, str, str, list[tuple[dict[str, Any], float]], ChangePoint]] = []
    for key, unit, title in TREND_FIGURES:
        series = []
        for backend in backends:
            points = []
            for entry in entries:
                for row in entry.get("headline", []):
                    value = row.get("figures", {}).get(key)
                    if row["backend"] == backend and value is not None and math.isfinite(value):
                        points.append((entry, float(value)))
            if points:
                series.append((backend, points))
        if not series:
            continue
        figure = _trend_figure(title, unit, series, colours, kernels)
        figures_by_key[key] = figure
        items.append(ids.plot(figure))
        for backend, points in series:
            complete = [(e, v) for e, v in points if e.get("status", "complete") == "complete"]
            first = strongest_change([v for _, v in complete])
            if first is not None:
                candidates.append((key, unit, backend, complete, first))
    adjusted = adjust([c[4].p_value for c in candidates], BENJAMINI_HOCHBERG)
    for (key, unit, backend, complete, first), p_adjusted in zip(candidates, adjusted, strict=True):
        if p_adjusted >= ALPHA:
            continue
        title = next(t for k, _u, t in TREND_FIGURES if k == key)
        for change in change_points([v for _, v in complete]):
            before, after = complete[change.index - 1][0], complete[change.index][0]
            p_text = (
                f"{change.p_value:.3f} / {p_adjusted:.3f}"
                if change.index == first.index
                else f"{change.p_value:.3f} (within the series)"
            )
            changes.append(
                [
                    backend,
                    title,
                    Cell(after["run_id"], href=_relative(page, after["page"])),
                    f"{_value_text(change.median_before, unit)} → "
                    f"{_value_text(change.median_after, unit)}",
                    p_text,
                    _what_changed(before, after),
                ]
            )
            figures_by_key[key]["layout"].setdefault("shapes", []).append(
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": after["started_at_utc"],
                    "x1": after["started_at_utc"],
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": colours[backend], "dash": "dot", "width": 2},
                }
            )
    summary: list[Item] = [
        Table(
            ["backend", "figure", "first run after", "median before → after", "p / BH", "note"],
            changes,
            CHANGE_POINT_METHOD,
            frozenset({4}),
        )
        if changes
        else Note(f"No change point. {CHANGE_POINT_METHOD}")
    ]
    per_kernel = _per_kernel_table(entries, backends, kernels)
    sections = [
        Section("changes", "Change points", summary),
        Section("figures", "Headline figures over time", items),
        Section("kernels", "Per kernel (median of the runs' figures)", [per_kernel]),
    ]
    links = [
        ("all runs", _relative(page, "index.html")),
        ("kernel comparisons", _relative(page, KERNELS_PAGE)),
    ]
    return _model(f"Trends: {scenario} on {host}", sections, links)


def _what_changed(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Besides the figure, what differs between the runs on either side of a change."""
    changed = []
    if before["kernel"] != after["kernel"]:
        changed.append("kernel changed")
    if before.get("scenario_sha256") != after.get("scenario_sha256"):
        changed.append("scenario file changed (not the same experiment)")
    return "; ".join(changed)


def _value_text(value: float, unit: str) -> str:
    if unit == "fraction":
        return f"{value:.0%}"
    return format_quantity(value, unit)


def _trend_figure(
    title: str,
    unit: str,
    series: list[tuple[str, list[tuple[dict[str, Any], float]]]],
    colours: dict[str, str],
    kernels: list[str],
) -> figures.Figure:
    scale, shown = (1.0, unit)
    if unit in {"s", "MiB"}:
        scale, shown = display_scale(unit)
    symbols = ("circle", "square", "diamond", "triangle-up", "x", "star")
    traces = []
    for backend, points in series:
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": backend,
                "x": [entry["started_at_utc"] for entry, _ in points],
                "y": figures.rounded([value * scale for _, value in points]),
                "text": [f"{entry['run_id']} · kernel {entry['kernel']}" for entry, _ in points],
                "hovertemplate": "%{y} " + shown + "<br>%{text}<extra>" + backend + "</extra>",
                "line": {"color": colours[backend], "width": 1.5},
                "marker": {
                    "color": colours[backend],
                    "size": 7,
                    # a run that did not complete is drawn hollow (and never searched)
                    "symbol": [
                        symbols[kernels.index(entry["kernel"]) % len(symbols)]
                        + ("" if entry.get("status", "complete") == "complete" else "-open")
                        for entry, _ in points
                    ],
                },
            }
        )
    values = [v * scale for _, points in series for _, v in points if v > 0]
    layout = figures.base_layout(
        title, "run start (UTC); marker shape = kernel; hollow = did not complete", shown
    )
    layout["xaxis"]["type"] = "date"
    starts = sorted({entry["started_at_utc"] for _, points in series for entry, _ in points})
    if len(starts) == 1:
        # one run: a day around it, not an axis of microseconds
        centre = datetime.fromisoformat(starts[0])
        layout["xaxis"]["range"] = [
            (centre - timedelta(hours=12)).isoformat(),
            (centre + timedelta(hours=12)).isoformat(),
        ]
    if values and min(values) > 0 and max(values) / min(values) > 30:
        layout["yaxis"]["type"] = "log"
        layout["yaxis"].update(figures.log_ticks(min(values) / 1.5, max(values) * 1.5))
        layout["yaxis"]["title"] = {"text": f"{shown} (log scale)"}
    return {"data": traces, "layout": layout}


def _per_kernel_table(
    entries: list[dict[str, Any]], backends: list[str], kernels: list[str]
) -> Table:
    rows: list[list[CellValue]] = []
    for kernel in kernels:
        mine = [e for e in entries if e["kernel"] == kernel]
        cells: list[CellValue] = [kernel, str(len(mine))]
        for backend in backends:
            values = sorted(
                row["figures"]["startup_median_s"]
                for e in mine
                for row in e.get("headline", [])
                if row["backend"] == backend and row["figures"].get("startup_median_s") is not None
            )
            cells.append(format_quantity(values[len(values) // 2], "s") if values else "-")
        rows.append(cells)
    return Table(
        ["kernel", "runs", *backends],
        rows,
        "Startup to READY: the median over runs of each run's median, per kernel. The "
        "kernels page judges each pair with block-level verdicts.",
        frozenset(range(1, len(backends) + 2)),
    )


def kernels_model(kernel_pairs: dict[str, Any], runs: dict[str, Any]) -> ReportModel:
    """Every pair of kernels seen on one host and scenario, compared by ``bench compare``."""
    sections: list[Section] = []
    for key in sorted(kernel_pairs):
        entry = kernel_pairs[key]
        title = (
            f"{entry['scenario']} on {entry['host']}: {entry['contender']} "
            f"against {entry['baseline']}"
        )
        items: list[Item] = []
        run_links = ", ".join(entry.get("runs", []))
        items.append(Note(f"{len(entry.get('runs', []))} runs", detail=run_links))
        if "error" in entry:
            items.append(Note(f"not compared: {entry['error']}", "warn"))
        for label, reasons in entry.get("incomparable", {}).items():
            items.append(Note(f"{label}: incomparable", "warn", reasons))
        rows: list[list[CellValue]] = []
        classes = []
        for row in entry.get("rows", []):
            rows.append([row["what"], *row["cells"]])
            classes.append(f"outcome-{row['outcome']}")
        if rows:
            items.append(
                Table(
                    [
                        "what",
                        entry["baseline"],
                        entry["contender"],
                        "difference",
                        "ratio [95% CI]",
                        "blocks",
                        "verdict",
                    ],
                    rows,
                    entry.get("method", ""),
                    frozenset({1, 2, 3, 4}),
                    classes,
                )
            )
        notes = entry.get("notes", [])
        if notes:
            items.append(Note(f"{len(notes)} note(s)", detail="\n".join(notes)))
        sections.append(Section(f"pair-{len(sections) + 1}", title, items))
    if not sections:
        sections.append(
            Section(
                "none",
                "No kernel pairs",
                [
                    Note(
                        "No host has runs of one scenario under two kernels yet. Run the same "
                        "scenario after booting another kernel, then publish again."
                    )
                ],
                measured=False,
            )
        )
    links = [("all runs", "index.html")]
    del runs
    return _model("Kernel comparisons", sections, links)


__all__ = ["index_model", "kernels_model", "run_page_path", "trend_model"]
