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
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.columns import isin
from bench.results import (
    SAMPLES_FILE,
    SampleLineError,
    find_run_dirs,
    iter_sample_records,
    read_run,
)
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
# Text labels with at most this many distinct values (or a twentieth of the rows) are
# categorical too.
CATEGORY_MAX_VALUES = 64
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
    "verdict_note",
    "applicable",
    "evidence",
    "series",
    "window_s",
    # the summary, the ledger and the density plots
    "ci_low_mib",
    "ci_high_mib",
    "finding",
    "stop_detail",
    "knee_count",
    "slo_p99_s",
    "mem_floor_mib",
    "ksm",
    "reason",
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
    cache: bool = True,
) -> Dataset:
    """Load run directories (or trees containing them) into a Dataset.

    ``facts`` adds one ``fact.<name>`` column per requested fact path (see ``fact``), e.g.
    ``facts=["kernel", "cpu.model"]``. ``labels`` limits the ``label.*`` columns to those
    names (``ANALYSIS_LABELS`` is what analysis reads); None keeps every label.
    ``fast=False`` forces the standard-library decoder and bypasses the cache;
    ``cache=False`` neither reads nor writes ``samples.parquet``.
    """
    wanted = tuple(labels) if labels is not None else None
    if isinstance(paths, str | Path):
        paths = [paths]
    frames: list[pd.DataFrame] = []
    runs: dict[str, RunInfo] = {}
    warnings: list[str] = []
    with _no_cyclic_gc():
        for directory in find_run_dirs(paths):
            _load_run(directory, facts, fast, wanted, cache and fast, frames, runs, warnings)
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
    use_cache: bool,
    frames: list[pd.DataFrame],
    runs: dict[str, RunInfo],
    warnings: list[str],
) -> None:
    from bench.ownership import effective_status

    record = read_run(directory)
    run_id = str(record.get("run_id") or directory.name)
    if run_id in runs:
        warnings.append(f"{directory}: run {run_id} already loaded from {runs[run_id].directory}")
        return
    run = RunInfo(run_id, directory, record)
    runs[run_id] = run
    path = directory / SAMPLES_FILE
    cached = read_cache(directory, labels) if use_cache else None
    if cached is not None:
        frame, file_warnings = cached
    else:
        # a finished run's journal no longer changes: decode every label once and keep
        # the columns beside it; a running one is read as asked, and not cached
        finished = use_cache and path.exists() and effective_status(record) != "running"
        columns, file_warnings = _read_sample_columns(path, fast, None if finished else labels)
        frame = _sample_frame(columns)
        if finished:
            frame = _categorize(frame)
            write_cache(directory, frame, file_warnings)
            frame = _project_labels(frame, labels)
    warnings.extend(file_warnings)
    frame = _join_run(frame, run)
    for name in facts:
        value = fact(run, name)
        frame[f"fact.{name}"] = None if isinstance(value, dict | list) else value
    frames.append(frame)


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
    """Repeated text as categoricals: the key columns, and text labels with few values.

    A label that is text on every row and takes few distinct values (mechanism, view,
    accelerator, the accelerator's reason) is compared and grouped by its codes, and
    costs one string per value instead of one per row.
    """
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            continue
        if name in CATEGORY_COLUMNS or (
            name.startswith("label.")
            and pd.api.types.is_string_dtype(column.dtype)
            and column.dtype != object
            and column.nunique() <= max(CATEGORY_MAX_VALUES, len(column) // 20)
        ):
            frame[name] = column.astype("category")
    return frame


# --- the columnar cache ----------------------------------------------------------------------

CACHE_FILE = "samples.parquet"
# Bumped whenever the cached layout changes: an older cache is rebuilt, never misread.
CACHE_FORMAT = 1
_META_KEY = b"bench.samples_cache"


def _journal_key(path: Path) -> dict[str, Any]:
    """What the cache was built from: the journal's size and mtime, and the reader's version."""
    stat = path.stat()
    return {
        "format": CACHE_FORMAT,
        "sample_schema": SAMPLE_SCHEMA_VERSION,
        "journal_bytes": stat.st_size,
        "journal_mtime_ns": stat.st_mtime_ns,
    }


def read_cache(
    directory: Path, labels: tuple[str, ...] | None = None
) -> tuple[pd.DataFrame, list[str]] | None:
    """The cached sample columns of a run (only ``labels``' label columns), or None.

    None when there is no cache, or it was built from another journal (size or mtime
    differ), by another cache format, or cannot be read: the caller decodes the journal.
    """
    cache = Path(directory) / CACHE_FILE
    journal = Path(directory) / SAMPLES_FILE
    if not cache.is_file() or not journal.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(cache)
        meta = json.loads((schema.metadata or {}).get(_META_KEY, b"{}"))
        if meta.get("key") != _journal_key(journal):
            return None
        names = [
            n
            for n in schema.names
            if not n.startswith("label.") or labels is None or n[6:] in labels
        ]
        table = pq.read_table(cache, columns=names)
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    frame = table.to_pandas(self_destruct=True)
    nullable = set(meta.get("nullable", []))
    for name in meta.get("json_columns", []):
        if name in frame.columns:
            frame[name] = _decoded_json(frame[name])
    for name in nullable & set(frame.columns):
        frame[name] = _label_column(frame[name])
    for name in meta.get("object_columns", []):
        if name in frame.columns and frame[name].dtype != object:
            frame[name] = frame[name].to_numpy(dtype=object)
    return _project_labels(frame, labels), list(meta.get("warnings", []))


def write_cache(directory: Path, frame: pd.DataFrame, warnings: list[str]) -> bool:
    """Write a run's sample columns to ``samples.parquet`` beside its journal.

    Label and parameter columns hold whatever the samples carried: a column of only
    text, only booleans or only numbers is stored as such; anything else (dicts, lists,
    mixed types) as JSON text, decoded again on reading. Written to a temporary file and
    renamed; a directory that cannot be written to leaves the run uncached (False).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    journal = Path(directory) / SAMPLES_FILE
    json_columns: list[str] = []
    nullable: list[str] = []
    object_columns: list[str] = []
    arrays: dict[str, Any] = {}
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object and name.startswith(("label.", "param.")):
            kind = _value_kind(column)
            missing = column.isna().to_numpy()
            if missing.any():
                nullable.append(name)
            values = column.to_numpy(dtype=object)
            if kind == "json":
                json_columns.append(name)
                texts = np.full(len(values), None, dtype=object)
                texts[~missing] = [json.dumps(v) for v in values[~missing]]
                arrays[name] = pa.array(texts, pa.string(), from_pandas=True)
                continue
            if kind == "int" and not missing.any():
                object_columns.append(name)
            types = {"str": pa.string(), "bool": pa.bool_(), "int": pa.int64()}
            arrays[name] = pa.array(values, types.get(kind, pa.float64()), from_pandas=True)
        else:
            arrays[name] = pa.array(column, from_pandas=True)
    table = pa.table(arrays)
    meta = {
        "key": _journal_key(journal),
        "json_columns": json_columns,
        "nullable": nullable,
        "object_columns": object_columns,
        "warnings": warnings,
    }
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    target = Path(directory) / CACHE_FILE
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        pq.write_table(table, partial, compression="lz4")  # decompresses ~2x faster than zstd
        os.replace(partial, target)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
        return False
    return True


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# pandas' own inference (in C) -> how a label column is stored
_KINDS = {
    "string": "str",
    "empty": "str",
    "boolean": "bool",
    "integer": "int",
    "floating": "float",
}


def _value_kind(column: pd.Series) -> str:
    """``str``, ``bool``, ``int``, ``float`` or ``json``: how a label column can be stored.

    Ints beside floats, text beside numbers, dicts and lists keep their values exactly
    only as JSON.
    """
    return _KINDS.get(pd.api.types.infer_dtype(column, skipna=True), "json")


def _decoded_json(column: pd.Series) -> Any:
    values = column.to_numpy(dtype=object)
    return np.array([None if _missing(v) else json.loads(v) for v in values], dtype=object)


def _project_labels(frame: pd.DataFrame, labels: tuple[str, ...] | None) -> pd.DataFrame:
    """Only the requested label columns (all when ``labels`` is None)."""
    if labels is None:
        return frame
    present = set(frame.columns)
    chosen = [f"label.{k}" for k in labels if f"label.{k}" in present]
    columns = [c for c in frame.columns if not c.startswith(("label.", "param."))]
    columns += chosen + [c for c in frame.columns if c.startswith("param.")]
    return frame[columns]


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


_BATCH_RECORDS = 65536


def _read_sample_columns(
    path: Path, fast: bool, labels: tuple[str, ...] | None
) -> tuple[_Columns, list[str]]:
    """Decode samples.jsonl into columns under ``bench.results.iter_sample_records``' rules."""
    if not path.exists():
        return _Columns({name: [] for name in SAMPLE_FIELDS}, [], [], []), [
            f"{path}: missing; no samples"
        ]
    warnings: list[str] = []
    if not (fast and msgspec is not None):
        records = list(iter_sample_records(path, warnings=warnings))
        columns = _json_columns(records)
        if labels is not None:
            columns.label_columns = {k: [d.get(k) for d in columns.labels] for k in labels}
        return columns, warnings
    decoder = _LINE_DECODER if labels is None else _restricted_decoder(labels)

    def decode(line: bytes) -> Any:
        try:
            return decoder.decode(line)
        except msgspec.ValidationError as exc:
            raise SampleLineError(str(exc)) from None

    plain: dict[str, list[Any]] = {name: [] for name in SAMPLE_FIELDS}
    columns = _Columns(plain, [], [], [], None if labels is None else {k: [] for k in labels})
    batch: list[Any] = []
    for record in iter_sample_records(
        path, decode, warnings=warnings, version_of=lambda r: r.schema_version
    ):
        batch.append(record)
        if len(batch) >= _BATCH_RECORDS:
            _extend_columns(columns, batch, labels)
            batch = []
    if batch:
        _extend_columns(columns, batch, labels)
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


def _json_columns(records: list[dict[str, Any]]) -> _Columns:
    """Columns of records decoded by the standard library (absent fields get defaults)."""
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
    )


def _sample_frame(columns: _Columns) -> pd.DataFrame:
    """The sample columns of one run (no run facts yet), old schemas migrated."""
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
        elif name in CATEGORY_COLUMNS:
            data[name] = pd.Categorical(values)  # factorised once, never a million strings
        else:
            data[name] = values
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


def _constant(value: Any, size: int, categorical: bool) -> Any:
    """A column holding one value: a one-category Categorical costs no per-row objects."""
    if categorical and value is not None:
        return pd.Categorical.from_codes(np.zeros(size, dtype=np.int8), pd.Index([value]))
    return [value] * size


def _join_run(frame: pd.DataFrame, run: RunInfo) -> pd.DataFrame:
    """The run's facts joined to its sample columns, after the plain fields."""
    size = len(frame)
    host = run.host
    joined = {
        "host": host.get("hostname"),
        "kernel": (host.get("kernel") or {}).get("release"),
        "scenario": run.scenario_name,
        "scenario_sha256": run.record.get("scenario_sha256"),
        "run_status": run.record.get("status"),
    }
    if "run_id" in frame.columns:
        ids = frame["run_id"]
        blank = isin(ids, [""]) | ids.isna().to_numpy()
        if blank.any():
            frame["run_id"] = np.where(blank, run.run_id, ids.to_numpy(dtype=object))
    position = len([c for c in SAMPLE_FIELDS if c in frame.columns])
    for offset, (name, value) in enumerate(joined.items()):
        frame.insert(position + offset, name, _constant(value, size, name in CATEGORY_COLUMNS))
    return frame


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
