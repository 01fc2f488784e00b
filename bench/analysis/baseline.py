"""Baseline gate: per-host references written from good runs, later runs checked against them.

Like Kata's checkmetrics, a baseline file holds, for each host and scenario, one
reference per measured quantity (metric, backend, case, view, stage): the good runs'
block medians (a run without repeats is one block). ``bench check`` compares a later
run's blocks with them using ``bench compare``'s machinery (``bench.analysis.verdict``):
the margin is ``tolerance`` (declared when the baseline was written, default 10%; the
noise widens the interval, never the margin), the p-values are adjusted over the check's
rows (Holm), and

- a significant move beyond the margin in either direction fails (much faster than
  usual is as suspicious as slower: a container that did not really start);
- ``equivalent`` passes;
- ``inconclusive`` passes, unless the check could not tell (the MDE over the margin, or
  the run-to-run noise unknown): then ``bench check`` exits 5 unless told
  ``--allow-inconclusive``, instead of letting an unseen regression through.

For limit checks the reference also records whether the limit held; a limit that held
in the baseline and no longer holds fails regardless of numbers.

The file is versioned like every file bench writes: ``schema_version`` (newer refused,
older migrated by ``_update_to_N``), ``kind: bench-baseline``. Version 1 held tolerance
bands (median, lower, upper); it is migrated to one-block references of its medians.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from bench import __version__
from bench.analysis.calibration import Calibration, quantity_blocks
from bench.analysis.compare import (
    ABSOLUTE_METRICS,
    DEFAULT_MIN_ABS_MIB,
    MUST_MATCH_HOST_KEYS,
    CompareError,
    _resolve_calibration,
    facts_agree,
)
from bench.analysis.dataset import Dataset, RunInfo, fact, resolve_fact_path
from bench.analysis.multiplicity import ALPHA, HOLM, adjust_family
from bench.analysis.noise import without_noise
from bench.analysis.order import backend_mechanisms
from bench.analysis.stats import VALUE_STAGE, accel_of, measured, view_labels
from bench.analysis.units import format_quantity, mib_in_unit, unit_kind
from bench.analysis.verdict import (
    DIRECTIONAL_OUTCOMES,
    MODE_RATIO,
    NOISE_UNKNOWN,
    OUTCOME_EQUIVALENT,
    OUTCOME_INCONCLUSIVE,
    Verdict,
    compare_blocks,
    percent,
)
from bench.errors import BenchError
from bench.files import read_json_object
from bench.results import migrate_schema, utc_now_iso, write_json_atomic

BASELINE_SCHEMA_VERSION = 2
BASELINE_KIND = "bench-baseline"
DEFAULT_TOLERANCE = 0.10
# Quantities that describe the host's state during a run, not the thing measured.
EXCLUDED_VIEWS = frozenset({("density", "mem_available")})

STATUS_OK = "ok"
STATUS_ABOVE = "above baseline"
STATUS_BELOW = "below baseline"
STATUS_INCONCLUSIVE = "inconclusive"
STATUS_MISSING = "missing"
STATUS_NEW = "new (no reference)"
STATUS_INCOMPARABLE = "incomparable"
STATUS_NOT_ENFORCED = "limit not enforced"
FAILING_STATUSES = frozenset(
    {STATUS_ABOVE, STATUS_BELOW, STATUS_MISSING, STATUS_INCOMPARABLE, STATUS_NOT_ENFORCED}
)
# bench check exits with this when it could not tell (underpowered, or the noise between
# runs unknown) and nothing moved; --allow-inconclusive lets such a check pass
EXIT_CANNOT_TELL = 5


def _update_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 bands (median, lower, upper) -> one-block references of their medians."""
    for host in data.get("hosts", {}).values():
        for entry in host.get("scenarios", {}).values():
            references = []
            for band in entry.pop("bands", []):
                references.append(
                    {
                        "metric": band["metric"],
                        "backend": band["backend"],
                        "case": band["case"],
                        "view": band["view"],
                        "stage": band["stage"],
                        "unit": band["unit"],
                        "accel": band.get("accel", "n/a"),
                        "n": band.get("n", 1),
                        "blocks": 1,
                        "block_medians": [band["median"]],
                        "median": band["median"],
                        "enforced": band.get("enforced"),
                    }
                )
            entry["references"] = references
            entry["blocks"] = 1
            source = entry.pop("source_run", None)
            entry["source_runs"] = [source] if source else []
    data["tolerance"] = data.pop("tolerance_default", DEFAULT_TOLERANCE)
    data.pop("ci_factor", None)
    return data


# schema_version N-1 -> N migrations
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {2: _update_to_2}


class BaselineError(BenchError):
    """A baseline file that cannot be read or used (bad JSON, newer schema, no entry)."""

    exit_code = 2


@dataclass(frozen=True)
class Reference:
    """What one quantity measured in the good runs: its block medians."""

    metric: str
    backend: str
    case: str
    view: str
    stage: str
    unit: str
    accel: str
    n: int
    blocks: int
    block_medians: list[float]
    median: float
    enforced: bool | None = None
    mechanism: str = ""
    # the run of each block median (older baselines: empty, the runs unknown)
    block_runs: list[str] = field(default_factory=list)

    def key(self) -> tuple[str, str, str, str, str]:
        """What the reference is about, for matching a run's quantities to it."""
        return (self.metric, self.backend, self.case, self.view, self.stage)


def host_identity(run: RunInfo, keys: Sequence[str] = MUST_MATCH_HOST_KEYS) -> dict[str, Any]:
    """The must-match host facts of a run (plus kernel, for information only)."""
    facts = {key: fact(run, key) for key in keys}
    facts["kernel.release"] = fact(run, "kernel")
    return facts


def _gated(key: tuple[str, str, str, str, str]) -> bool:
    return (key[0], key[3]) not in EXCLUDED_VIEWS


def _accel_by_quantity(frame: pd.DataFrame) -> dict[tuple[str, str, str, str], str]:
    data = without_noise(measured(frame))
    if data.empty:
        return {}
    data = data[data["ok"].to_numpy(dtype=bool)]
    data = data.assign(_view=view_labels(data))
    result: dict[tuple[str, str, str, str], str] = {}
    for key, part in data.groupby(["metric", "backend", "case", "_view"], observed=True):
        metric, backend, case, view = (str(k) for k in key)
        result[(metric, backend, case, view)] = accel_of(part)
    return result


def _units(frame: pd.DataFrame) -> dict[tuple[str, str, str, str], str]:
    data = without_noise(measured(frame))
    if data.empty:
        return {}
    data = data.assign(_view=view_labels(data))
    first = data.groupby(["metric", "backend", "case", "_view"], observed=True)["unit"].first()
    result: dict[tuple[str, str, str, str], str] = {}
    for key, unit in zip(first.index.tolist(), first.tolist(), strict=True):
        metric, backend, case, view = (str(k) for k in key)
        result[(metric, backend, case, view)] = str(unit)
    return result


def references_of(
    frame: pd.DataFrame, *, stages: bool = False
) -> dict[tuple[str, str, str, str, str], Reference]:
    """A reference per gated quantity of a samples frame (its runs' blocks pooled)."""
    from bench.analysis.stats import stage_unit

    blocks = quantity_blocks(frame, stages=stages)
    accel = _accel_by_quantity(frame)
    units = _units(frame)
    enforced = _enforced_by_group(frame)
    mechanisms = backend_mechanisms(frame)
    references = {}
    for key, by_block in blocks.items():
        if not _gated(key):
            continue
        metric, backend, case, view, stage = key
        unit = units.get((metric, backend, case, view), "")
        if stage != VALUE_STAGE:
            unit = stage_unit(stage, unit)
        medians = [float(np.median(by_block[b])) for b in sorted(by_block)]
        block_runs = [run_id for run_id, _ in sorted(by_block)]
        centre = (
            float(np.exp(np.mean(np.log(medians))))
            if all(m > 0 for m in medians)
            else float(np.mean(medians))
        )
        references[key] = Reference(
            metric=metric,
            backend=backend,
            case=case,
            view=view,
            stage=stage,
            unit=unit,
            accel=accel.get((metric, backend, case, view), "n/a"),
            n=int(sum(v.size for v in by_block.values())),
            blocks=len(medians),
            block_medians=medians,
            median=centre,
            enforced=enforced.get((backend, case, view)),
            mechanism=mechanisms.get(backend, ""),
            block_runs=block_runs,
        )
    return references


def make_baseline(
    dataset: Dataset,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    stages: bool = False,
    existing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build (or update ``existing``) a baseline from the runs of ``dataset``.

    Runs of one host and scenario are pooled: their blocks together are the reference.
    Entries are keyed by host name and scenario hash; an entry of the same host and
    scenario in ``existing`` is replaced, every other entry is kept.
    """
    document = migrate_baseline(existing, "existing baseline") if existing else _empty()
    by_entry: dict[tuple[str, str], list[RunInfo]] = {}
    for run in dataset.runs.values():
        by_entry.setdefault((run.hostname, run.scenario_sha256), []).append(run)
    frame = dataset.samples
    for (hostname, sha), runs in by_entry.items():
        run_ids = [run.run_id for run in runs]
        part = frame[frame["run_id"].astype(str).isin(run_ids)] if not frame.empty else frame
        references = references_of(part, stages=stages)
        if not references:
            continue
        host = document["hosts"].setdefault(hostname, {"facts": {}, "scenarios": {}})
        host["facts"] = host_identity(runs[0])
        host["scenarios"][sha] = {
            "scenario": runs[0].scenario_name,
            "source_runs": run_ids,
            "blocks": min(r.blocks for r in references.values()),
            "created_at_utc": utc_now_iso(),
            "references": [asdict(r) for r in references.values()],
        }
    document["updated_at_utc"] = utc_now_iso()
    document["bench_version"] = __version__
    document["tolerance"] = tolerance
    return document


def _empty() -> dict[str, Any]:
    return {
        "schema_version": BASELINE_SCHEMA_VERSION,
        "kind": BASELINE_KIND,
        "created_at_utc": utc_now_iso(),
        "hosts": {},
    }


def _enforced_by_group(frame: pd.DataFrame) -> dict[tuple[str, str, str], bool | None]:
    """For limit samples: whether every check of (backend, case, view) held the limit."""
    data = without_noise(measured(frame))
    if data.empty or "label.enforced" not in data.columns:
        return {}
    data = data[data["metric"].astype(str) == "limits"]
    if data.empty:
        return {}
    data = data.assign(_view=view_labels(data))
    result: dict[tuple[str, str, str], bool | None] = {}
    for key, group in data.groupby(["backend", "case", "_view"], observed=True):
        backend, case, view = (str(k) for k in key)
        flags = [v for v in group["label.enforced"] if isinstance(v, bool | np.bool_)]
        result[(backend, case, view)] = bool(all(flags)) if flags else None
    return result


def migrate_baseline(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring a baseline dict to the current schema, or refuse one that is newer."""
    if data.get("kind") != BASELINE_KIND:
        raise BaselineError(f"{source}: not a bench baseline file (kind is {data.get('kind')!r})")
    return migrate_schema(
        data,
        source,
        current=BASELINE_SCHEMA_VERSION,
        migrations=_MIGRATIONS,
        error=BaselineError,
    )


def read_baseline(path: Path) -> dict[str, Any]:
    """Read and migrate a baseline file."""
    data = read_json_object(path, BaselineError, "baseline file")
    return migrate_baseline(data, str(path))


def write_baseline(path: Path, document: dict[str, Any]) -> None:
    """Write a baseline file atomically (parent directories created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, document)


@dataclass(frozen=True)
class CheckRow:
    """One quantity of a checked run against its reference."""

    host: str
    run_id: str
    metric: str
    backend: str
    case: str
    view: str
    stage: str
    unit: str
    status: str
    median: float | None
    baseline_median: float | None
    detail: str = ""
    ratio: float | None = None
    ratio_ci_low: float | None = None
    ratio_ci_high: float | None = None
    difference: float | None = None
    mode: str = MODE_RATIO
    margin: float | None = None
    margin_source: str = ""
    mde: float | None = None
    noise: str = ""
    blocks: int = 0
    baseline_blocks: int = 0
    # the design could not tell: the MDE over the margin, or the run-to-run noise unknown
    cannot_tell: bool = False
    run_noise_unknown: bool = False  # decides nothing: left out of Holm's family
    p_value: float | None = None
    p_adjusted: float | None = None  # Holm, over every row of the check

    @property
    def failed(self) -> bool:
        """True for statuses that fail the gate."""
        return self.status in FAILING_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (with ``failed``) for JSON output; non-finite floats as None."""
        data = {**asdict(self), "failed": self.failed}
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in data.items()
        }

    def ratio_text(self) -> str:
        """``1.31 [1.22, 1.40]`` (ratio rows), ``+147 MiB`` (absolute rows) or ``-``."""
        if self.mode == MODE_RATIO and self.ratio is not None:
            if self.ratio_ci_low is None or self.ratio_ci_high is None:
                return f"{self.ratio:.3f}"
            return f"{self.ratio:.3f} [{self.ratio_ci_low:.3f}, {self.ratio_ci_high:.3f}]"
        if self.difference is not None:
            sign = "+" if self.difference > 0 else "-" if self.difference < 0 else ""
            return f"{sign}{format_quantity(abs(self.difference), self.unit)}"
        return "-"

    def margin_text(self) -> str:
        """``+-10% (min effect)`` or ``+-1.00 MiB (absolute floor)``."""
        if self.margin is None:
            return "-"
        if self.mode == MODE_RATIO:
            return f"±{percent(self.margin)} ({self.margin_source})"
        return f"±{format_quantity(self.margin, self.unit)} ({self.margin_source})"


@dataclass
class CheckResult:
    """Every checked quantity, whether the gate passed, and notes on how it judged."""

    rows: list[CheckRow]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when any row failed."""
        return any(row.failed for row in self.rows)

    @property
    def failures(self) -> list[CheckRow]:
        """The failing rows."""
        return [row for row in self.rows if row.failed]

    @property
    def unjudged(self) -> list[CheckRow]:
        """Rows the check could not tell: underpowered, or the run-to-run noise unknown."""
        return [r for r in self.rows if r.status == STATUS_INCONCLUSIVE and r.cannot_tell]


def check_dataset(
    dataset: Dataset,
    baseline: dict[str, Any],
    *,
    stages: bool = False,
    must_match: Sequence[str] = MUST_MATCH_HOST_KEYS,
    calibration: Calibration | Literal["auto"] | None = "auto",
    min_abs_mib: float = DEFAULT_MIN_ABS_MIB,
) -> CheckResult:
    """Check every run of ``dataset`` against the references for its host and scenario.

    Raises BaselineError when the baseline has no entry for a run's host or scenario
    (a gate with nothing to compare against must not pass silently).
    """
    baseline = migrate_baseline(baseline, "baseline")
    tolerance = float(baseline.get("tolerance", DEFAULT_TOLERANCE))
    try:
        chosen, notes = _resolve_calibration(dataset, calibration)
    except CompareError as exc:
        raise BaselineError(str(exc)) from None
    frame = dataset.samples
    rows: list[CheckRow] = []
    for run_id, run in dataset.runs.items():
        host = baseline.get("hosts", {}).get(run.hostname)
        if host is None:
            known = ", ".join(sorted(baseline.get("hosts", {}))) or "none"
            raise BaselineError(
                f"no baseline for host {run.hostname!r} (run {run_id}); hosts in the "
                f"baseline: {known}. Write one with: bench baseline RUN -o FILE"
            )
        entry = host.get("scenarios", {}).get(run.scenario_sha256)
        if entry is None:
            names = ", ".join(
                f"{s.get('scenario')} ({sha[:12]})" for sha, s in host.get("scenarios", {}).items()
            )
            raise BaselineError(
                f"no baseline for scenario {run.scenario_name!r} "
                f"(sha256 {run.scenario_sha256[:12]}) on host {run.hostname!r}; "
                f"the baseline has: {names or 'none'}"
            )
        mismatch = _host_mismatch(run, host.get("facts", {}), must_match)
        fields = set(Reference.__dataclass_fields__)
        references = {
            Reference(**{k: v for k, v in r.items() if k in fields}).key(): Reference(
                **{k: v for k, v in r.items() if k in fields}
            )
            for r in entry.get("references", [])
        }
        if not stages:
            references = {k: r for k, r in references.items() if r.stage == VALUE_STAGE}
        part = frame[frame["run_id"].astype(str) == run_id] if not frame.empty else frame
        current = quantity_blocks(part, stages=stages)
        accel = _accel_by_quantity(part)
        units = _units(part)
        enforced = _enforced_by_group(part)
        checker = _Checker(run, tolerance, min_abs_mib, chosen, mismatch)
        for key, by_block in current.items():
            if not _gated(key):
                continue
            metric, backend, case, view, stage = key
            unit = units.get((metric, backend, case, view), "")
            if stage != VALUE_STAGE:
                from bench.analysis.stats import stage_unit

                unit = stage_unit(stage, unit)
            rows.append(
                checker.row(
                    key,
                    [by_block[b] for b in sorted(by_block)],
                    unit,
                    accel.get((metric, backend, case, view), "n/a"),
                    references.get(key),
                    enforced.get((backend, case, view)),
                )
            )
        for key, reference in references.items():
            if key not in current:
                rows.append(
                    CheckRow(
                        run.hostname,
                        run_id,
                        *key,
                        unit=reference.unit,
                        status=STATUS_MISSING,
                        median=None,
                        baseline_median=reference.median,
                        detail="in the baseline, but no successful samples in this run",
                        baseline_blocks=reference.blocks,
                    )
                )
    return CheckResult(corrected_rows(rows), notes)


def _host_mismatch(run: RunInfo, facts: dict[str, Any], must_match: Sequence[str]) -> str:
    reasons = []
    for key in must_match:
        if key not in facts:
            continue
        now = fact(run, key)
        if not facts_agree(resolve_fact_path(key), [facts[key], now]):
            reasons.append(f"{key} is {now!r}, baseline has {facts[key]!r}")
    return "; ".join(reasons)


@dataclass(frozen=True)
class _Checker:
    run: RunInfo
    tolerance: float
    min_abs_mib: float
    calibration: Calibration | None
    mismatch: str

    def row(
        self,
        key: tuple[str, str, str, str, str],
        blocks: list[np.ndarray[Any, Any]],
        unit: str,
        accel: str,
        reference: Reference | None,
        held: bool | None,
    ) -> CheckRow:
        metric, backend, case, view, stage = key
        medians = [float(np.median(b)) for b in blocks]
        median = (
            float(np.exp(np.mean(np.log(medians))))
            if all(m > 0 for m in medians)
            else float(np.mean(medians))
        )
        common: dict[str, Any] = {
            "host": self.run.hostname,
            "run_id": self.run.run_id,
            "metric": metric,
            "backend": backend,
            "case": case,
            "view": view,
            "stage": stage,
            "unit": unit,
            "median": median,
            "blocks": len(blocks),
        }
        if reference is None:
            return CheckRow(
                **common, status=STATUS_NEW, baseline_median=None, detail="not in the baseline"
            )
        common |= {"baseline_median": reference.median, "baseline_blocks": reference.blocks}
        if self.mismatch:
            return CheckRow(**common, status=STATUS_INCOMPARABLE, detail=self.mismatch)
        if reference.accel != accel:
            detail = f"accelerator is {accel}, baseline ran under {reference.accel}"
            return CheckRow(**common, status=STATUS_INCOMPARABLE, detail=detail)
        if reference.enforced is True and held is False:
            detail = "the limit held in the baseline run and did not hold in this one"
            return CheckRow(**common, status=STATUS_NOT_ENFORCED, detail=detail)
        noise = None
        if self.calibration is not None:
            entry = self.calibration.lookup(
                key, accel=accel, scenario_sha256=self.run.scenario_sha256
            )
            noise = entry.noise() if entry is not None else None
        min_abs = mib_in_unit(self.min_abs_mib, unit) if unit_kind(unit) == "size" else 0.0
        # the checked run is another run than the baseline's: the run is the unit (older
        # baselines do not say which run each block came from, and compare block by block)
        by_runs = bool(reference.block_runs) and self.run.run_id not in reference.block_runs
        verdict = compare_blocks(
            [np.array([m]) for m in reference.block_medians],
            blocks,
            unit=unit,
            absolute=metric in ABSOLUTE_METRICS,
            min_effect=self.tolerance,
            min_abs=min_abs or 0.0,
            noise_baseline=noise,
            noise_contender=noise,
            runs_baseline=reference.block_runs if by_runs else None,
            runs_contender=[self.run.run_id] * len(blocks) if by_runs else None,
        )
        return CheckRow(
            **common,
            status=_status(verdict),
            detail=verdict.verdict,
            ratio=verdict.ratio,
            ratio_ci_low=verdict.ratio_ci_low,
            ratio_ci_high=verdict.ratio_ci_high,
            difference=verdict.difference,
            mode=verdict.mode,
            margin=verdict.margin,
            margin_source=verdict.margin_source,
            mde=verdict.mde,
            noise=verdict.noise,
            cannot_tell=verdict.outcome == OUTCOME_INCONCLUSIVE
            and (
                verdict.underpowered or verdict.run_noise_unknown or verdict.noise == NOISE_UNKNOWN
            ),
            p_value=verdict.p_value,
            run_noise_unknown=verdict.run_noise_unknown,
        )


def corrected_rows(rows: list[CheckRow]) -> list[CheckRow]:
    """Rows with p-values adjusted over the check (Holm).

    A move no longer significant after the correction is inconclusive, and says so.
    """
    adjusted = adjust_family([None if row.run_noise_unknown else row.p_value for row in rows], HOLM)
    members = sum(p is not None for p in adjusted)
    result = list(rows)
    for index, p_adjusted in enumerate(adjusted):
        if p_adjusted is None:
            continue
        row = replace(rows[index], p_adjusted=p_adjusted)
        if row.status in (STATUS_ABOVE, STATUS_BELOW) and p_adjusted >= ALPHA:
            row = replace(
                row,
                status=STATUS_INCONCLUSIVE,
                detail=f"not significant over {members} rows (Holm: p "
                f"{row.p_value:.3g} -> {p_adjusted:.3g})",
            )
        result[index] = row
    return result


def _status(verdict: Verdict) -> str:
    if verdict.outcome in DIRECTIONAL_OUTCOMES:
        return STATUS_ABOVE if verdict.difference > 0 else STATUS_BELOW
    if verdict.outcome == OUTCOME_EQUIVALENT:
        return STATUS_OK
    return STATUS_INCONCLUSIVE
