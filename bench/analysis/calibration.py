"""Host noise calibration: two levels of noise measured by A/A repeats, stored per host.

``bench calibrate`` runs one scenario several times, each run with several repeats
(blocks), on an otherwise unchanged host: every difference between those blocks is
noise. For every quantity (metric, backend, case, view, stage) it stores both levels
(``bench.analysis.levels``): between the blocks of a run (``sigma_log`` of the log block
medians, ``sigma_abs`` in the quantity's unit, ``df``) and between runs beyond that
(``run_sigma_log``, ``run_sigma_abs``, ``run_df``; none with a single run). Comparisons
and baseline checks put them in the standard error only (never in the margin): a side
with one run takes the run level from here instead of being inconclusive.

The file lives beside the runs it describes, ``results/<host>/calibration.json``:

    {"schema_version": 2, "kind": "bench-calibration", "host": "<hostname>",
     "facts": {<must-match host facts>}, "created_at_utc": ..., "updated_at_utc": ...,
     "bench_version": ...,
     "entries": [{"metric": "startup", "backend": "docker", "mechanism": "container",
                  "case": "startup", "view": "", "stage": "value", "unit": "s",
                  "accel": "n/a", "scenario": "quick", "scenario_sha256": ...,
                  "runs": [...], "blocks": 6, "samples_per_block": 10,
                  "block_medians": [...], "sigma_log": 0.041, "sigma_abs": 0.0043,
                  "noise_fraction": 0.042, "df": 5, "measured_at_utc": ...}, ...]}

An entry is replaced when the same quantity of the same scenario is calibrated again;
others are kept. Like every file bench writes it is versioned: a newer schema is
refused, an older one migrated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from bench import __version__
from bench.analysis.dataset import Dataset, RunInfo, fact, resolve_fact_path
from bench.analysis.levels import Design, VarianceComponents, estimate, plan
from bench.analysis.noise import without_noise
from bench.analysis.stats import VALUE_STAGE, measured, stage_columns, stage_values, view_labels
from bench.analysis.units import unit_kind
from bench.analysis.verdict import MODE_RATIO, BlockNoise
from bench.errors import BenchError
from bench.files import read_json_object
from bench.results import migrate_schema, utc_now_iso, write_json_atomic

CALIBRATION_FILE = "calibration.json"
CALIBRATION_SCHEMA_VERSION = 2
CALIBRATION_KIND = "bench-calibration"
MIN_CALIBRATION_BLOCKS = 3
# Host facts a calibration must share with the runs it is applied to.
CALIBRATION_HOST_KEYS = ("cpu.model", "cpu.logical_cores", "memory.total_bytes", "cgroup.version")


def _update_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 kept one SD over every block; 2 keeps two levels (runs, blocks of a run).

    Blocks were stored sorted by (run, block), so runs of equal length split back into
    their runs and the two levels are estimated again; an entry whose blocks do not
    split evenly keeps its one SD as the block level (an overestimate: it holds the run
    level too) and has no run level.
    """
    for entry in data.get("entries", []):
        medians = list(entry.get("block_medians") or [])
        runs = list(entry.get("runs") or [])
        if runs and medians and len(medians) % len(runs) == 0 and len(medians) >= 2:
            per_run = len(medians) // len(runs)
            block_runs = [runs[i // per_run] for i in range(len(medians))]
            levels = two_levels(medians, block_runs)
            entry.update(levels.fields(), block_runs=block_runs)
    return data


# schema_version N-1 -> N migrations
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {2: _update_to_2}


class CalibrationError(BenchError):
    """A calibration that cannot be made or read (too few blocks, bad file, newer schema)."""

    exit_code = 2


@dataclass(frozen=True)
class NoiseEntry:
    """The measured block-to-block noise of one quantity in one scenario on one host."""

    metric: str
    backend: str
    mechanism: str
    case: str
    view: str
    stage: str
    unit: str
    accel: str
    scenario: str
    scenario_sha256: str
    runs: list[str]
    blocks: int
    samples_per_block: float
    block_medians: list[float]
    sigma_log: float | None  # block level: SD of log block medians inside a run
    sigma_abs: float
    noise_fraction: float | None
    df: float
    measured_at_utc: str = ""
    # the run level, beyond the blocks' (None with a single run)
    run_sigma_log: float | None = None
    run_sigma_abs: float | None = None
    run_noise_fraction: float | None = None
    run_df: float = 0.0
    block_runs: list[str] = field(default_factory=list)  # the run of each block median

    def key(self) -> tuple[str, str, str, str, str]:
        """What the entry is about (scenario aside)."""
        return (self.metric, self.backend, self.case, self.view, self.stage)

    def noise(self) -> BlockNoise:
        """The entry as the noise a verdict uses (both levels)."""
        when = self.measured_at_utc[:10] or "?"
        return BlockNoise(
            sigma_log=self.sigma_log,
            sigma_abs=self.sigma_abs,
            df=self.df,
            blocks=self.blocks,
            source=f"calibration of {when}: {len(self.runs)} runs x {self.blocks} blocks "
            f"of {self.scenario}",
            run_sigma_log=self.run_sigma_log,
            run_sigma_abs=self.run_sigma_abs,
            run_df=self.run_df,
            runs=len(self.runs),
        )

    def components(self, mode: str) -> VarianceComponents | None:
        """The two levels on the scale of ``mode`` (None: no log scale for values <= 0)."""
        block = self.sigma_log if mode == MODE_RATIO else self.sigma_abs
        run = self.run_sigma_log if mode == MODE_RATIO else self.run_sigma_abs
        if block is None:
            return None
        return VarianceComponents(
            (run or 0.0) ** 2, self.run_df, block**2, float(self.df), len(self.runs), self.blocks
        )


def quantity_blocks(
    frame: pd.DataFrame, *, stages: bool = False
) -> dict[tuple[str, str, str, str, str], dict[tuple[str, int], np.ndarray[Any, Any]]]:
    """{(metric, backend, case, view, stage): {(run_id, block): sorted values}} of a frame.

    Measured, successful samples only; host noise records left out.
    """
    data = without_noise(measured(frame))
    if data.empty:
        return {}
    data = data[data["ok"].to_numpy(dtype=bool)]
    data = data.assign(_view=view_labels(data))
    if "block" not in data.columns:
        data = data.assign(block=0)
    names = stage_columns(data) if stages else []
    result: dict[tuple[str, str, str, str, str], dict[tuple[str, int], Any]] = {}
    keys = ["metric", "backend", "case", "_view", "run_id", "block"]
    for group_key, part in data.groupby(keys, sort=True, observed=True):
        metric, backend, case, view, run_id, block = (str(k) for k in group_key)
        unit = str(part["unit"].iloc[0])
        for stage, _unit, values in stage_values(part, names, unit):
            result.setdefault((metric, backend, case, view, stage), {})[(run_id, int(block))] = (
                values
            )
    return result


class LevelFields(TypedDict):
    """A calibration entry's fields that hold the two levels."""

    sigma_log: float | None
    sigma_abs: float
    noise_fraction: float | None
    df: float
    run_sigma_log: float | None
    run_sigma_abs: float | None
    run_noise_fraction: float | None
    run_df: float


@dataclass(frozen=True)
class TwoLevels:
    """Both levels of a quantity's noise, on the log scale and in its unit."""

    sigma_log: float | None
    sigma_abs: float
    df: float
    run_sigma_log: float | None
    run_sigma_abs: float | None
    run_df: float

    def fields(self) -> LevelFields:
        """The calibration entry's fields for these levels (the fractions derived)."""
        return {
            "sigma_log": self.sigma_log,
            "sigma_abs": self.sigma_abs,
            "noise_fraction": None if self.sigma_log is None else math.expm1(self.sigma_log),
            "df": self.df,
            "run_sigma_log": self.run_sigma_log,
            "run_sigma_abs": self.run_sigma_abs,
            "run_noise_fraction": (
                None if self.run_sigma_log is None else math.expm1(self.run_sigma_log)
            ),
            "run_df": self.run_df,
        }


def two_levels(block_medians: Sequence[float], block_runs: Sequence[str]) -> TwoLevels:
    """Block-level and run-level SDs of a quantity (``bench.analysis.levels.estimate``).

    A single run gives the block level only (run fields None); runs of one block each
    give one SD holding both levels, reported as the block level.
    """
    medians = np.asarray(block_medians, dtype=np.float64)
    if medians.size < 2:
        raise CalibrationError("noise needs at least two blocks")
    scales: list[VarianceComponents | None] = [
        estimate(np.log(medians), block_runs) if (medians > 0).all() else None,
        estimate(medians, block_runs),
    ]
    absolute = scales[1]
    assert absolute is not None
    log = scales[0]
    runs = len(set(block_runs))
    if absolute.block_df == 0:  # one block per run: one spread for both levels
        return TwoLevels(
            math.sqrt(log.run_var) if log else None,
            math.sqrt(absolute.run_var),
            absolute.run_df,
            None,
            None,
            0.0,
        )
    measured_runs = runs > 1
    return TwoLevels(
        math.sqrt(log.block_var) if log else None,
        math.sqrt(absolute.block_var),
        absolute.block_df,
        math.sqrt(log.run_var) if log and measured_runs else None,
        math.sqrt(absolute.run_var) if measured_runs else None,
        # the scale most rows are judged on: the log one when there is one
        (log or absolute).run_df if measured_runs else 0.0,
    )


def calibrate_dataset(
    dataset: Dataset, *, min_blocks: int = MIN_CALIBRATION_BLOCKS
) -> list[NoiseEntry]:
    """Noise entries of every quantity of an A/A dataset (one scenario, one host).

    Raises CalibrationError when the runs are of several scenarios or hosts (an A/A
    calibration repeats one experiment) or have fewer than ``min_blocks`` blocks.
    """
    runs = list(dataset.runs.values())
    if not runs:
        raise CalibrationError("no runs to calibrate from")
    scenarios = {run.scenario_sha256 for run in runs}
    if len(scenarios) != 1:
        names = ", ".join(sorted({f"{r.scenario_name} ({r.scenario_sha256[:12]})" for r in runs}))
        raise CalibrationError(f"calibration repeats one scenario; these runs are of: {names}")
    hosts = {run.hostname for run in runs}
    if len(hosts) != 1:
        raise CalibrationError(f"calibration is per host; these runs are from: {sorted(hosts)}")
    frame = dataset.samples
    accel = _accel_by_quantity(frame)
    mechanisms = _mechanisms(frame)
    units = _units(frame)
    entries: list[NoiseEntry] = []
    now = utc_now_iso()
    run = runs[0]
    for quantity, blocks in quantity_blocks(frame).items():
        if len(blocks) < min_blocks:
            continue
        ordered = sorted(blocks.items())
        medians = [float(np.median(values)) for _, values in ordered]
        block_runs = [run_id for (run_id, _), _ in ordered]
        levels = two_levels(medians, block_runs)
        metric, backend, case, view, stage = quantity
        entries.append(
            NoiseEntry(
                metric=metric,
                backend=backend,
                mechanism=mechanisms.get(backend, ""),
                case=case,
                view=view,
                stage=stage,
                unit=units.get((metric, backend, case, view), ""),
                accel=accel.get((metric, backend, case, view), "n/a"),
                scenario=run.scenario_name,
                scenario_sha256=run.scenario_sha256,
                runs=sorted({run_id for run_id, _ in blocks}),
                blocks=len(blocks),
                samples_per_block=float(np.median([v.size for v in blocks.values()])),
                block_medians=medians,
                measured_at_utc=now,
                block_runs=block_runs,
                **levels.fields(),
            )
        )
    if not entries:
        total = len({(r, b) for blocks in quantity_blocks(frame).values() for r, b in blocks})
        raise CalibrationError(
            f"calibration needs at least {min_blocks} blocks of each quantity; these runs "
            f"have {total}. Run more repeats (bench calibrate --repeat K) or more runs"
        )
    return entries


def _accel_by_quantity(frame: pd.DataFrame) -> dict[tuple[str, str, str, str], str]:
    data = without_noise(measured(frame))
    if data.empty or "label.accel" not in data.columns:
        return {}
    data = data.assign(_view=view_labels(data))
    result: dict[tuple[str, str, str, str], str] = {}
    for key, part in data.groupby(["metric", "backend", "case", "_view"], observed=True):
        metric, backend, case, view = (str(k) for k in key)
        values = sorted({str(v) for v in part["label.accel"].dropna().unique()} - {"n/a"})
        result[(metric, backend, case, view)] = ",".join(values) or "n/a"
    return result


def _mechanisms(frame: pd.DataFrame) -> dict[str, str]:
    from bench.analysis.order import backend_mechanisms

    return backend_mechanisms(frame)


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


# --- the file ------------------------------------------------------------------------------


def calibration_path(host_directory: Path) -> Path:
    """``results/<host>/calibration.json`` for a host's results directory."""
    return Path(host_directory) / CALIBRATION_FILE


def host_facts(run: RunInfo) -> dict[str, Any]:
    """The host facts a calibration must share with the runs it is used on."""
    return {key: fact(run, key) for key in CALIBRATION_HOST_KEYS}


def make_calibration(
    dataset: Dataset, *, existing: dict[str, Any] | None = None, min_blocks: int = 3
) -> dict[str, Any]:
    """A calibration document from an A/A dataset, merged into ``existing`` if given."""
    entries = calibrate_dataset(dataset, min_blocks=min_blocks)
    run = next(iter(dataset.runs.values()))
    document = migrate_calibration(existing, "existing calibration") if existing else None
    if document is not None and document.get("host") != run.hostname:
        document = None  # another host's file: start afresh rather than mix hosts
    if document is None:
        document = {
            "schema_version": CALIBRATION_SCHEMA_VERSION,
            "kind": CALIBRATION_KIND,
            "host": run.hostname,
            "created_at_utc": utc_now_iso(),
            "entries": [],
        }
    new = {(e.scenario_sha256, *e.key()) for e in entries}
    kept = [
        e
        for e in document.get("entries", [])
        if (
            e.get("scenario_sha256"),
            e.get("metric"),
            e.get("backend"),
            e.get("case"),
            e.get("view"),
            e.get("stage"),
        )
        not in new
    ]
    document["entries"] = kept + [asdict(e) for e in entries]
    document["facts"] = host_facts(run)
    document["updated_at_utc"] = utc_now_iso()
    document["bench_version"] = __version__
    return document


def migrate_calibration(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring a calibration dict to the current schema, or refuse one that is newer."""
    if data.get("kind") != CALIBRATION_KIND:
        raise CalibrationError(
            f"{source}: not a bench calibration file (kind is {data.get('kind')!r})"
        )
    return migrate_schema(
        data,
        source,
        current=CALIBRATION_SCHEMA_VERSION,
        migrations=_MIGRATIONS,
        error=CalibrationError,
    )


def read_calibration(path: Path) -> dict[str, Any]:
    """Read and migrate a calibration file."""
    data = read_json_object(path, CalibrationError, "calibration file")
    return migrate_calibration(data, str(path))


def write_calibration(path: Path, document: dict[str, Any]) -> None:
    """Write a calibration file atomically (parent directories created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, document)


@dataclass
class Calibration:
    """A calibration file's entries, ready for lookups."""

    path: Path | None
    host: str
    facts: dict[str, Any]
    entries: list[NoiseEntry] = field(default_factory=list)
    updated_at_utc: str = ""

    @classmethod
    def from_document(cls, document: dict[str, Any], path: Path | None = None) -> Calibration:
        """Build from a (migrated) calibration document."""
        fields = {f for f in NoiseEntry.__dataclass_fields__}
        entries = [
            NoiseEntry(**{k: v for k, v in e.items() if k in fields})
            for e in document.get("entries", [])
            if isinstance(e, dict)
        ]
        return cls(
            path=path,
            host=str(document.get("host") or "?"),
            facts=dict(document.get("facts") or {}),
            entries=entries,
            updated_at_utc=str(document.get("updated_at_utc") or ""),
        )

    @classmethod
    def read(cls, path: Path) -> Calibration:
        """Read a calibration file."""
        return cls.from_document(read_calibration(path), Path(path))

    def mismatch(self, runs: Iterable[RunInfo]) -> str:
        """Why this calibration does not describe these runs' host ("" when it does)."""
        from bench.analysis.compare import facts_agree

        reasons = []
        for run in runs:
            if run.hostname != self.host:
                reasons.append(f"run {run.run_id} is from host {run.hostname!r}, not {self.host!r}")
                continue
            for key, value in self.facts.items():
                if not facts_agree(resolve_fact_path(key), [value, fact(run, key)]):
                    reasons.append(f"{key} is {fact(run, key)!r}, calibrated with {value!r}")
        return "; ".join(dict.fromkeys(reasons))

    def lookup(
        self,
        quantity: tuple[str, str, str, str, str],
        *,
        accel: str = "n/a",
        scenario_sha256: str = "",
    ) -> NoiseEntry | None:
        """The entry for a quantity under the same accelerator.

        An entry of the same scenario is preferred, else the one with the most blocks.
        """
        found = [e for e in self.entries if e.key() == quantity and e.accel == accel]
        if not found:
            return None
        same = [e for e in found if e.scenario_sha256 == scenario_sha256]
        return max(same or found, key=lambda e: (e.blocks, e.measured_at_utc))


def find_calibration(runs: Iterable[RunInfo]) -> Calibration | None:
    """The calibration beside the runs (``<run dir>/../calibration.json``), if one exists.

    The first file found for the runs' directories is used; it must still match their
    host (checked by the caller through ``Calibration.mismatch``).
    """
    for run in runs:
        path = calibration_path(run.directory.parent)
        if path.is_file():
            return Calibration.read(path)
    return None


def entries_as_rows(calibration: Calibration) -> list[dict[str, Any]]:
    """The entries as plain dicts (for tables and JSON output)."""
    return [asdict(e) for e in calibration.entries]


def value_entries(calibration: Calibration) -> list[NoiseEntry]:
    """The entries of sample values (not stages), in a stable order."""
    return sorted(
        (e for e in calibration.entries if e.stage == VALUE_STAGE),
        key=lambda e: (e.scenario, e.metric, e.case, e.view, e.backend),
    )


# --- designs with the power to see the margin ----------------------------------------------


@dataclass(frozen=True)
class Costs:
    """What one run and one block of a scenario cost on this host, in wall seconds."""

    run_s: float  # a run's fixed part: start, checks, artefacts, teardown
    block_s: float  # one repeat of the plan


def design_costs(dataset: Dataset) -> Costs:
    """The costs measured by the calibration's own runs (their wall time and blocks)."""
    from datetime import datetime

    block_s: list[float] = []
    run_s: list[float] = []
    frame = dataset.samples
    windows = None
    if "label.window_s" in frame.columns and "block" in frame.columns:
        windows = frame[(frame["metric"] == "noise") & frame["label.window_s"].notna()]
    for run in dataset.runs.values():
        per_block: list[float] = []
        if windows is not None:
            part = windows[windows["run_id"].astype(str) == run.run_id]
            per_block = part.groupby("block")["label.window_s"].first().astype(float).tolist()
        block_s.extend(per_block)
        started, ended = run.record.get("started_at_utc"), run.record.get("ended_at_utc")
        if started and ended:
            wall = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
            run_s.append(max(0.0, wall - sum(per_block)))
    return Costs(
        float(np.median(run_s)) if run_s else 0.0, float(np.median(block_s)) if block_s else 0.0
    )


def design_for(entry: NoiseEntry, min_effect: float, costs: Costs) -> Design | None:
    """The cheapest runs x blocks a side whose MDE is at most ``min_effect``.

    Ratio quantities on the log scale (the margin as ``log(1 + min_effect)``); sizes and
    values that can be <= 0 in their unit, against ``min_effect`` x their median. None
    when the run level was not measured (a calibration of one run, or of one block per
    run): a design priced as if runs never differed would promise what it cannot keep.
    """
    ratio = entry.sigma_log is not None and unit_kind(entry.unit) != "size"
    components = entry.components(MODE_RATIO if ratio else "absolute")
    if components is None or entry.run_df <= 0 or entry.run_sigma_abs is None:
        return None
    median = float(np.median(entry.block_medians)) if entry.block_medians else 0.0
    target = math.log1p(min_effect) if ratio else min_effect * abs(median)
    if target <= 0:
        return None
    design = plan(
        components,
        target,
        run_cost_s=costs.run_s,
        block_cost_s=costs.block_s,
        samples_per_block=round(entry.samples_per_block),
    )
    return replace(design, log_scale=ratio)
