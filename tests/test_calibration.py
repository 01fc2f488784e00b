"""Calibration files, host noise records and the data-driven backend order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.analysis.calibration import (
    CALIBRATION_SCHEMA_VERSION,
    Calibration,
    CalibrationError,
    calibrate_dataset,
    make_calibration,
    read_calibration,
    two_levels,
    write_calibration,
)
from bench.analysis.dataset import load_dataset
from bench.analysis.noise import busy_block_warnings, noise_table
from bench.analysis.order import PALETTE, BackendOrder
from bench.analysis.summary import summarize
from tests.synthetic_runs import blocks, write_run


def _aa(
    tmp_path: Path, *, sha: str = "a" * 64, prefix: str = "aa", host: str = "lab-01"
) -> list[Path]:
    rng = np.random.default_rng(len(prefix) + ord(sha[0]))
    return [
        write_run(
            tmp_path,
            f"{prefix}{i}",
            {"docker": blocks(rng, 3, block_sd=0.04), "process": blocks(rng, 3, centre=0.008)},
            scenario_sha256=sha,
            hostname=host,
        )
        for i in range(2)
    ]


def test_two_levels_of_known_medians() -> None:
    # one run: the block level only
    one = two_levels([1.0, 1.1, 0.9, 1.0], ["r"] * 4)
    assert one.df == 3 and one.run_sigma_log is None and one.run_df == 0
    assert one.sigma_abs == pytest.approx(float(np.std([1.0, 1.1, 0.9, 1.0], ddof=1)))
    assert one.sigma_log == pytest.approx(float(np.std(np.log([1.0, 1.1, 0.9, 1.0]), ddof=1)))
    assert two_levels([-1.0, 1.0], ["r", "r"]).sigma_log is None, "no log noise for values <= 0"
    with pytest.raises(CalibrationError):
        two_levels([1.0], ["r"])
    # two runs whose blocks agree inside each run and not across: the run level holds it
    runs = two_levels([1.0, 1.01, 0.99, 1.2, 1.21, 1.19], ["a", "a", "a", "b", "b", "b"])
    assert runs.sigma_abs == pytest.approx(0.01)
    assert runs.run_sigma_abs is not None and runs.run_sigma_abs > 0.13
    # hand-computed ANOVA: MSB = 3 x (0.1^2 + 0.1^2) = 0.06, MSW = 1e-4, n0 = 3
    assert runs.run_sigma_abs == pytest.approx(((0.06 - 1e-4) / 3) ** 0.5)


def test_the_run_level_is_what_one_run_a_side_needs() -> None:
    # runs of two blocks each, one level each: the variance of a run mean
    from bench.analysis.levels import estimate

    rng = np.random.default_rng(11)
    values: list[float] = []
    labels: list[str] = []
    for run in range(200):
        offset = rng.normal(0, 0.05)
        for _ in range(2):
            values.append(offset + rng.normal(0, 0.02))
            labels.append(str(run))
    components = estimate(values, labels)
    assert components.run_var == pytest.approx(0.05**2, rel=0.25)
    assert components.block_var == pytest.approx(0.02**2, rel=0.25)
    assert components.centre_variance(1, 2) == pytest.approx(0.05**2 + 0.02**2 / 2, rel=0.25)


def test_calibration_measures_every_quantity_over_all_blocks(tmp_path: Path) -> None:
    entries = {e.backend: e for e in calibrate_dataset(load_dataset(_aa(tmp_path)))}
    docker = entries["docker"]
    assert (docker.blocks, docker.df, docker.runs) == (6, 4, ["aa0", "aa1"])
    assert docker.block_runs == ["aa0"] * 3 + ["aa1"] * 3
    assert docker.mechanism == "container" and docker.unit == "s"
    assert docker.noise_fraction is not None and 0.01 < docker.noise_fraction < 0.12
    assert docker.run_sigma_log is not None and docker.run_df >= 1
    noise = docker.noise()
    assert noise.df == 4 and noise.runs == 2 and "2 runs x 6 blocks of synthetic" in noise.source


def test_calibration_refuses_mixed_scenarios_and_too_few_blocks(tmp_path: Path) -> None:
    mixed = [*_aa(tmp_path), *_aa(tmp_path, sha="b" * 64, prefix="bb")]
    with pytest.raises(CalibrationError, match="repeats one scenario"):
        calibrate_dataset(load_dataset(mixed))
    rng = np.random.default_rng(3)
    lone = write_run(tmp_path, "lone", {"docker": blocks(rng, 2)})
    with pytest.raises(CalibrationError, match="at least 3 blocks"):
        calibrate_dataset(load_dataset(lone))


def test_file_merges_versions_and_lookups(tmp_path: Path) -> None:
    path = tmp_path / "lab-01" / "calibration.json"
    first = make_calibration(load_dataset(_aa(tmp_path)))
    write_calibration(path, first)
    other = make_calibration(
        load_dataset(_aa(tmp_path, sha="b" * 64, prefix="bb")), existing=read_calibration(path)
    )
    assert other["schema_version"] == CALIBRATION_SCHEMA_VERSION
    assert len(other["entries"]) == 4, "another scenario's entries are kept"
    again = make_calibration(load_dataset(_aa(tmp_path, prefix="cc")), existing=other)
    assert len(again["entries"]) == 4, "the same scenario's entries are replaced"
    calibration = Calibration.from_document(again, path)
    key = ("startup", "docker", "c", "", "value")
    assert calibration.lookup(key, scenario_sha256="b" * 64).scenario_sha256 == "b" * 64  # type: ignore[union-attr]
    assert calibration.lookup(key, accel="kvm") is None, "noise under another accelerator"
    assert calibration.lookup(("startup", "gvisor", "c", "", "value")) is None
    elsewhere = make_calibration(
        load_dataset(_aa(tmp_path, prefix="dd", host="lab-02")), existing=again
    )
    assert elsewhere["host"] == "lab-02" and len(elsewhere["entries"]) == 2
    path.write_text(json.dumps({**first, "schema_version": CALIBRATION_SCHEMA_VERSION + 1}))
    with pytest.raises(CalibrationError, match="newer than this bench reads"):
        read_calibration(path)
    path.write_text(json.dumps({"kind": "bench-baseline", "schema_version": 1}))
    with pytest.raises(CalibrationError, match="not a bench calibration"):
        read_calibration(path)


def test_a_calibration_of_another_host_does_not_describe_its_runs(tmp_path: Path) -> None:
    calibration = Calibration.from_document(make_calibration(load_dataset(_aa(tmp_path))))
    here = load_dataset(_aa(tmp_path, prefix="ee"))
    assert calibration.mismatch(here.runs.values()) == ""
    there = load_dataset(_aa(tmp_path, prefix="ff", host="lab-09"))
    assert "is from host 'lab-09'" in calibration.mismatch(there.runs.values())


def test_noise_records_are_tabled_per_block_and_kept_out_of_summaries(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    run = write_run(
        tmp_path,
        "noisy",
        {"docker": blocks(rng, 3)},
        noise={"foreign_cpu_cores": [0.02, 1.6, 0.9], "steal_fraction": [0.0, 0.0, 0.12]},
    )
    dataset = load_dataset(run)
    table = noise_table(dataset.samples)
    assert list(table.index) == [("noisy", 0), ("noisy", 1), ("noisy", 2)]
    assert table.loc[("noisy", 1), "foreign_cpu_cores"] == pytest.approx(1.6)
    warnings = busy_block_warnings(table, limit=1)
    assert warnings[0].startswith("run noisy block 1: the host was busy with other work")
    assert "CPU of other processes 1.60 cores" in warnings[0]
    assert warnings[1] == "1 more busy block(s)"
    assert {row.metric for row in summarize(dataset.samples)} == {"startup"}


def test_backend_order_follows_the_mechanism_then_the_name() -> None:
    frame = pd.DataFrame(
        {
            "backend": ["qemu-microvm", "podman", "runsc", "process", "docker", "mystery"],
            "label.mechanism": ["vm", "container", "sandbox", "native", "container", None],
        }
    )
    order = BackendOrder.from_frame(frame)
    assert order.backends == ["process", "docker", "podman", "runsc", "qemu-microvm", "mystery"]
    colours = order.colours()
    assert colours["process"] == PALETTE[0] and colours["mystery"] == PALETTE[5]
    assert order.mechanism("mystery") == ""


def make_calibration_entries(tmp_path: Path) -> list[Any]:
    return calibrate_dataset(load_dataset(sorted(p.parent for p in tmp_path.glob("*/*/run.json"))))


def test_a_schema_1_calibration_is_migrated_to_two_levels(tmp_path: Path) -> None:
    document = make_calibration(load_dataset(_aa(tmp_path)))
    old_fields = ("run_sigma_log", "run_sigma_abs", "run_noise_fraction", "run_df", "block_runs")
    for entry in document["entries"]:
        for name in old_fields:
            entry.pop(name)
        # schema 1 kept one SD over all six blocks
        medians = np.asarray(entry["block_medians"])
        entry["sigma_abs"] = float(np.std(medians, ddof=1))
        entry["df"] = medians.size - 1
    document["schema_version"] = 1
    path = tmp_path / "old.json"
    path.write_text(json.dumps(document))
    migrated = Calibration.read(path)
    docker = next(e for e in migrated.entries if e.backend == "docker")
    fresh = next(e for e in make_calibration_entries(tmp_path) if e.backend == "docker")
    assert docker.df == fresh.df == 4 and docker.block_runs == fresh.block_runs
    assert docker.run_sigma_abs == pytest.approx(fresh.run_sigma_abs)
