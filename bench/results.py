"""The results store: ``results/<host>/<run_id>/{run.json, samples.jsonl}``.

run.json carries ``schema_version``, the scenario (text, parsed, sha256), host facts and
software versions once per run, and the run's status. samples.jsonl gets one Sample per
line, appended and flushed as each is taken, so an interrupted run keeps what it
measured. Files of an older schema are migrated by small ``_update_to_N`` functions;
files of a newer one are refused with a clear message (like asv's util.load_json).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bench.errors import BenchError, ResultsError, ResultsStorageError
from bench.files import open_regular, read_json_object
from bench.samples import SAMPLE_SCHEMA_VERSION, Sample, upgrade_sample_record

RUN_SCHEMA_VERSION = 1
RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"

# schema_version N-1 -> N migrations for run.json; empty until the format changes
_RUN_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def utc_now_iso() -> str:
    """Wall-clock time in UTC, ISO 8601, for humans (never used for durations)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def safe_component(text: str) -> str:
    """Make a string safe as one path component (hostnames, scenario names)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned[:64] or "unnamed"


def new_run_id(scenario_name: str) -> str:
    """Return a sortable, unique run id: ``20261130T061500Z-quick-a1b2c3``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{safe_component(scenario_name)}-{secrets.token_hex(3)}"


def write_text_atomic(path: Path, text: str) -> int:
    """Write text via a temporary file and rename (parents created); return its bytes.

    Readers never see half a file, and a failed write (a full disk) leaves no partial one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return len(data)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


# Space held back in every run directory for the run's last record: released just before
# it is written, so a disk that filled up during the run still takes the final status.
RESERVE_FILE = ".reserve"
RESERVE_MIN_BYTES = 1024 * 1024


class ResultStore:
    """One run directory being written: run.json rewritten on status changes, samples appended.

    A write that fails (ENOSPC, EIO, a read-only remount) raises ResultsStorageError: the
    runner stops the run there, removes its instances and calls ``finish``, which writes
    the final status into the space reserved when the directory was made.
    """

    def __init__(self, directory: Path, run: dict[str, Any]) -> None:
        self.directory = directory
        self.run = run
        self._samples: IO[str] | None = None
        # host noise records are counted apart: they are context, not measurements
        self.counts = {"samples": 0, "ok": 0, "failed": 0, "warmup": 0, "noise": 0}

    @classmethod
    def create(cls, root: Path, host: str, run_id: str, run: dict[str, Any]) -> ResultStore:
        """Create ``root/<host>/<run_id>/`` and write run.json with status 'running'.

        Refused (ResultsStorageError, the directory removed again) when the filesystem
        cannot hold the run's last record.
        """
        directory = Path(root) / safe_component(host) / run_id
        directory.mkdir(parents=True, exist_ok=False)
        record = {"schema_version": RUN_SCHEMA_VERSION, "run_id": run_id, **run}
        record.setdefault("status", "running")
        store = cls(directory, record)
        try:
            store.update()
            store._reserve()
            store._samples = open(directory / SAMPLES_FILE, "a", buffering=1)  # noqa: SIM115
        except ResultsStorageError:
            for name in (RUN_FILE, SAMPLES_FILE, RESERVE_FILE):
                (directory / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                directory.rmdir()
            raise
        return store

    def _reserve(self) -> None:
        """Hold back room for the last run.json (twice today's, plus 1 MiB for notes)."""
        size = RESERVE_MIN_BYTES + 2 * len(json.dumps(self.run, default=str))
        path = self.directory / RESERVE_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise ResultsStorageError(
                f"{self.directory}: cannot reserve {size} bytes for the run's last record "
                f"({exc.strerror}): free some space or give --results another directory"
            ) from None

    def _storage_error(self, path: Path, exc: OSError) -> ResultsStorageError:
        return ResultsStorageError(
            f"{path}: cannot write results ({exc.strerror or exc}); the run stopped, its "
            "instances were removed and run.json says why"
        )

    def append(self, sample: Sample) -> None:
        """Append one sample line and flush it to the OS at once."""
        assert self._samples is not None, "store is closed"
        try:
            self._samples.write(sample.to_json() + "\n")
            self._samples.flush()
        except OSError as exc:
            raise self._storage_error(self.directory / SAMPLES_FILE, exc) from None
        if sample.metric == "noise":
            self.counts["noise"] += 1
            return
        self.counts["samples"] += 1
        if sample.warmup:
            self.counts["warmup"] += 1
        self.counts["ok" if sample.ok else "failed"] += 1

    @classmethod
    def reopen(cls, directory: Path) -> ResultStore:
        """Open an existing run directory to append to it (a resumed run); counts restored."""
        run = read_run(directory)
        store = cls(directory, run)
        for record in read_samples(directory).records:
            if record.get("metric") == "noise":
                store.counts["noise"] += 1
                continue
            store.counts["samples"] += 1
            store.counts["warmup"] += bool(record.get("warmup"))
            store.counts["ok" if record.get("ok") else "failed"] += 1
        store._reserve()
        store._samples = open(directory / SAMPLES_FILE, "a", buffering=1)  # noqa: SIM115
        return store

    def update(self, **fields: Any) -> None:
        """Merge fields into run.json and rewrite it atomically."""
        self.run.update(fields)
        path = self.directory / RUN_FILE
        try:
            write_json_atomic(path, self.run)
        except OSError as exc:
            raise self._storage_error(path, exc) from None

    def finish(self, status: str, **fields: Any) -> None:
        """Record the final status (complete, failed, interrupted) and close the samples file.

        The reserved space is given back first, so the last record fits even on a disk
        that filled up during the run.
        """
        if self._samples is not None:
            # a line a full disk refused may still sit in the buffer: it is lost, not retried
            with contextlib.suppress(OSError):
                self._samples.close()
            self._samples = None
        (self.directory / RESERVE_FILE).unlink(missing_ok=True)
        self.update(status=status, counts=dict(self.counts), ended_at_utc=utc_now_iso(), **fields)


def migrate_schema(
    data: dict[str, Any],
    source: str,
    *,
    current: int,
    migrations: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]],
    error: type[BenchError],
    unversioned: str = "no integer schema_version",
) -> dict[str, Any]:
    """Bring a versioned dict to schema ``current`` via ``migrations`` (N-1 -> N).

    Raises ``error`` for a dict with no integer schema_version (``unversioned`` says
    so), a newer schema, or a version no migration starts from.
    """
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise error(f"{source}: {unversioned}")
    if version > current:
        raise error(
            f"{source}: schema_version {version} is newer than this bench reads "
            f"({current}); upgrade bench to read it"
        )
    while version < current:
        migrate = migrations.get(version + 1)
        if migrate is None:
            raise error(f"{source}: no migration from schema_version {version}")
        data = migrate(data)
        version += 1
        data["schema_version"] = version
    return data


def migrate_run(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring a run.json dict to the current schema, or refuse one that is newer."""
    return migrate_schema(
        data,
        source,
        current=RUN_SCHEMA_VERSION,
        migrations=_RUN_MIGRATIONS,
        error=ResultsError,
        unversioned="no integer schema_version; not a bench run file",
    )


def read_run(directory: Path) -> dict[str, Any]:
    """Read and migrate a run directory's run.json."""
    path = Path(directory) / RUN_FILE
    if not os.path.lexists(path):
        raise ResultsError(f"{directory}: not a run directory (no {RUN_FILE})")
    data = read_json_object(path, ResultsError, "run file")
    return migrate_run(data, str(path))


@dataclass
class SamplesRead:
    """Samples read from one samples.jsonl, and what was wrong with the file, if anything."""

    records: list[dict[str, Any]]
    warnings: list[str]


# No sample line is anywhere near this long; a longer one is damage, never read whole.
MAX_SAMPLE_LINE_BYTES = 16 * 1024 * 1024


def iter_sample_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (line number, line bytes, is_last) of samples.jsonl, refusing monster lines.

    Lines are read with a length cap, so a corrupt file (a 2 GB line) costs 16 MiB of
    memory at most before it is refused with the line number.
    """
    with open_regular(path, ResultsError, "samples") as handle:
        number = 0
        pending = handle.readline(MAX_SAMPLE_LINE_BYTES + 1)
        while pending:
            number += 1
            if len(pending) > MAX_SAMPLE_LINE_BYTES and not pending.endswith(b"\n"):
                raise ResultsError(
                    f"{path}:{number}: a line longer than {MAX_SAMPLE_LINE_BYTES} bytes: "
                    "not a sample (damaged file?)"
                )
            following = handle.readline(MAX_SAMPLE_LINE_BYTES + 1)
            yield number, pending, not following
            pending = following


class SampleLineError(ValueError):
    """A line of samples.jsonl that is valid JSON but not a sample record."""


def decode_json_record(line: bytes) -> dict[str, Any]:
    """Decode one sample line with the standard library (``ValueError`` on garbage)."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise SampleLineError("not an object")
    return record


def _dict_version(record: Any) -> Any:
    return record.get("schema_version", 0)


def iter_sample_records(
    path: Path,
    decode: Callable[[bytes], Any] = decode_json_record,
    *,
    warnings: list[str],
    version_of: Callable[[Any], Any] = _dict_version,
) -> Iterator[Any]:
    """Yield the decoded records of samples.jsonl under the one set of journal rules.

    - a line longer than ``MAX_SAMPLE_LINE_BYTES`` is refused with its number, unread;
    - blank lines are skipped;
    - a last line that does not decode is a torn write (a run killed mid-append): it is
      skipped, and a warning appended to ``warnings``;
    - any other line that does not decode is refused ("not valid JSON"), and one that
      decodes to something other than a sample (``decode`` raises ``SampleLineError``)
      too;
    - a record of a newer ``schema_version`` than this bench reads is refused.

    ``decode`` turns a line into a record (``decode_json_record``: a dict; the analysis
    reader passes a faster typed decoder) and raises ``ValueError`` for a line that is
    not JSON; ``version_of`` reads a record's schema version. Records are yielded as
    decoded: migrating older ones is the caller's step (``upgrade_sample_record``).
    """
    for number, line, last in iter_sample_lines(path):
        if not line.strip():
            continue
        try:
            record = decode(line)
        except SampleLineError as exc:
            raise ResultsError(f"{path}:{number}: not a sample record ({exc})") from None
        except ValueError:  # JSONDecodeError, UnicodeDecodeError, msgspec.DecodeError
            if last:
                warnings.append(f"{path}:{number}: torn last line skipped (run killed mid-write?)")
                continue
            raise ResultsError(f"{path}:{number}: not valid JSON") from None
        version = version_of(record)
        if not isinstance(version, int) or version > SAMPLE_SCHEMA_VERSION:
            raise ResultsError(
                f"{path}:{number}: sample schema_version {version} is newer than this bench "
                f"reads ({SAMPLE_SCHEMA_VERSION}); upgrade bench"
            )
        yield record


def read_samples(directory: Path) -> SamplesRead:
    """Read samples.jsonl as dicts, migrated (the rules are ``iter_sample_records``')."""
    path = Path(directory) / SAMPLES_FILE
    warnings: list[str] = []
    if not path.exists():
        return SamplesRead([], [f"{path}: missing; no samples"])
    records = [
        upgrade_sample_record(record) for record in iter_sample_records(path, warnings=warnings)
    ]
    return SamplesRead(records, warnings)


def rewrite_samples(
    directory: Path, keep: Callable[[dict[str, Any]], bool]
) -> tuple[list[dict[str, Any]], int]:
    """Rewrite samples.jsonl with only the records ``keep`` accepts; return (kept, dropped).

    Used once when a run resumes (the samples of the step it was cut off in are measured
    again). Written to a temporary file and renamed, so a crash leaves the old journal.
    """
    path = Path(directory) / SAMPLES_FILE
    read = read_samples(directory)
    kept = [record for record in read.records if keep(record)]
    partial = path.with_suffix(path.suffix + ".partial")
    with open(partial, "w") as handle:
        for record in kept:
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    os.replace(partial, path)
    return kept, len(read.records) - len(kept)


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Expand paths into run directories: a run dir itself, or any tree containing them."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / RUN_FILE).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p.parent for p in path.rglob(RUN_FILE)))
        else:
            raise ResultsError(f"{path}: no such run directory")
    return list(dict.fromkeys(found))


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Summaries of every run under ``root`` (newest first), unreadable ones flagged.

    A run still marked ``running`` whose process is gone (killed, host rebooted) is
    listed as ``abandoned``: ``bench run --resume RUN_ID`` continues it.
    """
    from bench.ownership import effective_status

    summaries: list[dict[str, Any]] = []
    for directory in find_run_dirs([root]) if Path(root).exists() else []:
        try:
            run = read_run(directory)
        except ResultsError as exc:
            summaries.append({"path": str(directory), "error": str(exc)})
            continue
        summaries.append(
            {
                "path": str(directory),
                "run_id": run.get("run_id"),
                "host": (run.get("host") or {}).get("hostname"),
                "scenario": (run.get("scenario") or {}).get("name"),
                "status": effective_status(run),
                "started_at_utc": run.get("started_at_utc"),
                "samples": (run.get("counts") or {}).get("samples"),
                "failed": (run.get("counts") or {}).get("failed"),
            }
        )
    return sorted(summaries, key=lambda s: str(s.get("run_id", "")), reverse=True)
