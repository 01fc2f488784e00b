"""Baseline gate: per-host tolerance bands written from a good run, and runs checked against them.

Like Kata's checkmetrics, a baseline file holds, for each host and scenario, one band per
measured quantity (metric, backend, case, view, stage): the good run's median and the
band [lower, upper] a later run's median must stay inside. The band's half-width is the
larger of ``tolerance`` (default 10%) of the median and ``CI_FACTOR`` times the half-width
of the median's bootstrap CI, so a noisy quantity gets a band it can actually hold.
Leaving the band in either direction fails: much faster than usual is as suspicious
as slower (a container that did not really start). For limit checks the band also
records whether the limit held; a limit that held in the baseline and no longer holds
fails regardless of numbers.

The file is versioned like every file bench writes: ``schema_version`` (newer refused,
older migrated by ``_update_to_N``), ``kind: bench-baseline``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import __version__
from bench.analysis.compare import MUST_MATCH_HOST_KEYS, facts_agree
from bench.analysis.dataset import Dataset, RunInfo, fact, resolve_fact_path
from bench.analysis.stats import (
    VALUE_STAGE,
    StatRow,
    measured,
    summarize_stats,
    view_labels,
)
from bench.analysis.units import format_quantity
from bench.errors import BenchError
from bench.results import migrate_schema, utc_now_iso, write_json_atomic

BASELINE_SCHEMA_VERSION = 1
BASELINE_KIND = "bench-baseline"
DEFAULT_TOLERANCE = 0.10
# The later run's median has its own noise: sqrt(2) x the CI half-width, rounded up.
CI_FACTOR = 1.5
# Quantities that describe the host's state during a run, not the thing measured.
EXCLUDED_VIEWS = frozenset({("density", "mem_available")})

STATUS_OK = "ok"
STATUS_ABOVE = "above band"
STATUS_BELOW = "below band"
STATUS_MISSING = "missing"
STATUS_NEW = "new (no band)"
STATUS_INCOMPARABLE = "incomparable"
STATUS_NOT_ENFORCED = "limit not enforced"
FAILING_STATUSES = frozenset(
    {STATUS_ABOVE, STATUS_BELOW, STATUS_MISSING, STATUS_INCOMPARABLE, STATUS_NOT_ENFORCED}
)

# schema_version N-1 -> N migrations; empty until the format changes
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class BaselineError(BenchError):
    """A baseline file that cannot be read or used (bad JSON, newer schema, no entry)."""

    exit_code = 2


@dataclass(frozen=True)
class Band:
    """The tolerance band of one quantity on one host, for one scenario."""

    metric: str
    backend: str
    case: str
    view: str
    stage: str
    unit: str
    accel: str
    n: int
    median: float
    lower: float
    upper: float
    tolerance: float
    enforced: bool | None = None

    def key(self) -> tuple[str, str, str, str, str]:
        """What the band is about, for matching a run's quantities to it."""
        return (self.metric, self.backend, self.case, self.view, self.stage)


def band_for(row: StatRow, tolerance: float, enforced: bool | None = None) -> Band:
    """The band of one statistics row: median +- max(tolerance, CI_FACTOR x CI half-width)."""
    stats = row.stats
    ci_half = max(stats.ci_high - stats.median, stats.median - stats.ci_low, 0.0)
    half_width = max(tolerance * abs(stats.median), CI_FACTOR * ci_half)
    lower = stats.median - half_width
    if stats.minimum >= 0:
        lower = max(lower, 0.0)  # a non-negative quantity's band stays non-negative
    effective = half_width / abs(stats.median) if stats.median else math.inf
    return Band(
        metric=row.metric,
        backend=row.backend,
        case=row.case,
        view=row.view,
        stage=row.stage,
        unit=row.unit,
        accel=row.accel,
        n=stats.n,
        median=stats.median,
        lower=lower,
        upper=stats.median + half_width,
        tolerance=round(effective, 6) if math.isfinite(effective) else -1.0,
        enforced=enforced,
    )


def host_identity(run: RunInfo, keys: Sequence[str] = MUST_MATCH_HOST_KEYS) -> dict[str, Any]:
    """The must-match host facts of a run (plus kernel, for information only)."""
    facts = {key: fact(run, key) for key in keys}
    facts["kernel.release"] = fact(run, "kernel")
    return facts


def make_baseline(
    dataset: Dataset,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    stages: bool = False,
    existing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build (or update ``existing``) a baseline from the runs of ``dataset``.

    Entries are keyed by host name and scenario hash; an entry of the same host and
    scenario in ``existing`` is replaced, every other entry is kept.
    """
    document = migrate_baseline(existing, "existing baseline") if existing else _empty()
    rows = [r for r in summarize_stats(dataset.samples, stages=stages) if _gated(r)]
    enforced = _enforced_by_group(dataset.samples)
    for run_id, run in dataset.runs.items():
        bands = [
            band_for(r, tolerance, enforced.get((r.run_id, r.backend, r.case, r.view)))
            for r in rows
            if r.run_id == run_id
        ]
        if not bands:
            continue
        host = document["hosts"].setdefault(run.hostname, {"facts": {}, "scenarios": {}})
        host["facts"] = host_identity(run)
        host["scenarios"][run.scenario_sha256] = {
            "scenario": run.scenario_name,
            "source_run": run_id,
            "created_at_utc": utc_now_iso(),
            "bands": [asdict(b) for b in bands],
        }
    document["updated_at_utc"] = utc_now_iso()
    document["bench_version"] = __version__
    document["tolerance_default"] = tolerance
    return document


def _empty() -> dict[str, Any]:
    return {
        "schema_version": BASELINE_SCHEMA_VERSION,
        "kind": BASELINE_KIND,
        "created_at_utc": utc_now_iso(),
        "ci_factor": CI_FACTOR,
        "hosts": {},
    }


def _gated(row: StatRow) -> bool:
    return (row.metric, row.view) not in EXCLUDED_VIEWS


def _enforced_by_group(frame: pd.DataFrame) -> dict[tuple[str, str, str, str], bool | None]:
    """For limit samples: whether every check of (run, backend, case, view) held the limit."""
    data = measured(frame)
    if data.empty or "label.enforced" not in data.columns:
        return {}
    data = data[data["metric"].astype(str) == "limits"]
    if data.empty:
        return {}
    data = data.assign(_view=view_labels(data))
    result: dict[tuple[str, str, str, str], bool | None] = {}
    for (run_id, backend, case, view), group in data.groupby(
        ["run_id", "backend", "case", "_view"], observed=True
    ):
        flags = [v for v in group["label.enforced"] if isinstance(v, bool | np.bool_)]
        result[(str(run_id), str(backend), str(case), str(view))] = (
            bool(all(flags)) if flags else None
        )
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
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such baseline file") from None
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BaselineError(f"{path}: not a bench baseline file")
    return migrate_baseline(data, str(path))


def write_baseline(path: Path, document: dict[str, Any]) -> None:
    """Write a baseline file atomically (parent directories created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, document)


@dataclass(frozen=True)
class CheckRow:
    """One quantity of a checked run against its band."""

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
    lower: float | None
    upper: float | None
    baseline_median: float | None
    detail: str = ""

    @property
    def failed(self) -> bool:
        """True for statuses that fail the gate."""
        return self.status in FAILING_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (with ``failed``) for JSON output."""
        return {**asdict(self), "failed": self.failed}


@dataclass
class CheckResult:
    """Every checked quantity, and whether the gate passed."""

    rows: list[CheckRow]

    @property
    def failed(self) -> bool:
        """True when any row failed."""
        return any(row.failed for row in self.rows)

    @property
    def failures(self) -> list[CheckRow]:
        """The failing rows."""
        return [row for row in self.rows if row.failed]


def check_dataset(
    dataset: Dataset,
    baseline: dict[str, Any],
    *,
    stages: bool = False,
    must_match: Sequence[str] = MUST_MATCH_HOST_KEYS,
) -> CheckResult:
    """Check every run of ``dataset`` against the bands for its host and scenario.

    Raises BaselineError when the baseline has no entry for a run's host or scenario
    (a gate with nothing to compare against must not pass silently).
    """
    baseline = migrate_baseline(baseline, "baseline")
    stats = [r for r in summarize_stats(dataset.samples, stages=stages) if _gated(r)]
    enforced = _enforced_by_group(dataset.samples)
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
        bands = {Band(**b).key(): Band(**b) for b in entry.get("bands", [])}
        if not stages:
            bands = {k: b for k, b in bands.items() if b.stage == VALUE_STAGE}
        seen: set[tuple[str, str, str, str, str]] = set()
        for row in (r for r in stats if r.run_id == run_id):
            key = (row.metric, row.backend, row.case, row.view, row.stage)
            seen.add(key)
            held = enforced.get((run_id, row.backend, row.case, row.view))
            rows.append(_check_row(run, row, bands.get(key), mismatch, held))
        for key, band in bands.items():
            if key not in seen:
                rows.append(
                    CheckRow(
                        run.hostname,
                        run_id,
                        *key,
                        unit=band.unit,
                        status=STATUS_MISSING,
                        median=None,
                        lower=band.lower,
                        upper=band.upper,
                        baseline_median=band.median,
                        detail="in the baseline, but no successful samples in this run",
                    )
                )
    return CheckResult(rows)


def _host_mismatch(run: RunInfo, facts: dict[str, Any], must_match: Sequence[str]) -> str:
    reasons = []
    for key in must_match:
        if key not in facts:
            continue
        now = fact(run, key)
        if not facts_agree(resolve_fact_path(key), [facts[key], now]):
            reasons.append(f"{key} is {now!r}, baseline has {facts[key]!r}")
    return "; ".join(reasons)


def _check_row(
    run: RunInfo, row: StatRow, band: Band | None, mismatch: str, held: bool | None
) -> CheckRow:
    median = row.stats.median
    common: dict[str, Any] = {
        "host": run.hostname,
        "run_id": run.run_id,
        "metric": row.metric,
        "backend": row.backend,
        "case": row.case,
        "view": row.view,
        "stage": row.stage,
        "unit": row.unit,
        "median": median,
    }
    if band is None:
        return CheckRow(
            **common,
            status=STATUS_NEW,
            lower=None,
            upper=None,
            baseline_median=None,
            detail="not in the baseline",
        )
    limits: dict[str, Any] = {
        "lower": band.lower,
        "upper": band.upper,
        "baseline_median": band.median,
    }
    if mismatch:
        return CheckRow(**common, **limits, status=STATUS_INCOMPARABLE, detail=mismatch)
    if band.accel != row.accel:
        detail = f"accelerator is {row.accel}, baseline ran under {band.accel}"
        return CheckRow(**common, **limits, status=STATUS_INCOMPARABLE, detail=detail)
    if band.enforced is True and held is False:
        detail = "the limit held in the baseline run and did not hold in this one"
        return CheckRow(**common, **limits, status=STATUS_NOT_ENFORCED, detail=detail)
    change = f"{median / band.median:.2f}x the baseline median" if band.median > 0 else ""
    if median > band.upper:
        detail = f"{format_quantity(median, row.unit)} > {format_quantity(band.upper, row.unit)}"
        return CheckRow(
            **common, **limits, status=STATUS_ABOVE, detail=f"{detail}; {change}".strip("; ")
        )
    if median < band.lower:
        detail = f"{format_quantity(median, row.unit)} < {format_quantity(band.lower, row.unit)}"
        return CheckRow(
            **common, **limits, status=STATUS_BELOW, detail=f"{detail}; {change}".strip("; ")
        )
    return CheckRow(**common, **limits, status=STATUS_OK, detail=change)
