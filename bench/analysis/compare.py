"""Comparisons between runs, kernels, hosts or backends: ratios with CIs and verdicts people read.

Like asv's compare and pyperf's compare_to, a difference is reported only when it is
both significant (two-sided Mann-Whitney U, ``alpha``) AND at least ``min_effect``
(default 5%) in the ratio of medians; otherwise "not significant". The ratio is
contender / baseline, with a bootstrap 95% CI. Words follow the unit: times are
"slower"/"faster", sizes "larger"/"smaller", anything else "higher"/"lower".

Groups are runs (``group_by="run"``), backends within each run (``"backend"``: the VM vs
container vs native question), or the value of any run fact (``"kernel"``,
``"cpu.model"``, ``"software.docker.runc"``: runs with the same value are pooled). Two
groups are *incomparable*, and said to be with the reason, when their scenario hashes
differ or a must-match host key differs (CPU model, core count, memory size, cgroup
version), or, row by row, when VM samples ran under different accelerators. The kernel
is never a must-match key: comparing kernels is the point.

Every comparison is symmetric by construction: compare(B, A) is the mirror of
compare(A, B) (ratio and CI inverted, "slower" for "faster"), because both are computed
in one canonical order and inverted when asked the other way round.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.dataset import Dataset, fact, resolve_fact_path
from bench.analysis.stats import (
    BOOTSTRAP_SEED,
    CONFIDENCE,
    SCIPY_BOOTSTRAP_MAX_N,
    VALUE_STAGE,
    FloatArray,
    accel_of,
    as_sorted_array,
    describe,
    measured,
    percentile_bootstrap,
    sample_medians,
    scipy_stats,
    stage_columns,
    stage_values,
    view_labels,
)
from bench.analysis.units import format_quantity, unit_kind
from bench.errors import BenchError

DEFAULT_MIN_EFFECT = 0.05
DEFAULT_ALPHA = 0.05
# Host facts two compared groups must share (paths under run.json's host object).
MUST_MATCH_HOST_KEYS = ("cpu.model", "cpu.logical_cores", "memory.total_bytes", "cgroup.version")
# Kernels reserve different amounts of RAM, so one machine's MemTotal moves a little
# between kernels: sizes within this fraction are the same machine.
MEMORY_TOTAL_TOLERANCE = 0.02
RATIO_DRAWS = 4000

OUTCOME_NOT_SIGNIFICANT = "not significant"
OUTCOME_INCOMPARABLE = "incomparable"
OUTCOME_MISSING = "missing"


class CompareError(BenchError):
    """A comparison that cannot be set up (unknown baseline, one group only, no samples)."""

    exit_code = 2


@dataclass(frozen=True)
class SampleComparison:
    """Contender vs baseline for one set of values: medians, ratio with CI, test, verdict."""

    n_baseline: int
    n_contender: int
    median_baseline: float
    median_contender: float
    ratio: float | None  # contender / baseline; None unless every value is > 0
    ratio_ci_low: float | None
    ratio_ci_high: float | None
    p_value: float
    significant: bool
    outcome: str  # slower | faster | larger | smaller | higher | lower | not significant
    verdict: str  # "1.31x slower", "not significant"

    def mirrored(self, unit: str) -> SampleComparison:
        """The same comparison seen from the other side."""
        ratio = 1 / self.ratio if self.ratio else None
        low = 1 / self.ratio_ci_high if self.ratio_ci_high else None
        high = 1 / self.ratio_ci_low if self.ratio_ci_low else None
        outcome, verdict = _words(
            ratio, self.median_contender, self.median_baseline, self.significant, unit
        )
        return SampleComparison(
            n_baseline=self.n_contender,
            n_contender=self.n_baseline,
            median_baseline=self.median_contender,
            median_contender=self.median_baseline,
            ratio=ratio,
            ratio_ci_low=low,
            ratio_ci_high=high,
            p_value=self.p_value,
            significant=self.significant,
            outcome=outcome,
            verdict=verdict,
        )


def compare_samples(
    baseline: Sequence[float] | FloatArray,
    contender: Sequence[float] | FloatArray,
    *,
    unit: str = "s",
    min_effect: float = DEFAULT_MIN_EFFECT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = BOOTSTRAP_SEED,
) -> SampleComparison:
    """Compare two sets of finite values (each non-empty); see the module docstring."""
    base = as_sorted_array(baseline)
    cont = as_sorted_array(contender)
    if base.size == 0 or cont.size == 0:
        raise ValueError("compare_samples() needs at least one finite value on each side")
    base_key, cont_key = _canonical_key(base), _canonical_key(cont)
    swap = base_key > cont_key
    first, second = (cont, base) if swap else (base, cont)
    result = _compare_sorted(first, second, unit, min_effect, alpha, seed)
    if base_key == cont_key and result.ratio_ci_low and result.ratio_ci_high:
        # Identical samples: the interval must read the same from both sides.
        low, high = result.ratio_ci_low, result.ratio_ci_high
        result = replace(result, ratio_ci_low=min(low, 1 / high), ratio_ci_high=max(high, 1 / low))
    return result.mirrored(unit) if swap else result


def _canonical_key(data: FloatArray) -> tuple[int, bytes]:
    return int(data.size), data.tobytes()


def _compare_sorted(
    base: FloatArray, cont: FloatArray, unit: str, min_effect: float, alpha: float, seed: int
) -> SampleComparison:
    median_base = float(np.median(base))
    median_cont = float(np.median(cont))
    p_value = _mann_whitney_p(base, cont)
    ratio: float | None = None
    low: float | None = None
    high: float | None = None
    # A ratio only means something for positive quantities (times, sizes, counts): data
    # that can be zero or negative (overheads) is compared by its difference instead.
    if base[0] > 0 and cont[0] > 0:
        ratio = median_cont / median_base
        low, high = _ratio_ci(base, cont, seed)
        low, high = min(low, ratio), max(high, ratio)
    if ratio is not None:
        effect = max(ratio, 1 / ratio) - 1
    else:
        scale = max(abs(median_base), abs(median_cont))
        effect = abs(median_cont - median_base) / scale if scale else 0.0
    significant = bool(p_value < alpha and effect >= min_effect)
    outcome, verdict = _words(ratio, median_base, median_cont, significant, unit)
    return SampleComparison(
        n_baseline=int(base.size),
        n_contender=int(cont.size),
        median_baseline=median_base,
        median_contender=median_cont,
        ratio=ratio,
        ratio_ci_low=low,
        ratio_ci_high=high,
        p_value=p_value,
        significant=significant,
        outcome=outcome,
        verdict=verdict,
    )


def _mann_whitney_p(base: FloatArray, cont: FloatArray) -> float:
    if base[0] == base[-1] == cont[0] == cont[-1]:
        return 1.0  # every value equal: no evidence of any difference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats().mannwhitneyu(base, cont, alternative="two-sided", method="auto")
    p_value = float(result.pvalue)
    return p_value if math.isfinite(p_value) else 1.0


def _ratio_ci(base: FloatArray, cont: FloatArray, seed: int) -> tuple[float, float]:
    """Bootstrap CI of median(cont) / median(base), both positive throughout."""
    if base[0] == base[-1] and cont[0] == cont[-1]:
        ratio = float(cont[0] / base[0])
        return ratio, ratio
    alpha = (1 - CONFIDENCE) / 2
    if min(base.size, cont.size) >= 2 and max(base.size, cont.size) <= SCIPY_BOOTSTRAP_MAX_N:

        def ratio_of_medians(a: FloatArray, b: FloatArray, axis: int = -1) -> FloatArray:
            result: FloatArray = np.median(b, axis=axis) / np.median(a, axis=axis)
            return result

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy_stats().DegenerateDataWarning)
            low, high = percentile_bootstrap((base, cont), ratio_of_medians, seed=seed)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
        ratio = float(np.median(cont) / np.median(base))
        return ratio, ratio
    rng = np.random.default_rng(seed)
    ratios = sample_medians(cont, RATIO_DRAWS, rng) / sample_medians(base, RATIO_DRAWS, rng)
    low_q, high_q = np.quantile(ratios, [alpha, 1 - alpha])
    return float(low_q), float(high_q)


def _words(
    ratio: float | None, median_base: float, median_cont: float, significant: bool, unit: str
) -> tuple[str, str]:
    if not significant:
        return OUTCOME_NOT_SIGNIFICANT, OUTCOME_NOT_SIGNIFICANT
    more, less = {
        "time": ("slower", "faster"),
        "size": ("larger", "smaller"),
        "other": ("higher", "lower"),
    }[unit_kind(unit)]
    if ratio is not None:
        if ratio >= 1:
            return more, f"{ratio:.2f}x {more}"
        return less, f"{1 / ratio:.2f}x {less}"
    word = "higher" if median_cont > median_base else "lower"
    difference = format_quantity(abs(median_cont - median_base), unit)
    return word, f"{word} by {difference}"


# --- groups of runs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """A side of a comparison: a run, a backend, or every run sharing one fact value."""

    label: str
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class ComparisonRow:
    """One compared quantity (metric, backend, case, view, stage) for one contender group."""

    metric: str
    backend: str
    case: str
    view: str
    stage: str
    unit: str
    run_id: str  # the run, when backends of one run are compared; else ""
    baseline: str
    contender: str
    n_baseline: int
    n_contender: int
    median_baseline: float | None
    median_contender: float | None
    ratio: float | None
    ratio_ci_low: float | None
    ratio_ci_high: float | None
    p_value: float | None
    outcome: str
    verdict: str
    accel_baseline: str = "n/a"
    accel_contender: str = "n/a"
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict (warnings as a list, non-finite floats as None)."""
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in data.items()
        }


@dataclass
class ComparisonReport:
    """Every row of one comparison, the groups it compared, and why any were incomparable."""

    group_by: str
    baseline: str
    groups: list[Group]
    rows: list[ComparisonRow]
    incomparable: dict[str, list[str]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the whole comparison."""
        return {
            "group_by": self.group_by,
            "baseline": self.baseline,
            "groups": [{"label": g.label, "run_ids": list(g.run_ids)} for g in self.groups],
            "incomparable": self.incomparable,
            "settings": self.settings,
            "rows": [row.as_dict() for row in self.rows],
        }


def compare_dataset(
    dataset: Dataset,
    group_by: str = "run",
    *,
    baseline: str | None = None,
    stages: bool = False,
    metrics: Sequence[str] = (),
    min_effect: float = DEFAULT_MIN_EFFECT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = BOOTSTRAP_SEED,
    must_match: Sequence[str] = MUST_MATCH_HOST_KEYS,
    ignore_keys: Sequence[str] = (),
) -> ComparisonReport:
    """Compare every group of a dataset with the baseline group (the first one by default).

    ``group_by``: ``run`` (one group per run, in the order given), ``backend`` (backends
    within each run; baseline ``process`` when present), or a run fact path (``kernel``,
    ``cpu.model``...). ``stages=True`` also compares each ``stage.*`` column.
    """
    frame = measured(dataset.samples)
    if frame.empty:
        raise CompareError("nothing to compare: no measured samples in these runs")
    if metrics:
        frame = frame[frame["metric"].astype(str).isin(list(metrics))]
        if frame.empty:
            raise CompareError(f"no samples of metric(s) {', '.join(metrics)} in these runs")
    frame = frame[frame["ok"].to_numpy(dtype=bool)]
    by_backend = group_by == "backend"
    groups, labels = _groups(dataset, frame, group_by)
    if len(groups) < 2:
        what = (
            "backends" if by_backend else f"values of {group_by}" if group_by != "run" else "runs"
        )
        found = ", ".join(g.label for g in groups) or "none"
        raise CompareError(f"need at least two {what} to compare; found: {found}")
    base_group = _pick_baseline(groups, baseline, by_backend)
    frame = frame.assign(_group=labels, _view=view_labels(frame))
    stage_names = stage_columns(frame) if stages else []
    key_columns = ["metric", "backend", "case", "_view"]
    if by_backend:
        key_columns = ["run_id", "metric", "case", "_view"]
    values = _value_arrays(frame, key_columns, stage_names)
    incomparable: dict[str, list[str]] = {}
    if not by_backend:
        skip = {resolve_fact_path(k) for k in ignore_keys}
        if group_by != "run":
            skip.add(resolve_fact_path(group_by))
        for group in groups:
            if group is not base_group:
                reasons = _group_reasons(dataset, base_group, group, must_match, skip, group_by)
                if reasons:
                    incomparable[group.label] = reasons
    rows: list[ComparisonRow] = []
    keys = sorted({key for (_label, key) in values}, key=lambda k: tuple(map(str, k)))
    for group in groups:
        if group is base_group:
            continue
        for key in keys:
            sides = (values.get((base_group.label, key)), values.get((group.label, key)))
            if (by_backend and None in sides) or sides == (None, None):
                continue  # nothing to compare: not this backend pair's quantity
            rows.append(
                _row(
                    key,
                    by_backend,
                    base_group.label,
                    group.label,
                    values.get((base_group.label, key)),
                    values.get((group.label, key)),
                    incomparable.get(group.label, []),
                    min_effect,
                    alpha,
                    seed,
                )
            )
    return ComparisonReport(
        group_by=group_by,
        baseline=base_group.label,
        groups=groups,
        rows=rows,
        incomparable=incomparable,
        settings={
            "min_effect": min_effect,
            "alpha": alpha,
            "confidence": CONFIDENCE,
            "seed": seed,
            "must_match": [k for k in must_match if k not in set(ignore_keys)],
            "stages": stages,
        },
    )


@dataclass
class _Side:
    values: FloatArray
    unit: str
    accel: str


def _value_arrays(
    frame: pd.DataFrame, key_columns: list[str], stage_names: list[str]
) -> dict[tuple[str, tuple[str, ...]], _Side]:
    """{(group label, (metric-ish key..., stage)): sorted values} for every group and key."""
    arrays: dict[tuple[str, tuple[str, ...]], _Side] = {}
    for group_key, part in frame.groupby(["_group", *key_columns], sort=False, observed=True):
        label, *rest = (str(k) for k in group_key)
        accel = accel_of(part)
        unit = str(part["unit"].iloc[0])
        for stage, stage_u, data in stage_values(part, stage_names, unit):
            arrays[(label, (*rest, stage))] = _Side(data, stage_u, accel)
    return arrays


def _groups(dataset: Dataset, frame: pd.DataFrame, group_by: str) -> tuple[list[Group], Any]:
    """The groups in order, and each row's group label."""
    if group_by == "backend":
        names = [str(b) for b in pd.unique(frame["backend"].astype(str))]
        order = sorted(names, key=lambda b: (b != "process", b != "docker", b))
        run_ids = tuple(dataset.run_order())
        return [Group(b, run_ids) for b in order], frame["backend"].astype(str).to_numpy()
    label_of_run: dict[str, str] = {}
    for run_id, run in dataset.runs.items():
        if group_by == "run":
            label_of_run[run_id] = run_id
        else:
            value = fact(run, group_by)
            label_of_run[run_id] = "(absent)" if value is None else str(value)
    present = set(frame["run_id"].astype(str).unique())
    members: dict[str, list[str]] = {}
    for run_id in dataset.run_order():
        if run_id in present:
            members.setdefault(label_of_run[run_id], []).append(run_id)
    groups = [Group(label, tuple(ids)) for label, ids in members.items()]
    labels = frame["run_id"].astype(str).map(label_of_run).to_numpy()
    return groups, labels


def _pick_baseline(groups: list[Group], wanted: str | None, by_backend: bool) -> Group:
    if wanted is None:
        return groups[0]
    exact = [g for g in groups if g.label == wanted]
    if exact:
        return exact[0]
    partial = [g for g in groups if wanted in g.label]
    if len(partial) == 1:
        return partial[0]
    choices = ", ".join(g.label for g in groups)
    raise CompareError(f"baseline {wanted!r} matches no single group; choose one of: {choices}")


def _group_reasons(
    dataset: Dataset,
    base: Group,
    other: Group,
    must_match: Sequence[str],
    skip: set[str],
    group_by: str,
) -> list[str]:
    """Why two groups of runs cannot be compared (empty: they can)."""
    runs = [dataset.runs[r] for r in (*base.run_ids, *other.run_ids)]
    reasons: list[str] = []
    if not group_by.startswith("scenario"):
        hashes = {run.scenario_sha256 for run in runs}
        if len(hashes) > 1:
            mine = sorted({dataset.runs[r].scenario_sha256[:12] for r in base.run_ids})
            theirs = sorted({dataset.runs[r].scenario_sha256[:12] for r in other.run_ids})
            reasons.append(
                f"scenario differs (sha256 {'/'.join(mine)} vs {'/'.join(theirs)})"
                if mine != theirs
                else f"runs of different scenarios pooled ({', '.join(sorted(hashes))[:60]})"
            )
    for key in must_match:
        path = resolve_fact_path(key)
        if path in skip or path.startswith("host.kernel"):
            continue
        values = [fact(run, path) for run in runs]
        if not facts_agree(path, values):
            mine_v = sorted({str(fact(dataset.runs[r], path)) for r in base.run_ids})
            theirs_v = sorted({str(fact(dataset.runs[r], path)) for r in other.run_ids})
            reasons.append(f"{key} differs ({'/'.join(mine_v)} vs {'/'.join(theirs_v)})")
    return reasons


def facts_agree(path: str, values: list[Any]) -> bool:
    """True when a host fact has one value across runs (memory size within a tolerance)."""
    if path == "host.memory.total_bytes":
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        if len(numbers) != len(values):
            return len(set(map(str, values))) == 1
        return (max(numbers) - min(numbers)) <= MEMORY_TOTAL_TOLERANCE * max(numbers)
    return len({json.dumps(v, sort_keys=True, default=str) for v in values}) == 1


def _row(
    key: tuple[str, ...],
    by_backend: bool,
    base_label: str,
    cont_label: str,
    base: _Side | None,
    cont: _Side | None,
    group_reasons: list[str],
    min_effect: float,
    alpha: float,
    seed: int,
) -> ComparisonRow:
    if by_backend:
        run_id, metric, case, view, stage = key
        backend = f"{base_label} -> {cont_label}"
    else:
        metric, backend, case, view, stage = key
        run_id = ""
    present = base or cont
    unit = present.unit if present is not None else ""
    head: dict[str, Any] = {
        "metric": metric,
        "backend": backend,
        "case": case,
        "view": view,
        "stage": stage,
        "unit": unit,
        "run_id": run_id,
        "baseline": base_label,
        "contender": cont_label,
        "accel_baseline": base.accel if base else "n/a",
        "accel_contender": cont.accel if cont else "n/a",
    }
    empty: dict[str, Any] = {
        "n_baseline": base.values.size if base else 0,
        "n_contender": cont.values.size if cont else 0,
        "median_baseline": float(np.median(base.values)) if base else None,
        "median_contender": float(np.median(cont.values)) if cont else None,
        "ratio": None,
        "ratio_ci_low": None,
        "ratio_ci_high": None,
        "p_value": None,
    }
    if base is None or cont is None:
        side = base_label if base is None else cont_label
        return ComparisonRow(
            **head, **empty, outcome=OUTCOME_MISSING, verdict=f"missing: no samples in {side}"
        )
    reasons = list(group_reasons)
    if not by_backend and base.accel != cont.accel:
        reasons.append(f"accelerator differs ({base.accel} vs {cont.accel})")
    notes = _stability_notes(base, cont, base_label, cont_label)
    if "tcg" in (base.accel, cont.accel):
        notes.append("VM ran under TCG (software emulation), not KVM")
    if reasons:
        return ComparisonRow(
            **head,
            **empty,
            outcome=OUTCOME_INCOMPARABLE,
            verdict=f"incomparable: {'; '.join(reasons)}",
            warnings=tuple(notes),
        )
    result = compare_samples(
        base.values, cont.values, unit=unit, min_effect=min_effect, alpha=alpha, seed=seed
    )
    return ComparisonRow(
        **head,
        n_baseline=result.n_baseline,
        n_contender=result.n_contender,
        median_baseline=result.median_baseline,
        median_contender=result.median_contender,
        ratio=result.ratio,
        ratio_ci_low=result.ratio_ci_low,
        ratio_ci_high=result.ratio_ci_high,
        p_value=result.p_value,
        outcome=result.outcome,
        verdict=result.verdict,
        warnings=tuple(notes),
    )


def _stability_notes(base: _Side, cont: _Side, base_label: str, cont_label: str) -> list[str]:
    notes: list[str] = []
    for label, side in ((base_label, base), (cont_label, cont)):
        for warning in describe(side.values, presorted=True, ci=False).warnings:
            notes.append(f"{label}: {warning}")
    return notes


# --- output formats ----------------------------------------------------------------------

CSV_COLUMNS = (
    "metric",
    "backend",
    "case",
    "view",
    "stage",
    "unit",
    "run_id",
    "baseline",
    "contender",
    "n_baseline",
    "n_contender",
    "median_baseline",
    "median_contender",
    "ratio",
    "ratio_ci_low",
    "ratio_ci_high",
    "p_value",
    "outcome",
    "verdict",
    "accel_baseline",
    "accel_contender",
    "warnings",
)


def format_json(report: ComparisonReport) -> str:
    """The comparison as indented JSON."""
    return json.dumps(report.as_dict(), indent=2) + "\n"


def format_csv(report: ComparisonReport) -> str:
    """One CSV row per comparison row; warnings joined with ``; ``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        data = row.as_dict()
        data["warnings"] = "; ".join(row.warnings)
        writer.writerow(["" if data[c] is None else data[c] for c in CSV_COLUMNS])
    return out.getvalue()


def format_ratio(row: ComparisonRow) -> str:
    """``1.31 [1.22, 1.40]`` or ``-``."""
    if row.ratio is None:
        return "-"
    if row.ratio_ci_low is None or row.ratio_ci_high is None:
        return f"{row.ratio:.3f}"
    return f"{row.ratio:.3f} [{row.ratio_ci_low:.3f}, {row.ratio_ci_high:.3f}]"


def row_title(row: ComparisonRow) -> str:
    """What a row measures, for tables: ``startup docker startup`` plus view and stage."""
    parts = [row.metric, row.backend, row.case]
    if row.view:
        parts.append(row.view)
    if row.stage != VALUE_STAGE:
        parts.append(row.stage)
    return " ".join(parts)


def result_cells(row: ComparisonRow) -> list[str]:
    """A row's outcome as table cells: both medians, ratio [CI], p, verdict, warnings."""
    return [
        format_quantity(row.median_baseline, row.unit),
        format_quantity(row.median_contender, row.unit),
        format_ratio(row),
        "-" if row.p_value is None else f"{row.p_value:.3g}",
        row.verdict,
        "; ".join(row.warnings),
    ]


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_markdown(report: ComparisonReport) -> str:
    """A GitHub-flavoured Markdown table per contender, with the settings stated."""
    lines = [
        f"Comparison by {report.group_by}; baseline: `{report.baseline}`. "
        f"Significant = Mann-Whitney U p < {report.settings.get('alpha')} and effect >= "
        f"{report.settings.get('min_effect', 0):.0%}; ratio = contender / baseline "
        f"[95% bootstrap CI].",
        "",
    ]
    for label, reasons in report.incomparable.items():
        lines.append(f"- **{_markdown_cell(label)}**: incomparable: {'; '.join(reasons)}")
    if report.incomparable:
        lines.append("")
    header = (
        "| what | run | contender | baseline median | contender median | ratio [CI] | p "
        "| verdict | warnings |"
    )
    lines += [header, "|" + "---|" * 9]
    for row in report.rows:
        cells = [row_title(row), row.run_id, row.contender, *result_cells(row)]
        lines.append("| " + " | ".join(_markdown_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
