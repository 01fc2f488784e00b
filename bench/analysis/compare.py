"""Comparisons between runs, sets of runs, kernels, hosts or backends: block-level verdicts.

Each compared quantity (metric, backend, case, view, stage) gets one row with a
three-way verdict from ``bench.analysis.verdict``: the unit of evidence is the block
(one repeat of the plan; a run without repeats is one block), never the pooled sample.
A row states the ratio with its 95% CI, the absolute difference, the declared margin it
was judged against, the minimum detectable effect, the p-value raw and adjusted over the
rows (Holm), and the verdict: ``1.31x slower``, ``larger by 147 MiB``, ``equivalent
within +-5%`` or ``inconclusive`` (with why). Across runs the run is the unit.

Sides are:

- runs (``group_by="run"``: each run is a side; the first is the baseline);
- explicit sets of runs or of blocks of runs (``sides=[Group, Group]``: what
  ``bench compare A1 A2 -- B1 B2`` and ``RUN@0-2`` build);
- every run sharing the value of a run fact (``"kernel"``, ``"cpu.model"``,
  ``"software.docker.runc"``): those runs' blocks are pooled as blocks;
- backends within each run (``"backend"``: the VM vs container vs native question),
  compared block by block (paired), the first backend in mechanism order (native
  first) being the baseline.

Two sides are *incomparable*, and said to be with the reason, when their scenario
hashes differ or a must-match host key differs (CPU model, core count, memory size,
cgroup version), or, row by row, when VM samples ran under different accelerators. The
kernel is never a must-match key: comparing kernels is the point. When the sides'
background load (``bench.analysis.noise``) differs beyond a threshold, every row of that
side says so, with the figures.

A calibration (``bench.analysis.calibration``) found beside the runs
(``results/<host>/calibration.json``) is used unless told otherwise: it supplies the
level of noise a side cannot measure itself (the run level of a side with one run), and
never lowers what a side's own data show; it never touches the margin.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from bench.analysis.columns import equals, isin, unique_text
from bench.analysis.columns import text as column_text
from bench.analysis.dataset import Dataset, fact, resolve_fact_path
from bench.analysis.multiplicity import ALPHA, HOLM, METHOD_NAMES, adjust_family
from bench.analysis.noise import LoadComparison, compare_load, noise_table, without_noise
from bench.analysis.order import BackendOrder
from bench.analysis.stats import (
    BOOTSTRAP_SEED,
    CONFIDENCE,
    VALUE_STAGE,
    FloatArray,
    accel_of,
    describe,
    measured,
    stage_columns,
    stage_values,
    view_labels,
)
from bench.analysis.units import format_quantity, mib_in_unit, unit_kind
from bench.analysis.verdict import (
    DEFAULT_MIN_EFFECT,
    DIRECTIONAL_OUTCOMES,
    MODE_RATIO,
    OUTCOME_INCOMPARABLE,
    OUTCOME_INCONCLUSIVE,
    OUTCOME_MISSING,
    BlockNoise,
    Verdict,
    compare_blocks,
    percent,
    signed_quantity,
)
from bench.errors import BenchError

if False:  # pragma: no cover - typing only (calibration imports this module)
    from bench.analysis.calibration import Calibration

# Sizes are compared absolutely; differences below this many MiB are never a verdict.
DEFAULT_MIN_ABS_MIB = 1.0
# Host facts two compared groups must share (paths under run.json's host object).
MUST_MATCH_HOST_KEYS = ("cpu.model", "cpu.logical_cores", "memory.total_bytes", "cgroup.version")
# Kernels reserve different amounts of RAM, so one machine's MemTotal moves a little
# between kernels: sizes within this fraction are the same machine.
MEMORY_TOTAL_TOLERANCE = 0.02
# Metrics whose rows compare absolute values whatever their unit (limit checks measure
# cores, forks and bytes against a set limit: a ratio of two near-limit values hides
# what matters).
ABSOLUTE_METRICS = frozenset({"limits"})

CalibrationChoice = Literal["auto"] | None


class CompareError(BenchError):
    """A comparison that cannot be set up (unknown baseline, one group only, no samples)."""

    exit_code = 2


@dataclass(frozen=True)
class Member:
    """A run on one side of a comparison, or only some of its blocks."""

    run_id: str
    blocks: frozenset[int] | None = None

    def text(self) -> str:
        """``RUN`` or ``RUN@0,1,2``."""
        if self.blocks is None:
            return self.run_id
        return f"{self.run_id}@{','.join(str(b) for b in sorted(self.blocks))}"


@dataclass(frozen=True)
class Group:
    """A side of a comparison: a run, a set of runs or blocks, a backend, or a fact value."""

    label: str
    run_ids: tuple[str, ...]
    members: tuple[Member, ...] = ()

    def all_members(self) -> tuple[Member, ...]:
        """The members, or every block of each run when none were given."""
        return self.members or tuple(Member(r) for r in self.run_ids)


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
    median_baseline: float | None  # the side's centre: a geometric mean of block medians
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
    blocks_baseline: int = 0
    blocks_contender: int = 0
    mode: str = MODE_RATIO
    difference: float | None = None
    difference_ci_low: float | None = None
    difference_ci_high: float | None = None
    margin: float | None = None
    margin_source: str = ""
    mde: float | None = None
    noise: str = ""
    mechanism: str = ""
    notes: tuple[str, ...] = ()  # how the verdict was reached (noise source, borrowed noise)
    # p_value adjusted over every row of the comparison (Holm); None without a p-value
    p_adjusted: float | None = None
    # its p-value is the blocks' of one run only: shown, never a verdict, not in the family
    run_noise_unknown: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict (warnings and notes as lists, non-finite floats as None)."""
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        data["notes"] = list(self.notes)
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
    load: dict[str, LoadComparison] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the whole comparison."""
        return {
            "group_by": self.group_by,
            "baseline": self.baseline,
            "groups": [
                {
                    "label": g.label,
                    "run_ids": list(g.run_ids),
                    "members": [m.text() for m in g.all_members()],
                }
                for g in self.groups
            ],
            "incomparable": self.incomparable,
            "settings": self.settings,
            "background_load": {
                label: {
                    "flagged": load.flagged,
                    "summary": load.summary(),
                    "blocks": [load.blocks_baseline, load.blocks_contender],
                    "quantities": [asdict(d) for d in load.differences],
                }
                for label, load in self.load.items()
            },
            "notes": self.notes,
            "rows": [row.as_dict() for row in self.rows],
        }


def compare_dataset(
    dataset: Dataset,
    group_by: str = "run",
    *,
    sides: Sequence[Group] | None = None,
    baseline: str | None = None,
    stages: bool = False,
    metrics: Sequence[str] = (),
    min_effect: float = DEFAULT_MIN_EFFECT,
    min_abs_mib: float = DEFAULT_MIN_ABS_MIB,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
    must_match: Sequence[str] = MUST_MATCH_HOST_KEYS,
    ignore_keys: Sequence[str] = (),
    calibration: Calibration | CalibrationChoice = "auto",
) -> ComparisonReport:
    """Compare every group of a dataset with the baseline group (the first one by default).

    ``group_by``: ``run`` (one group per run, in the order given), ``backend`` (backends
    within each run, paired by block), or a run fact path (``kernel``, ``cpu.model``...).
    ``sides`` (two or more explicit groups) overrides ``group_by``. ``stages=True`` also
    compares each ``stage.*`` column. ``calibration``: ``"auto"`` uses the calibration
    beside the runs when it matches their host, None uses none, or a ``Calibration``.
    """
    all_measured = measured(dataset.samples)
    noise = noise_table(all_measured)
    frame = without_noise(all_measured)
    if frame.empty:
        raise CompareError("nothing to compare: no measured samples in these runs")
    # only the columns a comparison reads: every selection below copies what it carries
    read = ["run_id", "metric", "backend", "case", "unit", "value", "ok", "block"]
    read += [c for c in frame.columns if c.startswith("stage.")] if stages else []
    read += [c for c in ("label.view", "label.role", "label.accel", "label.mechanism")]
    frame = frame[[c for c in dict.fromkeys(read) if c in frame.columns]]
    if metrics:
        frame = frame[isin(frame["metric"], metrics)]
        if frame.empty:
            raise CompareError(f"no samples of metric(s) {', '.join(metrics)} in these runs")
    succeeded = frame["ok"].to_numpy(dtype=bool)
    if not succeeded.all():
        frame = frame[succeeded]
    if "block" not in frame.columns:
        frame = frame.assign(block=0)
    frame = frame.assign(_view=view_labels(frame))
    order = BackendOrder.from_frame(frame)
    by_backend = sides is None and group_by == "backend"
    if sides is not None:
        groups = _checked_sides(dataset, sides)
        group_by = "sides"
    else:
        groups = _groups(dataset, frame, group_by, order)
    if len(groups) < 2:
        what = (
            "backends" if by_backend else f"values of {group_by}" if group_by != "run" else "runs"
        )
        found = ", ".join(g.label for g in groups) or "none"
        raise CompareError(f"need at least two {what} to compare; found: {found}")
    base_group = _pick_baseline(groups, baseline)
    chosen, calibration_notes = _resolve_calibration(dataset, calibration)
    stage_names = stage_columns(frame) if stages else []
    if by_backend:
        values = {
            (backend, key): side
            for backend in (g.label for g in groups)
            for key, side in _collect(
                frame[equals(frame["backend"], backend)],
                ["run_id", "metric", "case", "_view"],
                stage_names,
            ).items()
        }
    else:
        values = {
            (group.label, key): side
            for group in groups
            for key, side in _collect(
                frame[_member_mask(frame, group)],
                ["metric", "backend", "case", "_view"],
                stage_names,
            ).items()
        }
    incomparable: dict[str, list[str]] = {}
    load: dict[str, LoadComparison] = {}
    if not by_backend:
        skip = {resolve_fact_path(k) for k in ignore_keys}
        if group_by not in {"run", "sides"}:
            skip.add(resolve_fact_path(group_by))
        block_ids = _block_ids(dataset.samples)
        for group in groups:
            if group is base_group:
                continue
            reasons = _group_reasons(dataset, base_group, group, must_match, skip, group_by)
            if reasons:
                incomparable[group.label] = reasons
            comparison = compare_load(
                noise, _blocks_of(base_group, block_ids), _blocks_of(group, block_ids)
            )
            if comparison is not None:
                load[group.label] = comparison
    context = _RowContext(
        by_backend=by_backend,
        min_effect=min_effect,
        min_abs_mib=min_abs_mib,
        confidence=confidence,
        seed=seed,
        calibration=chosen,
        scenario_sha256=_common_scenario(dataset),
        order=order,
    )
    rows: list[ComparisonRow] = []
    keys = sorted({key for (_label, key) in values}, key=lambda k: tuple(map(str, k)))
    for group in groups:
        if group is base_group:
            continue
        flagged = load.get(group.label)
        load_warning = (
            f"background load differs: {flagged.summary()}"
            if flagged is not None and flagged.flagged
            else ""
        )
        for key in keys:
            base_side = values.get((base_group.label, key))
            cont_side = values.get((group.label, key))
            if (by_backend and None in (base_side, cont_side)) or (base_side, cont_side) == (
                None,
                None,
            ):
                continue  # nothing to compare: not this backend pair's quantity
            rows.append(
                _row(
                    key,
                    base_group.label,
                    group.label,
                    base_side,
                    cont_side,
                    incomparable.get(group.label, []),
                    load_warning,
                    context,
                )
            )
    rows = corrected_for_multiplicity(rows)
    return ComparisonReport(
        group_by=group_by,
        baseline=base_group.label,
        groups=groups,
        rows=rows,
        incomparable=incomparable,
        settings={
            "statistic": "t interval on block medians (log scale for ratios; across runs "
            "on run means); paired by block for backends of one run; directional when "
            "significant after Holm's correction over the rows and beyond the margin",
            "min_effect": min_effect,
            "min_abs_mib": min_abs_mib,
            "confidence": confidence,
            "seed": seed,
            "must_match": [k for k in must_match if k not in set(ignore_keys)],
            "stages": stages,
            "calibration": str(chosen.path) if chosen is not None and chosen.path else None,
        },
        load=load,
        notes=calibration_notes,
    )


def corrected_for_multiplicity(
    rows: list[ComparisonRow], method: str = HOLM
) -> list[ComparisonRow]:
    """Rows with their p-values adjusted over the family (every row that has one).

    A directional row whose adjusted p is not under 5% is no longer significant: it is
    inconclusive, and says so with both p-values. A row whose run-to-run noise is unknown
    decides nothing, and its p-value (of the blocks of one run) is left out of the family.
    """
    adjusted = adjust_family(
        [None if row.run_noise_unknown else row.p_value for row in rows], method
    )
    members = sum(p is not None for p in adjusted)
    result = list(rows)
    for index, p_adjusted in enumerate(adjusted):
        if p_adjusted is None:
            continue
        row = replace(rows[index], p_adjusted=p_adjusted)
        if row.outcome in DIRECTIONAL_OUTCOMES and p_adjusted >= ALPHA:
            row = replace(
                row,
                outcome=OUTCOME_INCONCLUSIVE,
                verdict=f"inconclusive: not significant over {members} rows "
                f"({METHOD_NAMES[method]}: p {row.p_value:.3g} -> {p_adjusted:.3g})",
            )
        result[index] = row
    return result


def _resolve_calibration(
    dataset: Dataset, choice: Calibration | CalibrationChoice
) -> tuple[Calibration | None, list[str]]:
    """The calibration to use and what to tell the user about it."""
    from bench.analysis.calibration import find_calibration

    if choice is None:
        return None, ["calibration not used (--no-calibration)"]
    explicit = choice != "auto"
    found = find_calibration(dataset.runs.values()) if choice == "auto" else choice
    if found is None:
        return None, [
            "no calibration for this host: margins are the declared minimum effect, and "
            "a side with one block has unknown run-to-run noise (run bench calibrate)"
        ]
    assert not isinstance(found, str)
    mismatch = found.mismatch(dataset.runs.values())
    if mismatch:
        if explicit:
            raise CompareError(f"calibration {found.path} does not describe these runs: {mismatch}")
        return None, [f"calibration {found.path} not used: {mismatch}"]
    when = found.updated_at_utc[:19] or "?"
    return found, [f"calibration: {found.path} (host {found.host}, updated {when})"]


def _checked_sides(dataset: Dataset, sides: Sequence[Group]) -> list[Group]:
    labels = [g.label for g in sides]
    if len(set(labels)) != len(labels):
        raise CompareError(f"sides need distinct labels: {labels}")
    for group in sides:
        unknown = [m.run_id for m in group.all_members() if m.run_id not in dataset.runs]
        if unknown:
            raise CompareError(f"side {group.label}: run(s) not loaded: {', '.join(unknown)}")
    return list(sides)


def _member_mask(frame: pd.DataFrame, group: Group) -> Any:
    run_ids = column_text(frame["run_id"])
    blocks = frame["block"].to_numpy()
    mask = np.zeros(len(frame), dtype=bool)
    for member in group.all_members():
        match = run_ids == member.run_id
        if member.blocks is not None:
            match &= np.isin(blocks, list(member.blocks))
        mask |= match
    return mask


def _block_ids(frame: pd.DataFrame) -> set[tuple[str, int]]:
    if frame.empty:
        return set()
    blocks = frame["block"] if "block" in frame.columns else pd.Series(0, index=frame.index)
    pairs = pd.DataFrame({"r": column_text(frame["run_id"]), "b": blocks.astype(int).to_numpy()})
    return {(str(r), int(b)) for r, b in pairs.drop_duplicates().itertuples(index=False)}


def _blocks_of(group: Group, block_ids: set[tuple[str, int]]) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for member in group.all_members():
        found.extend(
            (r, b)
            for r, b in block_ids
            if r == member.run_id and (member.blocks is None or b in member.blocks)
        )
    return found


def _common_scenario(dataset: Dataset) -> str:
    hashes = {run.scenario_sha256 for run in dataset.runs.values()}
    return next(iter(hashes)) if len(hashes) == 1 else ""


@dataclass
class _Side:
    """One side's values of one quantity, block by block."""

    blocks: dict[tuple[str, int], FloatArray]
    unit: str
    accel: str
    mechanism: str

    @property
    def size(self) -> int:
        return sum(v.size for v in self.blocks.values())

    def pooled(self) -> FloatArray:
        return np.sort(np.concatenate(list(self.blocks.values())))


def _collect(
    frame: pd.DataFrame, key_columns: list[str], stage_names: list[str]
) -> dict[tuple[str, ...], _Side]:
    """{(key..., stage): the values of each block} of a frame."""
    sides: dict[tuple[str, ...], _Side] = {}
    if frame.empty:
        return sides
    columns = [*key_columns, *(c for c in ("run_id", "block") if c not in key_columns)]
    # grouping reorders every column it carries: carry only those read below
    carried = [*columns, "unit", "value", *stage_names]
    carried += [c for c in ("label.accel", "label.mechanism") if c in frame.columns]
    frame = frame[list(dict.fromkeys(carried))]
    for group_key, part in frame.groupby(columns, sort=False, observed=True):
        named = {c: str(v) for c, v in zip(columns, group_key, strict=True)}
        key = tuple(named[c] for c in key_columns)
        block = (named["run_id"], int(named["block"]))
        unit = str(part["unit"].iloc[0])
        accel = accel_of(part)
        mechanism = ""
        if "label.mechanism" in part.columns:
            known = part["label.mechanism"].dropna()
            mechanism = str(known.iloc[0]) if len(known) else ""
        for stage, stage_unit, data in stage_values(part, stage_names, unit):
            side = sides.setdefault((*key, stage), _Side({}, stage_unit, accel, mechanism))
            side.blocks[block] = data
            if side.accel != accel:
                side.accel = ",".join(sorted({*side.accel.split(","), *accel.split(",")}))
    return sides


def _groups(
    dataset: Dataset, frame: pd.DataFrame, group_by: str, order: BackendOrder
) -> list[Group]:
    """The groups in order."""
    if group_by == "backend":
        names = order.sorted(unique_text(frame["backend"]))
        run_ids = tuple(dataset.run_order())
        return [Group(b, run_ids) for b in names]
    label_of_run: dict[str, str] = {}
    for run_id, run in dataset.runs.items():
        if group_by == "run":
            label_of_run[run_id] = run_id
        else:
            value = fact(run, group_by)
            label_of_run[run_id] = "(absent)" if value is None else str(value)
    present = set(unique_text(frame["run_id"]))
    members: dict[str, list[str]] = {}
    for run_id in dataset.run_order():
        if run_id in present:
            members.setdefault(label_of_run[run_id], []).append(run_id)
    return [Group(label, tuple(ids)) for label, ids in members.items()]


def _pick_baseline(groups: list[Group], wanted: str | None) -> Group:
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
    runs = [dataset.runs[r] for r in dict.fromkeys((*base.run_ids, *other.run_ids))]
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


@dataclass(frozen=True)
class _RowContext:
    by_backend: bool
    min_effect: float
    min_abs_mib: float
    confidence: float
    seed: int
    calibration: Calibration | None
    scenario_sha256: str
    order: BackendOrder


def _noise_for(
    context: _RowContext, quantity: tuple[str, str, str, str, str], accel: str
) -> BlockNoise | None:
    if context.calibration is None:
        return None
    entry = context.calibration.lookup(
        quantity, accel=accel, scenario_sha256=context.scenario_sha256
    )
    return entry.noise() if entry is not None else None


def _row(
    key: tuple[str, ...],
    base_label: str,
    cont_label: str,
    base: _Side | None,
    cont: _Side | None,
    group_reasons: list[str],
    load_warning: str,
    context: _RowContext,
) -> ComparisonRow:
    if context.by_backend:
        run_id, metric, case, view, stage = key
        backend = f"{base_label} -> {cont_label}"
    else:
        metric, backend, case, view, stage = key
        run_id = ""
    present = base or cont
    unit = present.unit if present is not None else ""
    mechanism = present.mechanism if present is not None else ""
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
        "mechanism": "" if context.by_backend else mechanism,
    }
    described: dict[str, Any] = {
        "n_baseline": base.size if base else 0,
        "n_contender": cont.size if cont else 0,
        "blocks_baseline": len(base.blocks) if base else 0,
        "blocks_contender": len(cont.blocks) if cont else 0,
        "median_baseline": float(np.median(base.pooled())) if base else None,
        "median_contender": float(np.median(cont.pooled())) if cont else None,
        "ratio": None,
        "ratio_ci_low": None,
        "ratio_ci_high": None,
        "p_value": None,
    }
    if base is None or cont is None:
        side = base_label if base is None else cont_label
        return ComparisonRow(
            **head, **described, outcome=OUTCOME_MISSING, verdict=f"missing: no samples in {side}"
        )
    reasons = list(group_reasons)
    if not context.by_backend and base.accel != cont.accel:
        reasons.append(f"accelerator differs ({base.accel} vs {cont.accel})")
    notes = _stability_notes(base, cont, base_label, cont_label)
    if "tcg" in (base.accel, cont.accel):
        notes.append("VM ran under TCG (software emulation), not KVM")
    if load_warning:
        notes.append(load_warning)
    if reasons:
        return ComparisonRow(
            **head,
            **described,
            outcome=OUTCOME_INCOMPARABLE,
            verdict=f"incomparable: {'; '.join(reasons)}",
            warnings=tuple(notes),
        )
    if context.by_backend:
        quantity_base = (metric, base_label, case, view, stage)
        quantity_cont = (metric, cont_label, case, view, stage)
        block_ids = sorted(set(base.blocks) | set(cont.blocks))
        empty = np.empty(0, dtype=np.float64)
        base_blocks = [base.blocks.get(b, empty) for b in block_ids]
        cont_blocks = [cont.blocks.get(b, empty) for b in block_ids]
        base_runs = cont_runs = None  # paired block by block: each pair shares its run
    else:
        quantity_base = quantity_cont = (metric, backend, case, view, stage)
        base_ids, cont_ids = sorted(base.blocks), sorted(cont.blocks)
        base_blocks = [base.blocks[b] for b in base_ids]
        cont_blocks = [cont.blocks[b] for b in cont_ids]
        # across runs the run is the unit of replication (bench.analysis.verdict)
        base_runs, cont_runs = [r for r, _ in base_ids], [r for r, _ in cont_ids]
    min_abs = mib_in_unit(context.min_abs_mib, unit) if unit_kind(unit) == "size" else 0.0
    verdict = compare_blocks(
        base_blocks,
        cont_blocks,
        unit=unit,
        absolute=metric in ABSOLUTE_METRICS,
        min_effect=context.min_effect,
        min_abs=min_abs or 0.0,
        noise_baseline=_noise_for(context, quantity_base, base.accel),
        noise_contender=_noise_for(context, quantity_cont, cont.accel),
        paired=context.by_backend,
        confidence=context.confidence,
        seed=context.seed,
        runs_baseline=base_runs,
        runs_contender=cont_runs,
    )
    return row_from_verdict(head, verdict, notes)


def row_from_verdict(
    head: dict[str, Any], verdict: Verdict, warnings: Iterable[str]
) -> ComparisonRow:
    """A comparison row from its key fields and a block verdict."""
    return ComparisonRow(
        **head,
        n_baseline=verdict.n_baseline,
        n_contender=verdict.n_contender,
        blocks_baseline=verdict.blocks_baseline,
        blocks_contender=verdict.blocks_contender,
        median_baseline=verdict.median_baseline,
        median_contender=verdict.median_contender,
        ratio=verdict.ratio,
        ratio_ci_low=verdict.ratio_ci_low,
        ratio_ci_high=verdict.ratio_ci_high,
        p_value=verdict.p_value,
        outcome=verdict.outcome,
        verdict=verdict.verdict,
        warnings=tuple(warnings),
        mode=verdict.mode,
        difference=verdict.difference,
        difference_ci_low=verdict.difference_ci_low,
        difference_ci_high=verdict.difference_ci_high,
        margin=verdict.margin,
        margin_source=verdict.margin_source,
        mde=verdict.mde,
        noise=verdict.noise,
        notes=verdict.notes,
        run_noise_unknown=verdict.run_noise_unknown,
    )


def _stability_notes(base: _Side, cont: _Side, base_label: str, cont_label: str) -> list[str]:
    notes: list[str] = []
    for label, side in ((base_label, base), (cont_label, cont)):
        values = side.pooled()
        stats = describe(
            values, presorted=True, ci=False, replicated=values.size > len(side.blocks)
        )
        for warning in stats.warnings:
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
    "blocks_baseline",
    "blocks_contender",
    "median_baseline",
    "median_contender",
    "ratio",
    "ratio_ci_low",
    "ratio_ci_high",
    "difference",
    "difference_ci_low",
    "difference_ci_high",
    "mode",
    "margin",
    "margin_source",
    "mde",
    "noise",
    "p_value",
    "outcome",
    "verdict",
    "accel_baseline",
    "accel_contender",
    "warnings",
    "notes",
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
        data["notes"] = "; ".join(row.notes)
        writer.writerow(["" if data[c] is None else data[c] for c in CSV_COLUMNS])
    return out.getvalue()


def format_ratio(row: ComparisonRow) -> str:
    """``1.31 [1.22, 1.40]``, a bare ratio for absolute rows, or ``-``."""
    if row.ratio is None:
        return "-"
    if row.ratio_ci_low is None or row.ratio_ci_high is None:
        return f"{row.ratio:.3g}x"
    return f"{row.ratio:.3f} [{row.ratio_ci_low:.3f}, {row.ratio_ci_high:.3f}]"


def format_difference(row: ComparisonRow) -> str:
    """``+12.4 ms``; absolute rows with their CI: ``+147 MiB [+140 MiB, +155 MiB]``."""
    text = signed_quantity(row.difference, row.unit)
    if row.difference_ci_low is not None and row.difference_ci_high is not None:
        low = signed_quantity(row.difference_ci_low, row.unit)
        high = signed_quantity(row.difference_ci_high, row.unit)
        text += f" [{low}, {high}]"
    return text


def format_p(row: ComparisonRow) -> str:
    """The p-value and, beside it, the same adjusted over the comparison's rows (Holm).

    ``0.003 / 0.021``; ``-`` without one (noise unknown).
    """
    if row.p_value is None:
        return "-"
    adjusted = row.p_adjusted if row.p_adjusted is not None else row.p_value
    return f"{row.p_value:.2g} / {adjusted:.2g}"


def format_margin(row: ComparisonRow) -> str:
    """``+-5% (min effect)`` or ``+-1.00 MiB (absolute floor)``: declared, never measured."""
    if row.margin is None:
        return "-"
    if row.mode == MODE_RATIO:
        return f"±{percent(row.margin)} ({row.margin_source})"
    return f"±{format_quantity(row.margin, row.unit)} ({row.margin_source})"


def format_mde(row: ComparisonRow) -> str:
    """The minimum detectable effect: ``12%`` or ``3.1 MiB``; ``-`` when noise is unknown."""
    if row.mde is None:
        return "-"
    if row.mode == MODE_RATIO:
        return percent(row.mde)
    return format_quantity(row.mde, row.unit)


def format_blocks(row: ComparisonRow) -> str:
    """Blocks per side and where the noise came from: ``3/3 blocks``, ``1/1 calibration``."""
    if not row.blocks_baseline and not row.blocks_contender:
        return "-"
    counts = f"{row.blocks_baseline}/{row.blocks_contender}"
    return f"{counts} {row.noise}" if row.noise else counts


def row_title(row: ComparisonRow) -> str:
    """What a row measures, for tables: ``startup docker startup`` plus view and stage."""
    parts = [row.metric, row.backend, row.case]
    if row.view:
        parts.append(row.view)
    if row.stage != VALUE_STAGE:
        parts.append(row.stage)
    return " ".join(parts)


RESULT_COLUMNS = (
    "baseline median",
    "contender median",
    "ratio [95% CI]",
    "difference",
    "margin",
    "MDE",
    "blocks",
    "p / Holm",
    "verdict",
    "warnings",
)


def figure_cells(row: ComparisonRow) -> list[str]:
    """A row's figures as table cells: ``RESULT_COLUMNS`` up to the verdict."""
    return [
        format_quantity(row.median_baseline, row.unit),
        format_quantity(row.median_contender, row.unit),
        format_ratio(row),
        format_difference(row),
        format_margin(row),
        format_mde(row),
        format_blocks(row),
        format_p(row),
    ]


def result_cells(row: ComparisonRow) -> list[str]:
    """A row's outcome as table cells, in ``RESULT_COLUMNS`` order."""
    return [*figure_cells(row), row.verdict, "; ".join(row.warnings)]


def method_text(report: ComparisonReport) -> str:
    """One sentence on how the verdicts were reached, for captions and headers."""
    settings = report.settings
    confidence = settings.get("confidence", CONFIDENCE)
    return (
        f"Verdicts from a {confidence:.0%} t interval on block medians (inside a run the "
        "block is the unit, across runs the run; log scale for ratios, absolute for sizes "
        "and limits); slower/faster when the difference is significant after Holm's "
        "correction over every row and beyond the margin, equivalent when the interval "
        f"lies inside it. Margin = min effect {percent(settings.get('min_effect', 0.05))}, "
        "declared; MDE = the smallest effect this design tells from no change with 80% "
        "power (underpowered when it exceeds the margin)."
    )


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_markdown(report: ComparisonReport) -> str:
    """A GitHub-flavoured Markdown table of every row, with the method stated."""
    lines = [
        f"Comparison by {report.group_by}; baseline: `{report.baseline}`. {method_text(report)}",
        "",
    ]
    for note in report.notes:
        lines.append(f"- {_markdown_cell(note)}")
    for label, reasons in report.incomparable.items():
        lines.append(f"- **{_markdown_cell(label)}**: incomparable: {'; '.join(reasons)}")
    for label, load in report.load.items():
        if load.flagged:
            lines.append(
                f"- **{_markdown_cell(label)}**: background load differs: {load.summary()}"
            )
    lines.append("")
    header = ["what", "run", "contender", *RESULT_COLUMNS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report.rows:
        cells = [row_title(row), row.run_id, row.contender, *result_cells(row)]
        lines.append("| " + " | ".join(_markdown_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def condensed_warnings(report: ComparisonReport, *, limit: int = 5) -> list[str]:
    """The report's row warnings and notes, each said once, most frequent first.

    A warning shared by many rows (one run's "too few samples", TCG, a background-load
    difference) is one line with the number of rows it applies to; at most ``limit``
    lines, plus how many more kinds there were.
    """
    counts: dict[str, int] = {}
    for row in report.rows:
        for text in dict.fromkeys((*row.notes, *row.warnings)):
            counts[text] = counts.get(text, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    lines = [text if count == 1 else f"{text} ({count} rows)" for text, count in ordered[:limit]]
    if len(ordered) > limit:
        lines.append(f"{len(ordered) - limit} more kinds of warning (see --format json)")
    return lines
