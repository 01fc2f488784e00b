"""Test-only helpers: block-structured samples with a known answer, as arrays or run dirs.

``blocks()`` draws K blocks of n lognormal values whose block medians wander by
``block_sd`` (the run-to-run noise a real host adds) around ``centre``.
``write_run()`` writes them as a real run directory (run.json from a captured fixture
run, a version-2 samples.jsonl), so the loader, the CLI and the report see what a
``bench run --repeat K`` would have left.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import DATA

FIXTURE_RUN = sorted(p.parent for p in (DATA / "runs" / "fixture").rglob("run.json"))[0]
MECHANISMS = {"process": "native", "docker": "container", "gvisor": "sandbox", "libvirt": "vm"}


def blocks(
    rng: np.random.Generator,
    k: int,
    *,
    centre: float = 0.1,
    shift: float = 1.0,
    block_sd: float = 0.015,
    within_sd: float = 0.08,
    n: int = 10,
) -> list[np.ndarray]:
    """K blocks of n values: block medians lognormal around centre x shift."""
    result = []
    for _ in range(k):
        block_centre = centre * shift * float(np.exp(rng.normal(0.0, block_sd)))
        result.append(block_centre * np.exp(rng.normal(0.0, within_sd, n)))
    return result


def write_run(
    root: Path,
    run_id: str,
    values: Mapping[str, Sequence[np.ndarray]],
    *,
    metric: str = "startup",
    unit: str = "s",
    hostname: str = "lab-01",
    scenario_sha256: str = "a" * 64,
    noise: Mapping[str, Sequence[float]] | None = None,
    accel: str = "n/a",
) -> Path:
    """A run directory under ``root/hostname/run_id``: per backend, its blocks of values.

    ``noise`` gives, per noise quantity (``foreign_cpu_cores``...), one value per block.
    """
    directory = root / hostname / run_id
    directory.mkdir(parents=True)
    record: dict[str, Any] = json.loads((FIXTURE_RUN / "run.json").read_text())
    record["run_id"] = run_id
    record["scenario_sha256"] = scenario_sha256
    record["scenario"]["name"] = "synthetic"
    record["host"]["hostname"] = hostname
    record["status"] = "complete"
    (directory / "run.json").write_text(json.dumps(record))
    lines = []
    seq = 0
    for backend, per_block in values.items():
        for block, data in enumerate(per_block):
            for value in data:
                lines.append(
                    {
                        "run_id": run_id,
                        "seq": seq,
                        "metric": metric,
                        "backend": backend,
                        "case": "c",
                        "value": float(value),
                        "unit": unit,
                        "ok": True,
                        "warmup": False,
                        "block": block,
                        "labels": {
                            "mechanism": MECHANISMS.get(backend, "container"),
                            "accel": accel,
                        },
                        "schema_version": 2,
                    }
                )
                seq += 1
    for view, per_block_values in (noise or {}).items():
        for block, value in enumerate(per_block_values):
            lines.append(
                {
                    "run_id": run_id,
                    "seq": seq,
                    "metric": "noise",
                    "backend": "host",
                    "case": "*",
                    "value": float(value),
                    "unit": "cores" if view.endswith("_cores") else "fraction",
                    "ok": True,
                    "warmup": False,
                    "block": block,
                    "labels": {"view": view, "window_s": 30.0},
                    "schema_version": 2,
                }
            )
            seq += 1
    (directory / "samples.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return directory
