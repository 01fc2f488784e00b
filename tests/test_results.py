"""The results store: versioned run.json, appended samples, torn lines, newer schemas refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.analysis.dataset import load_dataset
from bench.errors import ResultsError
from bench.results import ResultStore, list_runs, migrate_run, read_run, read_samples
from bench.samples import SAMPLE_SCHEMA_VERSION, Sample, upgrade_sample_record


def load(directory: Path) -> pd.DataFrame:
    return load_dataset([directory]).samples


def _sample(seq: int, backend: str, value: float, ok: bool = True, warmup: bool = False) -> Sample:
    return Sample(
        run_id="r1",
        seq=seq,
        metric="startup",
        backend=backend,
        case="startup",
        value=value if ok else None,
        unit="s",
        ok=ok,
        error=None if ok else "boom",
        warmup=warmup,
        stages={"to_ready_s": value},
        t_ns={"create": 0, "ready": int(value * 1e9)},
        labels={"image": "sha256:x"},
        params={"memory_mib": 64},
    )


def _store(tmp_path: Path, run_id: str = "r1") -> ResultStore:
    return ResultStore.create(
        tmp_path,
        "host/one",
        run_id,
        {
            "scenario": {"name": "s"},
            "scenario_sha256": "abc",
            "host": {"hostname": "h", "kernel": {"release": "6.1"}},
        },
    )


def test_store_writes_versioned_run_and_tidy_samples(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.directory == tmp_path / "host-one" / "r1"
    assert read_run(store.directory)["status"] == "running"
    store.append(_sample(0, "docker", 0.2, warmup=True))
    store.append(_sample(1, "docker", 0.19))
    store.append(_sample(2, "process", 0.001, ok=False))
    # appended and flushed before finish: an interrupted run keeps what it measured
    lines = (store.directory / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[1])["value"] == 0.19
    store.finish("complete")
    run = read_run(store.directory)
    assert run["schema_version"] == 1 and run["status"] == "complete"
    assert run["counts"] == {"samples": 3, "ok": 2, "failed": 1, "warmup": 1, "noise": 0}
    frame = load(store.directory)
    assert len(frame) == 3
    assert set(frame["backend"]) == {"docker", "process"}
    assert frame.loc[1, "stage.to_ready_s"] == 0.19
    assert frame.loc[1, "label.image"] == "sha256:x"
    assert frame.loc[1, "param.memory_mib"] == 64
    assert frame.loc[1, "kernel"] == "6.1" and frame.loc[1, "scenario_sha256"] == "abc"


def test_torn_last_line_is_skipped_with_warning(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.append(_sample(0, "docker", 0.2))
    store.finish("interrupted")
    with open(store.directory / "samples.jsonl", "a") as handle:
        handle.write('{"schema_version": 1, "run_id": "r1", "se')
    dataset = load_dataset([store.directory])
    assert len(dataset.samples) == 1
    assert any("torn last line" in w for w in dataset.warnings)


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.finish("complete")
    (store.directory / "samples.jsonl").write_text(
        '{"a": \n' + _sample(0, "docker", 0.2).to_json() + "\n"
    )
    with pytest.raises(ResultsError, match=r"samples.jsonl:1: not valid JSON"):
        load(store.directory)


def test_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.finish("complete")
    run = json.loads((store.directory / "run.json").read_text())
    run["schema_version"] = 99
    (store.directory / "run.json").write_text(json.dumps(run))
    with pytest.raises(ResultsError, match="schema_version 99 is newer than this bench reads"):
        read_run(store.directory)
    with pytest.raises(ResultsError, match="no integer schema_version"):
        migrate_run({}, "x")


def test_list_runs_newest_first_and_flags_bad_ones(tmp_path: Path) -> None:
    for run_id in ("20260101T000000Z-a-000001", "20260102T000000Z-a-000002"):
        _store(tmp_path, run_id).finish("complete")
    broken = tmp_path / "h" / "broken"
    broken.mkdir(parents=True)
    (broken / "run.json").write_text("{")
    runs = list_runs(tmp_path)
    ids = [r.get("run_id") for r in runs if "error" not in r]
    assert ids == ["20260102T000000Z-a-000002", "20260101T000000Z-a-000001"]
    assert any("not valid JSON" in r.get("error", "") for r in runs)


def test_missing_run_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such run directory"):
        load(tmp_path / "nope")


def test_version_1_sample_lines_are_migrated_to_blocks_and_mechanisms(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.finish("complete")
    old = json.loads(_sample(0, "libvirt", 1.5).to_json())
    old["schema_version"] = 1
    del old["block"]
    unknown = dict(old, backend="someone-elses")
    (store.directory / "samples.jsonl").write_text(
        json.dumps(old) + "\n" + json.dumps(unknown) + "\n"
    )
    records = read_samples(store.directory).records
    assert [r["schema_version"] for r in records] == [SAMPLE_SCHEMA_VERSION] * 2
    assert [r["block"] for r in records] == [0, 0]
    assert records[0]["labels"]["mechanism"] == "vm"
    assert "mechanism" not in records[1]["labels"], "never guessed for a name it did not know"
    frame = load(store.directory)
    assert list(frame["block"]) == [0, 0]
    # a current line passes through untouched
    current = json.loads(_sample(1, "docker", 0.1).to_json())
    assert upgrade_sample_record(dict(current)) == current
