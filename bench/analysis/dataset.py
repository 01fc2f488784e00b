"""Load any set of run directories into one tidy DataFrame, with the runs' facts kept beside it.

``bench.results.load`` is the reference reader; this one produces the same columns (a row
per sample; ``stage.*``, ``label.*`` and ``param.*`` columns; run_id, host, kernel,
scenario, scenario_sha256, run_status joined) and keeps every run's full, migrated
run.json in a ``RunInfo``, so comparisons can group by any host fact and the report can
show software versions and the accelerator decision. It is built for size: samples.jsonl
is decoded by msgspec into a typed record that skips the fields analysis never reads
(``t_ns``), then turned into columns in one pass, because a report over a million
samples must not spend its budget in ``json.loads``. Without msgspec it falls back to
the standard library, slower but identical in result.

Samples of an older schema are brought to the current one with
``bench.samples.upgrade_sample_record``'s rules, applied column-wise: a version-1 line is
block 0 of its run (``block`` is the repeat a sample belongs to: the unit comparisons
test on) and gets the ``label.mechanism`` its backend implies.

The file rules are those of ``bench.results``: run.json of an older schema is migrated,
a newer one refused; a torn last line of samples.jsonl (a run killed mid-write) is
skipped with a warning; a bad line elsewhere, or a sample of a newer schema, is refused.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ResultsError
from bench.results import SAMPLES_FILE, find_run_dirs, read_run
from bench.samples import SAMPLE_SCHEMA_VERSION, upgrade_sample_record

try:  # msgspec decodes samples.jsonl ~4x faster than json on the project's hosts
    import msgspec
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    msgspec = None  # type: ignore[assignment]

# Sample fields that become plain columns, in the order bench.results.load gives them.
SAMPLE_FIELDS = (
    "run_id",
    "seq",
    "metric",
    "backend",
    "case",
    "value",
    "unit",
    "ok",
    "error",
    "warmup",
    "round",
    "block",
    "instance",
    "schema_version",
)
# String columns with few distinct values: categorical, so grouping a million rows is cheap.
CATEGORY_COLUMNS = ("run_id", "metric", "backend", "case", "unit", "host", "kernel", "scenario")

# The labels analysis, comparisons, baselines and reports read. ``load_dataset(...,
# labels=ANALYSIS_LABELS)`` decodes only these (others are skipped by the decoder), which
# makes a million-sample load markedly faster; ``labels=None`` keeps every label.
ANALYSIS_LABELS = (
    "mechanism",
    "accel",
    "view",
    "role",
    "step",
    "count_ready",
    "count_started",
    "failures",
    "stop_reason",
    "p99_startup_s",
    "harness_rss_max_mib",
    "teardown_s",
    "set_value",
    "set_unit",
    "enforced",
    "applicable",
    "evidence",
    "series",
    "window_s",
)

# Short names for the host facts people group by most; anything else is a dotted path.
FACT_ALIASES = {
    "kernel": "host.kernel.release",
    "host": "host.hostname",
    "hostname": "host.hostname",
    "cpu": "host.cpu.model",
    "cgroup": "host.cgroup.version",
    "distro": "host.distro.pretty_name",
    "scenario": "scenario.name",
}


if msgspec is not None:

    class _SampleRecord(msgspec.Struct, kw_only=True, gc=False):
        """The fields of a sample line that analysis reads; unknown fields are skipped."""

        run_id: str = ""
        seq: int = 0
        metric: str = ""
        backend: str = ""
        case: str = ""
        value: float | None = None
        unit: str = ""
        ok: bool = True
        error: str | None = None
        warmup: bool = False
        round: int = 0
        block: int = 0
        instance: str = ""
        params: dict[str, Any] = msgspec.field(default_factory=dict)
        stages: dict[str, float | None] = msgspec.field(default_factory=dict)
        labels: dict[str, Any] = msgspec.field(default_factory=dict)
        schema_version: int = 0

    _LINE_DECODER = msgspec.json.Decoder(_SampleRecord)


@functools.cache
def _restricted_decoder(labels: tuple[str, ...]) -> Any:
    """A decoder whose labels are a struct of only ``labels`` (other keys skipped unread)."""
    label_struct = msgspec.defstruct(
        "_Labels", [(name, Any, None) for name in labels], kw_only=True, gc=False
    )
    record = msgspec.defstruct(
        "_RestrictedSampleRecord",
        [("labels", label_struct, msgspec.field(default_factory=label_struct))],
        bases=(_SampleRecord,),
        kw_only=True,
        gc=False,
    )
    return msgspec.json.Decoder(record)


@dataclass(frozen=True)
class RunInfo:
    """One run's migrated run.json and where it was read from."""

    run_id: str
    directory: Path
    record: dict[str, Any]

    @property
    def host(self) -> dict[str, Any]:
        """The host facts recorded at the start of the run."""
        host = self.record.get("host")
        return host if isinstance(host, dict) else {}

    @property
    def hostname(self) -> str:
        """The host's name as recorded (``?`` when absent)."""
        return str(self.host.get("hostname") or "?")

    @property
    def kernel_release(self) -> str:
        """The host kernel release (``?`` when absent)."""
        return str(fact(self, "kernel") or "?")

    @property
    def scenario_name(self) -> str:
        """The scenario's name."""
        return str((self.record.get("scenario") or {}).get("name") or "?")

    @property
    def scenario_text(self) -> str:
        """The scenario file's text exactly as run."""
        return str((self.record.get("scenario") or {}).get("text") or "")

    @property
    def scenario_sha256(self) -> str:
        """The hash of the canonical scenario: equal hashes mean the same experiment."""
        return str(self.record.get("scenario_sha256") or "")

    @property
    def status(self) -> str:
        """complete, failed, interrupted or running."""
        return str(self.record.get("status") or "?")


@dataclass
class Dataset:
    """Samples of one or more runs as a tidy frame, the runs' facts, and reading warnings."""

    samples: pd.DataFrame
    runs: dict[str, RunInfo] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def run_order(self) -> list[str]:
        """Run ids in the order they were given."""
        return list(self.runs)


def resolve_fact_path(path: str) -> str:
    """Turn an alias (``kernel``) or a host-relative path (``cpu.model``) into a run.json path."""
    path = FACT_ALIASES.get(path, path)
    top = path.split(".", 1)[0]
    if top in {"host", "software", "scenario", "plan", "load_start", "load_end", "artefacts"}:
        return path
    if top in {"run_id", "status", "scenario_sha256", "started_at_utc"}:
        return path
    return f"host.{path}"


def fact(run: RunInfo, path: str) -> Any:
    """A fact of a run by alias or dotted path: ``kernel``, ``cpu.model``, ``software.docker.runc``.

    Host-relative paths are looked up under run.json's ``host`` object; paths starting with
    ``software``, ``scenario``, ``plan``... under the run record itself. Absent -> None.
    """
    node: Any = run.record
    for part in resolve_fact_path(path).split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def flatten_facts(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested facts into ``{"cpu.model": ..., "cgroup.version": ...}``; lists kept whole."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_facts(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_dataset(
    paths: str | Path | Iterable[str | Path],
    *,
    facts: Sequence[str] = (),
    fast: bool = True,
    labels: Sequence[str] | None = None,
) -> Dataset:
    """Load run directories (or trees containing them) into a Dataset.

    ``facts`` adds one ``fact.<name>`` column per requested fact path (see ``fact``), e.g.
    ``facts=["kernel", "cpu.model"]``. ``labels`` limits the ``label.*`` columns to those
    names (``ANALYSIS_LABELS`` is what analysis reads); None keeps every label.
    ``fast=False`` forces the standard-library decoder.
    """
    wanted = tuple(labels) if labels is not None else None
    if isinstance(paths, str | Path):
        paths = [paths]
    frames: list[pd.DataFrame] = []
    runs: dict[str, RunInfo] = {}
    warnings: list[str] = []
    with _no_cyclic_gc():
        for directory in find_run_dirs(paths):
            _load_run(directory, facts, fast, wanted, frames, runs, warnings)
    nonempty = [f for f in frames if not f.empty]
    if not nonempty:
        samples = pd.DataFrame(columns=[*SAMPLE_FIELDS, "host", "kernel", "scenario"])
    elif len(nonempty) == 1:
        samples = nonempty[0]
    else:
        samples = pd.concat(nonempty, ignore_index=True, sort=False)
    samples = _categorize(samples)
    samples.attrs["warnings"] = warnings
    return Dataset(samples, runs, warnings)


def _load_run(
    directory: Path,
    facts: Sequence[str],
    fast: bool,
    labels: tuple[str, ...] | None,
    frames: list[pd.DataFrame],
    runs: dict[str, RunInfo],
    warnings: list[str],
) -> None:
    record = read_run(directory)
    run_id = str(record.get("run_id") or directory.name)
    if run_id in runs:
        warnings.append(f"{directory}: run {run_id} already loaded from {runs[run_id].directory}")
        return
    run = RunInfo(run_id, directory, record)
    runs[run_id] = run
    frame = _parallel_run_frame(run, directory / SAMPLES_FILE, labels) if fast else None
    if frame is None:
        columns, file_warnings = _read_sample_columns(directory / SAMPLES_FILE, fast, labels)
        warnings.extend(file_warnings)
        frame = _run_frame(run, columns)
    for name in facts:
        value = fact(run, name)
        frame[f"fact.{name}"] = None if isinstance(value, dict | list) else value
    frames.append(frame)


PARALLEL_MIN_BYTES = 64 * 1024 * 1024


def _chunk_bounds(path: Path, parts: int) -> list[tuple[int, int]]:
    """Split a file into ``parts`` byte ranges that start and end at line boundaries."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as handle:
        for index in range(1, parts):
            handle.seek(size * index // parts)
            handle.readline()  # move to the start of the next line
            cuts.append(max(handle.tell(), cuts[-1]))
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _chunk_frame(task: tuple[RunInfo, Path, int, int, tuple[str, ...] | None]) -> pd.DataFrame:
    """Decode one byte range of samples.jsonl into a frame (in a worker process).

    Any bad line raises: the caller then reads the file serially, which names the line
    and tolerates a torn last one.
    """
    run, path, start, end, labels = task
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    line_decoder = _LINE_DECODER if labels is None else _restricted_decoder(labels)
    decode = line_decoder.decode
    plain: dict[str, list[Any]] = {name: [] for name in SAMPLE_FIELDS}
    columns = _Columns(plain, [], [], [], None if labels is None else {k: [] for k in labels})
    with _no_cyclic_gc():
        records = [decode(line) for line in data.splitlines() if line and not line.isspace()]
        if records:
            if max(r.schema_version for r in records) > SAMPLE_SCHEMA_VERSION:
                raise ResultsError("newer sample schema")
            _extend_columns(columns, records, labels)
        del records
        return _categorize(_run_frame(run, columns))


def _parallel_run_frame(
    run: RunInfo, path: Path, labels: tuple[str, ...] | None
) -> pd.DataFrame | None:
    """Decode a large samples.jsonl on every core; None when that is not worth it or failed.

    Each worker returns a frame whose text columns are categorical (codes pickle fast);
    the parts are joined with their categories unioned. Any failure (a torn or bad line,
    no fork) falls back to the serial reader, which reports it precisely.
    """
    import multiprocessing
    import os

    workers = min(os.cpu_count() or 1, 8)
    try:
        big = path.stat().st_size >= PARALLEL_MIN_BYTES
    except OSError:
        return None
    if msgspec is None or workers < 2 or not big:
        return None
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    tasks = [(run, path, a, b, labels) for a, b in _chunk_bounds(path, workers)]
    try:
        with multiprocessing.get_context("fork").Pool(len(tasks)) as pool:
            parts = pool.map(_chunk_frame, tasks)
    except Exception:
        return None
    for name in CATEGORY_COLUMNS:
        if all(name in part.columns for part in parts):
            union = pd.api.types.union_categoricals([part[name] for part in parts])
            for part in parts:
                part[name] = pd.Categorical(part[name], categories=union.categories)
    return pd.concat(parts, ignore_index=True, sort=False)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic GC: decoding a million records would trigger it thousands of times."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _categorize(frame: pd.DataFrame) -> pd.DataFrame:
    for name in CATEGORY_COLUMNS:
        if name in frame.columns and not isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype("category")
    return frame


# --- samples.jsonl -> columns ---------------------------------------------------------------


@dataclass
class _Columns:
    """Column lists of one samples file: plain fields, and stage/label/param dicts per row."""

    plain: dict[str, list[Any]]
    stages: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    params: list[dict[str, Any]]
    label_columns: dict[str, list[Any]] | None = None  # when labels were restricted

    @property
    def size(self) -> int:
        return len(self.stages)


def _read_sample_columns(
    path: Path, fast: bool, labels: tuple[str, ...] | None
) -> tuple[_Columns, list[str]]:
    if not path.exists():
        return _Columns({name: [] for name in SAMPLE_FIELDS}, [], [], []), [
            f"{path}: missing; no samples"
        ]
    if fast and msgspec is not None:
        return _decode_msgspec(path, labels)
    columns, warnings = _decode_json(path, path.read_bytes())
    if labels is not None:
        columns.label_columns = {k: [d.get(k) for d in columns.labels] for k in labels}
    return columns, warnings


_BATCH_LINES = 65536


def _decode_msgspec(path: Path, labels: tuple[str, ...] | None) -> tuple[_Columns, list[str]]:
    """Decode samples.jsonl in batches of lines, turning each batch into columns at once.

    Batches keep only one batch of decoded records alive, so a million-sample file is
    never held as a million records plus a million line copies at the same time.
    """
    decode = (_LINE_DECODER if labels is None else _restricted_decoder(labels)).decode
    plain: dict[str, list[Any]] = {name: [] for name in SAMPLE_FIELDS}
    columns = _Columns(plain, [], [], [], None if labels is None else {k: [] for k in labels})
    warnings: list[str] = []
    bad_line: int | None = None  # a line that failed to decode; fatal unless it is the last
    newest = 0
    with open(path, "rb") as handle:
        number = 0
        while True:
            batch = handle.readlines(_BATCH_LINES * 1024)
            if not batch:
                break
            records: list[Any] = []
            for line in batch:
                number += 1
                if line.isspace():
                    continue
                if bad_line is not None:
                    raise ResultsError(f"{path}:{bad_line}: not valid JSON") from None
                try:
                    records.append(decode(line))
                except msgspec.ValidationError as exc:
                    raise ResultsError(f"{path}:{number}: not a valid sample ({exc})") from None
                except msgspec.DecodeError:
                    bad_line = number
            if records:
                newest = max(newest, max(r.schema_version for r in records))
                _extend_columns(columns, records, labels)
    if bad_line is not None:
        warnings.append(f"{path}:{bad_line}: torn last line skipped (run killed mid-write?)")
    if newest > SAMPLE_SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: sample schema_version {newest} is newer than this bench reads "
            f"({SAMPLE_SCHEMA_VERSION}); upgrade bench"
        )
    return columns, warnings


def _extend_columns(columns: _Columns, records: list[Any], labels: tuple[str, ...] | None) -> None:
    """Append a batch of decoded records to the columns (struct fields transposed in C)."""
    fields = type(records[0]).__struct_fields__
    transposed = dict(
        zip(fields, zip(*map(msgspec.structs.astuple, records), strict=True), strict=True)
    )
    for name, values in columns.plain.items():
        values.extend(transposed[name])
    columns.stages.extend(transposed["stages"])
    columns.params.extend(transposed["params"])
    if labels is None or columns.label_columns is None:
        columns.labels.extend(transposed["labels"])
        return
    columns.labels.extend([{}] * len(records))
    label_values = zip(*map(msgspec.structs.astuple, transposed["labels"]), strict=True)
    label_fields = type(transposed["labels"][0]).__struct_fields__
    for key, column in zip(label_fields, label_values, strict=True):
        columns.label_columns[key].extend(column)


def _numbered_lines(data: bytes) -> list[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers (blank lines are skipped, like read_samples)."""
    raw = data.split(b"\n")
    return [
        (number, line) for number, line in enumerate(raw, start=1) if line and not line.isspace()
    ]


def _decode_json(path: Path, data: bytes) -> tuple[_Columns, list[str]]:
    warnings: list[str] = []
    records: list[dict[str, Any]] = []
    numbered = _numbered_lines(data)
    for index, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if index == len(numbered) - 1:
                warnings.append(f"{path}:{number}: torn last line skipped (run killed mid-write?)")
                continue
            raise ResultsError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(record, dict):
            raise ResultsError(f"{path}:{number}: not a valid sample (not an object)")
        version = record.get("schema_version", 0)
        if isinstance(version, int) and version > SAMPLE_SCHEMA_VERSION:
            raise ResultsError(
                f"{path}:{number}: sample schema_version {version} is newer than this bench "
                f"reads ({SAMPLE_SCHEMA_VERSION}); upgrade bench"
            )
        records.append(record)
    defaults: dict[str, Any] = {
        "ok": True,
        "warmup": False,
        "round": 0,
        "block": 0,
        "seq": 0,
        "schema_version": 0,
        "instance": "",
        "unit": "",
    }
    plain = {name: [r.get(name, defaults.get(name)) for r in records] for name in SAMPLE_FIELDS}
    return _Columns(
        plain,
        [r.get("stages") or {} for r in records],
        [r.get("labels") or {} for r in records],
        [r.get("params") or {} for r in records],
    ), warnings


def _run_frame(run: RunInfo, columns: _Columns) -> pd.DataFrame:
    """Columns of one run, with the run's facts joined, in results.load's layout."""
    size = columns.size
    data: dict[str, Any] = {}
    for name in SAMPLE_FIELDS:
        values = columns.plain[name]
        if name == "value":
            data[name] = np.array(values, dtype=np.float64)  # None -> NaN
        elif name in {"ok", "warmup"}:
            data[name] = np.array(values, dtype=bool)
        elif name in {"seq", "round", "block", "schema_version"}:
            data[name] = np.array(values, dtype=np.int64)
        elif name == "run_id":
            data[name] = [v or run.run_id for v in values]
        else:
            data[name] = values
    host = run.host
    data["host"] = [host.get("hostname")] * size
    data["kernel"] = [(host.get("kernel") or {}).get("release")] * size
    data["scenario"] = [run.scenario_name] * size
    data["scenario_sha256"] = [run.record.get("scenario_sha256")] * size
    data["run_status"] = [run.record.get("status")] * size
    data.update(_expand("stage.", columns.stages, numeric=True))
    if columns.label_columns is None:
        data.update(_expand("label.", columns.labels, numeric=False))
    else:
        for key, values in columns.label_columns.items():
            if values.count(None) != len(values):
                data[f"label.{key}"] = _label_column(pd.Series(values))
    data.update(_expand("param.", columns.params, numeric=False))
    frame = pd.DataFrame(data, index=pd.RangeIndex(size))
    wants_mechanism = columns.label_columns is None or "mechanism" in columns.label_columns
    return _upgrade_old_rows(frame, mechanism=wants_mechanism)


def _upgrade_old_rows(frame: pd.DataFrame, *, mechanism: bool) -> pd.DataFrame:
    """Apply ``upgrade_sample_record`` to the rows of older sample schemas, column-wise.

    Decoding stays columnar for speed, so the record-level migration is run once per
    distinct backend of the old rows (what it infers depends only on the backend and
    the version) and its result spread over the column: ``block`` is already 0 by
    default, ``label.mechanism`` is filled where the line had none.
    """
    if frame.empty:
        return frame
    versions = frame["schema_version"].to_numpy()
    old = versions < SAMPLE_SCHEMA_VERSION
    if not old.any():
        return frame
    if mechanism:
        inferred: dict[str, Any] = {}
        for backend in pd.unique(frame.loc[old, "backend"].astype(str)):
            record = upgrade_sample_record(
                {"backend": backend, "labels": {}, "schema_version": int(versions[old].min())}
            )
            inferred[str(backend)] = record["labels"].get("mechanism")
        column = (
            frame["label.mechanism"].astype(object)
            if "label.mechanism" in frame.columns
            else pd.Series([None] * len(frame), index=frame.index, dtype=object)
        )
        missing = old & column.isna().to_numpy()
        if missing.any():
            column = column.copy()
            column[missing] = frame.loc[missing, "backend"].astype(str).map(inferred).to_numpy()
        values = column.where(column.notna(), None).to_numpy()
        if "label.mechanism" in frame.columns:
            frame["label.mechanism"] = values
        else:  # first among the labels, wherever the file's first label line put the others
            labels = [i for i, c in enumerate(frame.columns) if str(c).startswith("label.")]
            frame.insert(labels[0] if labels else len(frame.columns), "label.mechanism", values)
    frame.loc[old, "schema_version"] = SAMPLE_SCHEMA_VERSION
    return frame


def _expand(prefix: str, dicts: list[dict[str, Any]], *, numeric: bool) -> dict[str, Any]:
    """One column per key that appears in any row's dict (missing -> NaN/None)."""
    if not any(dicts):
        return {}
    frame = pd.DataFrame(dicts)  # pandas builds columns from dicts in C
    columns: dict[str, Any] = {}
    for key in frame.columns:
        column = frame[key]
        if numeric and column.dtype == object:
            column = column.map(_as_float).astype(np.float64)
        elif not numeric:
            columns[f"{prefix}{key}"] = _label_column(column)
            continue
        columns[f"{prefix}{key}"] = column.to_numpy()
    return columns


def _label_column(column: pd.Series) -> Any:
    """A label column as pandas infers it, except that gaps (absent labels) are None."""
    missing = column.isna()
    if missing.any():
        column = column.astype(object).where(~missing, None)
    return column.to_numpy()


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
