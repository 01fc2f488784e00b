"""Hostile and malformed input: one clear error each, exit 2, nothing written, nothing run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ResultsError, ScenarioError
from bench.results import MAX_SAMPLE_LINE_BYTES, read_samples
from bench.scenario import load_scenario
from tests.conftest import DATA, REPO

HOSTILE = sorted((DATA / "scenarios" / "hostile").glob("*.yaml"))


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_the_corpus_is_big_enough() -> None:
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_each_hostile_scenario_gives_one_clear_error(path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert "Traceback" not in message and len(message) < 2000


def test_a_huge_scenario_is_refused_unread(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: t\nbackends: [process]\ndescription: " + "y" * 3_000_000 + "\n")
    size = huge.stat().st_size
    with pytest.raises(ScenarioError, match=f"not a scenario: {size} bytes"):
        load_scenario(huge)


def test_the_cli_rejects_every_hostile_file_and_writes_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = _bench("validate", *map(str, HOSTILE), cwd=work)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(HOSTILE), result.stderr
    assert "Traceback" not in result.stderr
    for path in HOSTILE[:6]:
        run = _bench("run", str(path), "--results", str(work / "results"), cwd=work)
        assert run.returncode == 2, run.stderr
    assert list(work.iterdir()) == [], "nothing written for rejected input"


def _run_dir(tmp_path: Path, samples: bytes) -> Path:
    source = sorted((DATA / "runs" / "fixture").glob("*/run.json"))[0].parent
    directory = tmp_path / "h" / source.name
    directory.mkdir(parents=True)
    (directory / "run.json").write_text((source / "run.json").read_text())
    (directory / "samples.jsonl").write_bytes(samples)
    return directory


def _good_line() -> bytes:
    source = sorted((DATA / "runs" / "fixture").glob("*/samples.jsonl"))[0]
    return source.read_bytes().splitlines(keepends=True)[0]


def test_hostile_results_files_give_one_clear_error(tmp_path: Path) -> None:
    good = _good_line()
    torn = _run_dir(tmp_path / "torn", good + good[:40])
    assert len(read_samples(torn).records) == 1 and read_samples(torn).warnings
    garbage = _run_dir(tmp_path / "garbage", b"\x00\xff{not json\n" + good)
    with pytest.raises(ResultsError, match=r"samples.jsonl:1: not valid JSON"):
        read_samples(garbage)
    newer = json.loads(good)
    newer["schema_version"] = 99
    future = _run_dir(tmp_path / "newer", json.dumps(newer).encode() + b"\n")
    with pytest.raises(ResultsError, match="newer than this bench reads"):
        read_samples(future)
    # a line far past any sample's size (a 2 GB line on disk, sparse): refused by line number
    monster = _run_dir(tmp_path / "monster", good)
    with open(monster / "samples.jsonl", "ab") as handle:
        handle.truncate(2 * 1024**3)
    with pytest.raises(ResultsError, match=r"samples.jsonl:2: a line longer than"):
        read_samples(monster)
    assert MAX_SAMPLE_LINE_BYTES < 2 * 1024**3
