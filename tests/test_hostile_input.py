"""Hostile and malformed input: one clear error each, exit 2, nothing written, nothing run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.errors import ResultsError, ScenarioError
from bench.results import MAX_SAMPLE_LINE_BYTES, read_run, read_samples
from bench.scenario import load_scenario
from tests.conftest import DATA, REPO, skip_or_fail

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


def _fifo(directory: Path) -> Path:
    os.mkfifo(directory / "fifo.yaml")
    return directory / "fifo.yaml"


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda tmp: Path("/dev/zero"), "a character device"),
        (_fifo, "a FIFO"),
        (lambda tmp: tmp, "a directory"),
    ],
    ids=["dev-zero", "fifo", "directory"],
)
def test_a_scenario_that_is_not_a_regular_file_is_refused_unread(
    tmp_path: Path, make: Any, kind: str
) -> None:
    # /dev/zero used to be read until the kernel killed bench; a FIFO hung it for good
    path = make(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    result = _bench("run", str(path), "--results", str(work / "results"), cwd=work)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: {path}: cannot read scenario: {kind}, not a regular file"
    ), result.stderr
    assert list(work.iterdir()) == [], "nothing written"


def test_results_files_that_are_not_regular_files_are_refused(tmp_path: Path) -> None:
    fifo_samples = _run_dir(tmp_path / "fifo", b"")
    (fifo_samples / "samples.jsonl").unlink()
    os.mkfifo(fifo_samples / "samples.jsonl")
    with pytest.raises(ResultsError, match=r"samples\.jsonl: cannot read samples: a FIFO"):
        read_samples(fifo_samples)
    fifo_run = _run_dir(tmp_path / "fifo-run", _good_line())
    (fifo_run / "run.json").unlink()
    os.mkfifo(fifo_run / "run.json")
    with pytest.raises(ResultsError, match=r"run\.json: cannot read run file: a FIFO"):
        read_run(fifo_run)
    device_run = _run_dir(tmp_path / "device-run", _good_line())
    (device_run / "run.json").unlink()
    (device_run / "run.json").symlink_to("/dev/zero")
    with pytest.raises(ResultsError, match="a character device, not a regular file"):
        read_run(device_run)


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "bench-test-small", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _fill(directory: Path) -> None:
    """Write into ``directory`` until its filesystem is full, to the last byte."""
    with open(directory / "filler", "wb", buffering=0) as handle:
        for chunk in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * chunk)


@pytest.mark.cgroups
@pytest.mark.usefixtures("process_backend", "no_leftovers")
def test_a_disk_that_fills_up_mid_run_stops_it_cleanly(small_filesystem: Path) -> None:
    from bench.backends import get_backend
    from bench.errors import ResultsStorageError
    from bench.ownership import instance_run_suffix, run_suffix
    from bench.runner import run_scenario
    from bench.scenario import parse_scenario

    text = "name: full\nbackends: [process]\nmetrics: [startup]\nsamples: 5\nwarmups: 0\n"
    results = small_filesystem / "results"

    def on_event(event: Any) -> None:
        if event.kind == "planned":  # the run exists: now the disk fills up
            _fill(small_filesystem)

    with pytest.raises(ResultsStorageError, match="No space left on device") as caught:
        run_scenario(parse_scenario(text), text, "full.yaml", results, on_event)
    assert caught.value.exit_code == 4
    (directory,) = results.glob("*/*")
    run = read_run(directory)
    assert run["status"] == "failed"
    assert "No space left on device" in run["error"]
    assert sorted(p.name for p in directory.iterdir()) == ["run.json", "samples.jsonl"], (
        "no .partial file, and the reserve was given back"
    )
    assert read_samples(directory).records == []
    left = [
        n
        for n in get_backend("process").leftovers()
        if instance_run_suffix(n) == run_suffix(run["run_id"])
    ]
    assert left == []


@pytest.mark.cgroups
def test_a_disk_too_full_for_the_last_record_refuses_the_run_before_it_starts(
    small_filesystem: Path,
) -> None:
    (small_filesystem / "filler").write_bytes(b"\0" * (3 << 20))  # leaves under 1 MiB free
    scenario = small_filesystem.parent / "s.yaml"
    scenario.write_text("name: nospace\nbackends: [process]\nsamples: 2\nwarmups: 0\n")
    result = _bench(
        "run",
        str(scenario),
        "--results",
        str(small_filesystem / "results"),
        "--no-report",
        cwd=small_filesystem.parent,
    )
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "cannot reserve" in errors[0], result.stderr
    assert not list((small_filesystem / "results").glob("*/*")), "no half-made run left"
