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
from bench.analysis.units import display_scale

ECDF_POINTS = 200
CURVE_POINTS = 400
SERIES_PER_PLOT = 24
SIGNIFICANT_DIGITS = 5

Figure = dict[str, Any]
Colours = Mapping[str, str]

# Cumulative milestones of one instance's life, in order, from its stage columns. A
# segment is the time from the previous available milestone to this one.
MILESTONES: tuple[tuple[str, str], ...] = (
    ("create", "create call"),
    ("start", "start call (incl. attach)"),
    ("first_byte", "boot to first console byte"),
    ("userspace", "kernel to userspace"),
    ("ready", "to READY"),
    ("exit", "READY to exit"),
    ("removed", "remove"),
    ("gone", "teardown (host processes gone)"),
)


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
    layout = _value_x_layout(title, shown, lows, highs, "", showlegend=False)
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
    """Per sample, the duration of each life segment between consecutive available milestones."""
    marks = milestone_frame(frame)
    last = np.zeros(len(marks))
    segments: dict[str, FloatArray] = {}
    for name, _label in MILESTONES:
        mark = marks[name].to_numpy(dtype=np.float64)
        present = np.isfinite(mark)
        segments[name] = np.where(present, mark - last, np.nan)
        last = np.where(present, mark, last)
    return pd.DataFrame(segments, index=frame.index)


def stage_breakdown_figure(groups: Sequence[tuple[str, pd.DataFrame]], title: str) -> Figure:
    """Stacked horizontal bars: the median of each life segment, per labelled group."""
    labels = [label for label, _ in groups]
    medians: dict[str, list[float]] = {name: [] for name, _ in MILESTONES}
    for _label, part in groups:
        segments = stage_segments(part)
        for name, _ in MILESTONES:
            column = segments[name].dropna()
            medians[name].append(float(column.median() * 1e3) if column.size else math.nan)
    traces = []
    for (name, text), colour in zip(MILESTONES, SEGMENT_COLOURS, strict=True):
        values = medians[name]
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
    layout = base_layout(title, "ms (median of each segment, stacked)", "", barmode="stack")
    layout["height"] = max(240, 110 + 45 * len(labels))
    layout["yaxis"]["autorange"] = "reversed"
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
    layout = base_layout(title, "", f"{shown} (median, 95% CI)", barmode="group")
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
