"""Plotly figures of the report, as plain JSON-ready dicts built from aggregated data.

No figure carries raw samples: distributions are drawn from precomputed box statistics
and at most ``ECDF_POINTS`` quantiles per trace, curves are binned to at most
``CURVE_POINTS`` points, and time series keep what the limit checks stored (already
downsampled). So a report over a million samples stays a few hundred kilobytes of data
beside plotly.js. Values are rounded to ``SIGNIFICANT_DIGITS`` significant digits.
Figures are dicts with ``data`` and ``layout`` in plotly.js's schema; no Python-side
template is used (it would be serialised into every figure).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.order import PALETTE
from bench.analysis.stats import FloatArray, as_sorted_array
from bench.analysis.units import display_scale, format_quantity

ECDF_POINTS = 200
CURVE_POINTS = 400
SERIES_PER_PLOT = 24
SIGNIFICANT_DIGITS = 5

Figure = dict[str, Any]
Colours = Mapping[str, str]

# Startup is split where the host stamps a stage; the segments run from one available
# stamp to the next and end at READY, so they add up to to_ready_s. VMs have the guest's
# boot split (the VMM and firmware up to the kernel's first console line, the kernel up
# to the init's userspace marker, userspace up to READY); other backends go from the
# start call's return straight to READY.
STARTUP_SEGMENTS: tuple[tuple[str, str], ...] = (
    ("create", "create call"),
    ("start", "start call (incl. attach)"),
    ("first_byte", "VMM + firmware (to the kernel's first line)"),
    ("userspace", "guest kernel (to userspace)"),
    ("ready", "to READY (userspace / after start)"),
)
# After READY: not part of startup, drawn apart.
AFTER_READY_SEGMENTS: tuple[tuple[str, str], ...] = (
    ("exit", "READY to exit"),
    ("removed", "remove"),
    ("gone", "teardown (host processes gone)"),
)
MILESTONES = STARTUP_SEGMENTS + AFTER_READY_SEGMENTS


SEGMENT_COLOURS = (
    "#4c78a8",
    "#72b7b2",
    "#f58518",
    "#e45756",
    "#54a24b",
    "#b279a2",
    "#9d755d",
    "#bab0ac",
)


DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
PATTERNS = ("", "/", "x", ".", "\\")


def variants(labels: Sequence[str]) -> list[int]:
    """For each label, how many earlier labels share its backend (0 for the first)."""
    seen: dict[str, int] = {}
    result = []
    for label in labels:
        backend = label.split(" ")[0]
        result.append(seen.get(backend, 0))
        seen[backend] = seen.get(backend, 0) + 1
    return result


def colour_for(name: str, index: int = 0, colours: Colours | None = None) -> str:
    """The colour of a label's backend (its first word) in ``colours``, else by position.

    ``colours`` comes from ``bench.analysis.order.BackendOrder.colours()``: assigned from
    the data's mechanism order, so every backend keeps one colour across a report.
    """
    backend = name.split(" ")[0]
    if colours and backend in colours:
        return colours[backend]
    return PALETTE[index % len(PALETTE)]


def rounded(values: Sequence[float] | FloatArray) -> list[float | None]:
    """Values rounded to SIGNIFICANT_DIGITS, NaN/inf as None (JSON null)."""
    result: list[float | None] = []
    for value in np.asarray(values, dtype=np.float64).tolist():
        if not math.isfinite(value):
            result.append(None)
        elif value == 0:
            result.append(0.0)
        else:
            digits = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value)))
            result.append(round(value, digits))
    return result


def base_layout(title: str, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    """The shared look: white background, light grid, legend on top, compact margins."""
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
        "margin": {"l": 70, "r": 20, "t": 50, "b": 50},
        "xaxis": {
            "title": {"text": x_title},
            "gridcolor": "#e5e5e5",
            "zerolinecolor": "#ccc",
            "automargin": True,
        },
        "yaxis": {
            "title": {"text": y_title},
            "gridcolor": "#e5e5e5",
            "zerolinecolor": "#ccc",
            "automargin": True,
        },
        "legend": {"orientation": "h", "y": -0.2},
        "height": 380,
    }
    layout.update(extra)
    return layout


def _log_axis_wanted(minimum: float, maximum: float) -> bool:
    return minimum > 0 and maximum / minimum > 30


def _value_x_layout(
    title: str, shown: str, lows: list[float], highs: list[float], y_title: str, **extra: Any
) -> dict[str, Any]:
    """``base_layout`` with values on x: a log axis when the groups' range spans > 30x."""
    log = bool(lows) and _log_axis_wanted(min(lows), max(highs))
    layout = base_layout(title, f"{shown}{' (log scale)' if log else ''}", y_title, **extra)
    layout["xaxis"]["type"] = "log" if log else "linear"
    if log:
        layout["xaxis"].update(log_ticks(min(lows) / 1.5, max(highs) * 1.5))
    return layout


def distribution_figure(
    groups: Sequence[tuple[str, FloatArray]],
    unit: str,
    title: str,
    colours: Colours | None = None,
) -> Figure:
    """Box plots from precomputed quartiles/fences (no raw points), one per labelled group.

    Whiskers reach the most extreme values within 1.5 IQR; the mean is marked. A log axis
    is used when the groups span more than 30x (process vs VM startup does).
    """
    scale, shown = display_scale(unit)
    traces: list[dict[str, Any]] = []
    lows: list[float] = []
    highs: list[float] = []
    for index, (label, values) in enumerate(groups):
        data = as_sorted_array(values) * scale
        if data.size == 0:
            continue
        q1, median, q3 = np.quantile(data, [0.25, 0.5, 0.75])
        iqr = q3 - q1
        inside = data[(data >= q1 - 1.5 * iqr) & (data <= q3 + 1.5 * iqr)]
        lows.append(float(data[0]))
        highs.append(float(data[-1]))
        traces.append(
            {
                "type": "box",
                "name": label,
                "orientation": "h",
                "q1": rounded([q1]),
                "median": rounded([median]),
                "q3": rounded([q3]),
                "lowerfence": rounded([inside[0] if inside.size else q1]),
                "upperfence": rounded([inside[-1] if inside.size else q3]),
                "mean": rounded([data.mean()]),
                "y": [label],
                "marker": {"color": colour_for(label, index, colours)},
                "hoverinfo": "x+name",
            }
        )
    layout = _value_x_layout(title, shown, lows, highs, "backend", showlegend=False)
    layout["height"] = max(220, 70 + 45 * len(traces))
    layout["yaxis"]["autorange"] = "reversed"  # first group (the native floor) on top
    return {"data": traces, "layout": layout}


def ecdf_figure(
    groups: Sequence[tuple[str, FloatArray]],
    unit: str,
    title: str,
    colours: Colours | None = None,
) -> Figure:
    """Empirical CDFs, one line per group, drawn through at most ECDF_POINTS quantiles."""
    scale, shown = display_scale(unit)
    traces = []
    lows: list[float] = []
    highs: list[float] = []
    variant = variants([label for label, _ in groups])
    for index, (label, values) in enumerate(groups):
        data = as_sorted_array(values) * scale
        if data.size == 0:
            continue
        points = min(ECDF_POINTS, int(data.size))
        fractions = np.linspace(0, 1, points)
        xs = np.quantile(data, fractions) if data.size > points else data
        ys = fractions if data.size > points else np.arange(1, data.size + 1) / data.size
        lows.append(float(data[0]))
        highs.append(float(data[-1]))
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "line": {
                    "shape": "hv",
                    "color": colour_for(label, index, colours),
                    "dash": DASHES[variant[index] % len(DASHES)],
                },
                "name": f"{label} (n={data.size})",
                "x": rounded(xs),
                "y": rounded(ys),
            }
        )
    layout = _value_x_layout(title, shown, lows, highs, "fraction of samples")
    layout["yaxis"]["range"] = [0, 1.02]
    return {"data": traces, "layout": layout}


def milestone_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Cumulative milestone times (s) per sample from its ``stage.*`` columns (NaN if absent)."""

    def column(name: str) -> pd.Series:
        if name in frame.columns:
            return pd.to_numeric(frame[name], errors="coerce")
        return pd.Series(np.nan, index=frame.index)

    create = column("stage.create_s")
    start = create + column("stage.start_s")
    exit_s = column("stage.to_exit_s")
    removed = exit_s + column("stage.remove_s")
    return pd.DataFrame(
        {
            "create": create,
            "start": start,
            "first_byte": column("stage.to_first_byte_s"),
            "userspace": column("stage.to_userspace_s"),
            "ready": column("stage.to_ready_s"),
            "exit": exit_s,
            "removed": removed,
            "gone": removed + column("stage.teardown_s"),
        }
    )


def stage_segments(frame: pd.DataFrame) -> pd.DataFrame:
    """Per sample, the duration of each segment between consecutive available stamps.

    A stamp earlier than the one before it (a start call that returns after the guest
    printed its first line) gives a segment of 0 and the later stamp carries on, so the
    startup segments of a sample always add up to its to_ready_s.
    """
    marks = milestone_frame(frame)
    last = np.zeros(len(marks))
    segments: dict[str, FloatArray] = {}
    for name, _label in MILESTONES:
        mark = marks[name].to_numpy(dtype=np.float64)
        present = np.isfinite(mark)
        segments[name] = np.where(present, np.maximum(mark - last, 0.0), np.nan)
        last = np.where(present, np.maximum(mark, last), last)
    return pd.DataFrame(segments, index=frame.index)


def startup_split(
    part: pd.DataFrame, segments: pd.DataFrame | None = None
) -> tuple[float, dict[str, float]]:
    """(median to READY in s, its split into segments) of one group of samples.

    The median is split by each segment's share of the mean total (the means of the
    segments add up to the mean total exactly), so the bar's length is the headline
    median and each part keeps its average share.
    """
    column = part["stage.to_ready_s"] if "stage.to_ready_s" in part.columns else part["value"]
    total = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    finite = total[np.isfinite(total)]
    if finite.size == 0:
        return math.nan, {}
    median = float(np.median(finite))
    if segments is None:
        segments = stage_segments(part)
    means = {
        name: float(np.nanmean(segments[name])) if segments[name].notna().any() else math.nan
        for name, _ in STARTUP_SEGMENTS
    }
    known = {k: v for k, v in means.items() if math.isfinite(v) and v >= 0}
    mean_total = sum(known.values())
    if mean_total <= 0:
        return median, {"ready": median}
    return median, {k: median * v / mean_total for k, v in known.items()}


def startup_split_figure(
    groups: Sequence[tuple[str, pd.DataFrame]],
    title: str,
    segments: Sequence[pd.DataFrame] | None = None,
) -> Figure:
    """Per group, the median to READY as one bar of 100%, split into its stages.

    Backends differ by 400x (a process vs a TCG guest), so absolute stacked bars would
    hide the small ones and a log axis would distort the parts: each bar is its own
    median (written at its end), the parts are shares of it; hover gives milliseconds.
    """
    labels = [label for label, _ in groups]
    if segments is None:
        segments = [stage_segments(part) for _, part in groups]
    splits = [startup_split(part, seg) for (_, part), seg in zip(groups, segments, strict=True)]
    traces: list[dict[str, Any]] = []
    for (name, text), colour in zip(STARTUP_SEGMENTS, SEGMENT_COLOURS, strict=False):
        ms = [split.get(name, math.nan) * 1e3 for _, split in splits]
        if all(not math.isfinite(v) or v == 0 for v in ms):
            continue
        shares = [
            100 * split.get(name, math.nan) / median if median and median > 0 else math.nan
            for median, split in splits
        ]
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": text,
                "y": labels,
                "x": rounded(shares),
                "customdata": rounded(ms),
                "marker": {"color": colour},
                "hovertemplate": f"{text}: %{{customdata}} ms (%{{x:.1f}}%)<extra>%{{y}}</extra>",
            }
        )
    totals = [median * 1e3 for median, _ in splits]
    annotations = [
        {
            "x": 100,
            "y": label,
            "xanchor": "left",
            "text": " " + format_quantity(total / 1e3, "s"),
            "showarrow": False,
            "font": {"size": 12},
        }
        for label, total in zip(labels, totals, strict=True)
        if math.isfinite(total)
    ]
    layout = base_layout(
        title,
        "% of the median to READY (its value at the end of each bar)",
        "backend",
        barmode="stack",
    )
    layout["xaxis"]["range"] = [0, 100]
    layout["xaxis"]["ticksuffix"] = "%"
    layout["margin"] = {"l": 70, "r": 90, "t": 50, "b": 50}
    layout["annotations"] = annotations
    layout["height"] = max(260, 140 + 40 * len(labels))
    layout["yaxis"]["autorange"] = "reversed"
    layout["legend"] = {"orientation": "h", "y": -0.3}
    return {"data": traces, "layout": layout}


def after_ready_figure(
    groups: Sequence[tuple[str, pd.DataFrame]],
    title: str,
    segments: Sequence[pd.DataFrame] | None = None,
) -> Figure:
    """Median of each step after READY (exit, removal, teardown): not part of startup."""
    labels = [label for label, _ in groups]
    traces = []
    segmented = segments if segments is not None else [stage_segments(p) for _, p in groups]
    for (name, text), colour in zip(AFTER_READY_SEGMENTS, SEGMENT_COLOURS[5:], strict=False):
        values = [
            float(seg[name].median() * 1e3) if seg[name].notna().any() else math.nan
            for seg in segmented
        ]
        if all(not math.isfinite(v) for v in values):
            continue
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": text,
                "y": labels,
                "x": rounded(values),
                "marker": {"color": colour},
                "hovertemplate": f"{text}: %{{x}} ms<extra>%{{y}}</extra>",
            }
        )
    layout = base_layout(title, "ms (median of each step, after READY)", "backend", barmode="group")
    layout["height"] = max(240, 110 + 50 * len(labels))
    layout["yaxis"]["autorange"] = "reversed"
    return {"data": traces, "layout": layout}


def log_ticks(low: float, high: float) -> dict[str, Any]:
    """Readable ticks for a log axis: 1-2-5 steps between ``low`` and ``high``, plain numbers."""
    low = max(low, 1e-6)
    values: list[float] = []
    decade = math.floor(math.log10(low))
    while 10.0**decade <= high * 10 and len(values) < 40:
        for step in (1, 2, 5):
            value = step * 10.0**decade
            if low / 2 <= value <= high * 2:
                values.append(value)
        decade += 1
    if len(values) > 12:
        values = [v for v in values if f"{v:.0e}".startswith("1")]
    return {
        "tickvals": rounded(values),
        "ticktext": [f"{v:g}" for v in values],
        "range": [math.log10(low), math.log10(high)],
    }


def memory_log_figure(
    rows: Sequence[tuple[str, dict[str, float]]],
    title: str,
    colours: Colours | None = None,
) -> Figure:
    """Per backend, the absolute MiB of each memory view, on a log axis with 1-2-5 ticks.

    ``rows``: (backend label, {view: MiB}). Values <= 0 cannot sit on a log axis and are
    left out (the tables give them).
    """
    views: list[str] = list(dict.fromkeys(v for _, values in rows for v in values))
    traces = []
    positives = [v for _, values in rows for v in values.values() if v > 0]
    for index, view in enumerate(views):
        xs = [values.get(view, math.nan) for _, values in rows]
        shown = [x if math.isfinite(x) and x > 0 else math.nan for x in xs]
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": view,
                "y": [label for label, _ in rows],
                "x": rounded(shown),
                "text": [f"{x:.3g} MiB" if math.isfinite(x) else "" for x in shown],
                "textposition": "outside",
                "cliponaxis": False,
                "marker": {"color": SEGMENT_COLOURS[index % len(SEGMENT_COLOURS)]},
                "hovertemplate": f"{view}: %{{x}} MiB<extra>%{{y}}</extra>",
            }
        )
    layout = base_layout(title, "MiB per idle instance (log scale)", "backend", barmode="group")
    layout["xaxis"]["type"] = "log"
    if positives:
        layout["xaxis"].update(log_ticks(min(positives) / 2, max(positives) * 4))
    layout["height"] = max(260, 120 + 30 * len(rows) * max(1, len(views)))
    layout["yaxis"]["autorange"] = "reversed"
    return {"data": traces, "layout": layout}


def ramp_figure(
    ramps: Sequence[tuple[str, FloatArray, FloatArray, str]],
    *,
    title: str,
    unit: str,
    y_title: str,
    rule: tuple[float, str] | None = None,
    colours: Colours | None = None,
    running_percentiles: bool = False,
) -> Figure:
    """Curves of a density ramp against N, each ending at its stop, with the stop rule drawn.

    ``ramps``: (label, N, values, stop text). With ``running_percentiles`` each ramp is
    drawn as the running p50 (dashed) and p99 (solid) of the values so far, which is
    what the SLO stop rule judges. ``rule``: a horizontal line (value in ``unit``, text).
    """
    scale, shown = display_scale(unit)
    traces: list[dict[str, Any]] = []
    annotations = []
    for index, (label, x, y, stop) in enumerate(ramps):
        order = np.argsort(x, kind="stable")
        xs, ys = np.asarray(x)[order], np.asarray(y, dtype=np.float64)[order] * scale
        colour = colour_for(label, index, colours)
        if running_percentiles and ys.size:
            p50 = [float(np.median(ys[: i + 1])) for i in range(ys.size)]
            p99 = [float(np.percentile(ys[: i + 1], 99)) for i in range(ys.size)]
            bx, by50 = binned_curve(xs.astype(np.float64), np.asarray(p50))
            _, by99 = binned_curve(xs.astype(np.float64), np.asarray(p99))
            lines = ((f"{label} p99 so far", by99, "solid"), (f"{label} p50 so far", by50, "dash"))
            for name, values, dash in lines:
                traces.append(
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "name": name,
                        "x": rounded(bx),
                        "y": rounded(values),
                        "line": {"color": colour, "dash": dash},
                    }
                )
            last_y = by99[-1] if len(by99) else None
        else:
            bx, by = binned_curve(xs.astype(np.float64), ys)
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers" if len(bx) <= 60 else "lines",
                    "name": label,
                    "x": rounded(bx),
                    "y": rounded(by),
                    "line": {"color": colour},
                    "marker": {"size": 4},
                }
            )
            last_y = by[-1] if len(by) else None
        if stop and len(bx) and last_y is not None and math.isfinite(float(last_y)):
            annotations.append(
                {
                    "x": float(bx[-1]),
                    "y": float(last_y),
                    "text": f"stop: {stop}",
                    "showarrow": True,
                    "arrowhead": 2,
                    "ax": -30,
                    "ay": -25,
                    "font": {"size": 11, "color": colour},
                }
            )
    layout = base_layout(title, "instances started (N)", f"{y_title} ({shown})")
    if rule is not None and math.isfinite(rule[0]):
        value = rule[0] * scale
        layout["shapes"] = [
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": value,
                "y1": value,
                "line": {"color": "#b00020", "dash": "dot", "width": 1.5},
            }
        ]
        annotations.append(
            {
                "xref": "paper",
                "x": 1,
                "xanchor": "right",
                "y": value,
                "yanchor": "bottom",
                "text": rule[1],
                "showarrow": False,
                "font": {"size": 11, "color": "#b00020"},
            }
        )
    layout["annotations"] = annotations
    return {"data": traces, "layout": layout}


def bar_figure(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float]]],
    unit: str,
    title: str,
    colours: Colours | None = None,
) -> Figure:
    """Grouped bars: per series (name, medians, CI lows, CI highs) over the categories."""
    scale, shown = display_scale(unit)
    traces = []
    variant = variants([name for name, *_ in series])
    for index, (name, medians, lows, highs) in enumerate(series):
        mid = np.asarray(medians, dtype=np.float64) * scale
        plus = np.asarray(highs, dtype=np.float64) * scale - mid
        minus = mid - np.asarray(lows, dtype=np.float64) * scale
        traces.append(
            {
                "type": "bar",
                "name": name,
                "x": list(categories),
                "y": rounded(mid),
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": rounded(np.maximum(plus, 0)),
                    "arrayminus": rounded(np.maximum(minus, 0)),
                    "color": "#444",
                },
                "marker": {
                    "color": colour_for(name, index, colours),
                    "pattern": {"shape": PATTERNS[variant[index] % len(PATTERNS)]},
                },
            }
        )
    layout = base_layout(title, "memory view", f"{shown} (median, 95% CI)", barmode="group")
    return {"data": traces, "layout": layout}


def binned_curve(x: FloatArray, y: FloatArray, points: int = CURVE_POINTS) -> tuple[Any, Any]:
    """(x, median y) with at most ``points`` points: equal-count bins over sorted x."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size <= points:
        return xs, ys
    edges = np.linspace(0, xs.size, points + 1).astype(int)
    spans = [(a, b) for a, b in itertools.pairwise(edges.tolist()) if b > a]
    bx = [float(np.median(xs[a:b])) for a, b in spans]
    by = [float(np.median(ys[a:b])) for a, b in spans]
    return np.asarray(bx), np.asarray(by)


def curve_figure(
    curves: Sequence[tuple[str, FloatArray, FloatArray]],
    x_title: str,
    unit: str,
    title: str,
    colours: Colours | None = None,
) -> Figure:
    """Lines of y against x (e.g. startup latency vs instance count), binned if long."""
    scale, shown = display_scale(unit)
    traces = []
    variant = variants([name for name, _, _ in curves])
    for index, (name, x, y) in enumerate(curves):
        bx, by = binned_curve(np.asarray(x, np.float64), np.asarray(y, np.float64) * scale)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers" if len(bx) <= 60 else "lines",
                "name": name,
                "x": rounded(bx),
                "y": rounded(by),
                "line": {
                    "color": colour_for(name, index, colours),
                    "dash": DASHES[variant[index] % len(DASHES)],
                },
                "marker": {"size": 4},
            }
        )
    return {"data": traces, "layout": base_layout(title, x_title, shown)}


def series_figure(
    series: Sequence[tuple[str, Sequence[Sequence[float]]]],
    limit: float | None,
    unit: str,
    title: str,
) -> Figure:
    """Usage over time (``[[t_s, value], ...]`` per series) with the set limit as a line."""
    traces: list[dict[str, Any]] = []
    t_max = 0.0
    for index, (name, points) in enumerate(series[:SERIES_PER_PLOT]):
        pairs = [p for p in points if isinstance(p, list | tuple) and len(p) >= 2]
        if not pairs:
            continue
        xs = [float(p[0]) for p in pairs]
        t_max = max(t_max, max(xs))
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": name,
                "x": rounded(xs),
                "y": rounded([float(p[1]) for p in pairs]),
                "line": {"color": PALETTE[index % len(PALETTE)]},
            }
        )
    if limit is not None and math.isfinite(limit):
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"limit set ({limit:g} {unit})",
                "x": [0, rounded([t_max])[0] or 1],
                "y": [limit, limit],
                "line": {"color": "#d62728", "dash": "dash"},
            }
        )
    layout = base_layout(title, "s since the instance started", unit)
    layout["height"] = 300
    return {"data": traces, "layout": layout}
