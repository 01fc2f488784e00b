"""Scale figures for the analysis layer (prints, never asserts).

1. ``bench report`` over a run of 1,000,000 samples: target <= 3 s from the CLI once the
   run is compacted (samples.parquet beside the journal, built by the first read: at the
   end of ``bench run`` its report does it), and HTML <= 10 MB. The first, cold read is
   printed too.
2. ``bench compare`` of two runs of 100,000 samples each: target <= 2 s.

The runs are made from a real run's sample lines (tests/data/runs/tcg: process, docker
and a TCG libvirt guest, every stage and label as recorded), repeated with jittered
values, so lines have their real size and shape. Generation is not timed. Each figure is
printed for the library call (load + analyse + write) and for the CLI as a user runs it
(which adds interpreter start and imports). The host's load average is printed too:
development machines are shared, and a busy host slows everything.

Usage: .venv/bin/python tests/perf/report_scale.py [samples_report] [samples_compare]
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.analysis.compare import compare_dataset  # noqa: E402
from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset  # noqa: E402
from bench.report import write_report  # noqa: E402

SOURCE_RUN = next((REPO / "tests" / "data" / "runs" / "tcg").rglob("run.json")).parent


def make_run(root: Path, run_id: str, samples: int, seed: int) -> Path:
    """A run directory of ``samples`` measured samples shaped like SOURCE_RUN's."""
    record = json.loads((SOURCE_RUN / "run.json").read_text())
    record["run_id"] = run_id
    record["counts"] = {"samples": samples, "ok": samples, "failed": 0, "warmup": 0}
    directory = root / "vm" / run_id
    directory.mkdir(parents=True)
    (directory / "run.json").write_text(json.dumps(record))
    templates = []
    for line in (SOURCE_RUN / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        if sample["warmup"]:
            continue
        sample["run_id"] = run_id
        templates.append(sample)
    rng = random.Random(seed)
    with open(directory / "samples.jsonl", "w") as handle:
        for seq in range(samples):
            sample = dict(templates[seq % len(templates)])
            factor = rng.lognormvariate(0, 0.1)
            sample["seq"] = seq
            sample["value"] = sample["value"] * factor
            sample["stages"] = {k: v * factor for k, v in sample["stages"].items()}
            handle.write(json.dumps(sample, separators=(",", ":")) + "\n")
    return directory


def timed_cli(*args: str) -> tuple[float, int]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True
    )
    return time.perf_counter() - started, result.returncode


def main() -> None:
    report_samples = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    compare_samples = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    print(f"host: {os.cpu_count()} cores, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        big = make_run(root / "big", "20261130T000000Z-scale-big000", report_samples, 1)
        size_mb = (big / "samples.jsonl").stat().st_size / 1e6
        print(
            f"generated {report_samples:,} samples ({size_mb:.0f} MB) in "
            f"{time.perf_counter() - started:.1f} s (not timed)"
        )

        seconds, code = timed_cli("report", str(big), "-o", str(root / "big-cold.html"))
        print(
            f"report, {report_samples:,} samples (CLI, cold: decodes the journal and writes "
            f"samples.parquet, {(big / 'samples.parquet').stat().st_size / 1e6:.1f} MB; "
            f"exit {code}): {seconds:.2f} s"
        )
        started = time.perf_counter()
        dataset = load_dataset(big, labels=ANALYSIS_LABELS)
        loaded = time.perf_counter() - started
        outcome = write_report(dataset, root / "big.html")
        total = loaded + outcome.seconds
        print(
            f"report, {report_samples:,} samples (library, warm): {total:.2f} s "
            f"(load {loaded:.2f} s, analyse+render+write {outcome.seconds:.2f} s), "
            f"HTML {outcome.size_bytes / 1e6:.2f} MB, {outcome.plots} plots"
        )
        del dataset
        seconds, code = timed_cli("report", str(big), "-o", str(root / "big-cli.html"))
        size = (root / "big-cli.html").stat().st_size / 1e6
        print(
            f"report, {report_samples:,} samples (CLI, warm, exit {code}): {seconds:.2f} s, "
            f"HTML {size:.2f} MB  [target <= 3 s, <= 10 MB]"
        )

        run_a = make_run(root / "cmp", "20261130T000001Z-scale-aaaaaa", compare_samples, 2)
        run_b = make_run(root / "cmp", "20261130T000002Z-scale-bbbbbb", compare_samples, 3)
        started = time.perf_counter()
        both = load_dataset([run_a, run_b], labels=ANALYSIS_LABELS)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        report = compare_dataset(both)
        compared = time.perf_counter() - started
        verdicts = sorted({row.verdict for row in report.rows})
        print(
            f"compare, 2 x {compare_samples:,} samples (library): {loaded + compared:.2f} s "
            f"(load {loaded:.2f} s, compare {compared:.2f} s; {len(report.rows)} rows: "
            f"{', '.join(verdicts)})  [target <= 2 s]"
        )
        seconds, code = timed_cli("compare", str(run_a), str(run_b), "--format", "json")
        print(f"compare, 2 x {compare_samples:,} samples (CLI, exit {code}): {seconds:.2f} s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
