"""Calibration files, host noise records and the data-driven backend order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.analysis.calibration import (
    CALIBRATION_SCHEMA_VERSION,
    Calibration,
    CalibrationError,
    block_noise,
    calibrate_dataset,
    make_calibration,
    read_calibration,
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


def test_block_noise_of_known_medians() -> None:
    sigma_log, sigma_abs, df = block_noise([1.0, 1.1, 0.9, 1.0])
    assert df == 3
    assert sigma_abs == pytest.approx(float(np.std([1.0, 1.1, 0.9, 1.0], ddof=1)))
    assert sigma_log == pytest.approx(float(np.std(np.log([1.0, 1.1, 0.9, 1.0]), ddof=1)))
    assert block_noise([-1.0, 1.0])[0] is None, "no log noise for values <= 0"
    with pytest.raises(CalibrationError):
        block_noise([1.0])


def test_calibration_measures_every_quantity_over_all_blocks(tmp_path: Path) -> None:
    entries = {e.backend: e for e in calibrate_dataset(load_dataset(_aa(tmp_path)))}
    docker = entries["docker"]
    assert (docker.blocks, docker.df, docker.runs) == (6, 5, ["aa0", "aa1"])
    assert docker.mechanism == "container" and docker.unit == "s"
    assert docker.noise_fraction is not None and 0.01 < docker.noise_fraction < 0.12
    noise = docker.noise()
    assert noise.df == 5 and "6 blocks of synthetic" in noise.source


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
