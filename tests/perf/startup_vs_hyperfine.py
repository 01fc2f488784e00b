"""Startup figures for the closing note: bench's own measurement next to hyperfine's.

Run as root on a provisioned host:  .venv/bin/python tests/perf/startup_vs_hyperfine.py [N]

Prints, for the same probe image and command line:
- bench's docker and process startup (median/min/max of to_ready and of the whole
  lifecycle), from a real run of the startup metric;
- hyperfine's `docker run --rm --network none IMAGE ready` and `probe ready`;
- the ratios: bench talks to the Engine API, so its docker lifecycle should not be
  slower than the CLI's; bench's process spawn->exit should add <= 1 ms to hyperfine's;
- the wall time of `bench run scenarios/quick.yaml`.
Nothing here asserts: shared machines are noisy, so the numbers are printed, not gated.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.analysis.dataset import load_dataset  # noqa: E402
from bench.backends import get_backend  # noqa: E402


def load(directory: Path) -> pd.DataFrame:
    """One run as a frame (host-noise records left out)."""
    frame = load_dataset([directory]).samples
    return frame[frame["metric"] != "noise"]


from bench.runner import run_scenario  # noqa: E402
from bench.scenario import parse_scenario  # noqa: E402


def hyperfine(command: list[str], runs: int, warmup: int = 3) -> dict[str, float]:
    """Run hyperfine without a shell (-N) and return its median/min/max/mean in seconds."""
    with tempfile.NamedTemporaryFile(suffix=".json") as export:
        subprocess.run(
            [
                "hyperfine",
                "-N",
                "--style",
                "none",
                "--warmup",
                str(warmup),
                "--runs",
                str(runs),
                "--export-json",
                export.name,
                " ".join(command),
            ],
            check=True,
            capture_output=True,
        )
        result = json.loads(Path(export.name).read_text())["results"][0]
    return {k: result[k] for k in ("median", "min", "max", "mean")}


def describe(values: list[float]) -> dict[str, float]:
    """Median/min/max/mean of a list of seconds."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def ms(stats: dict[str, float]) -> str:
    """Format a stats dict in milliseconds."""
    return (
        f"median {stats['median'] * 1e3:7.2f} ms  min {stats['min'] * 1e3:7.2f}  "
        f"max {stats['max'] * 1e3:7.2f}"
    )


def main() -> None:
    """Measure and print the figures."""
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    if shutil.which("hyperfine") is None:
        sys.exit("hyperfine not found: run ansible/up.sh")
    scenario = parse_scenario(
        f"name: perf-startup\nbackends: [process, docker]\nsamples: {samples}\nwarmups: 3\nseed: 1\n"
    )
    # back to back, process only, no settle: the same conditions hyperfine measures under
    alone = parse_scenario(
        f"name: perf-process\nbackends: [process]\nsamples: {max(100, samples)}\nwarmups: 3\n"
        "settle_s: 0\nseed: 1\n"
    )
    with tempfile.TemporaryDirectory() as results:
        started = time.monotonic()
        outcome = run_scenario(scenario, "", "perf", Path(results))
        bench_wall_s = time.monotonic() - started
        frame = load(outcome.directory)
        alone_frame = load(run_scenario(alone, "", "perf", Path(results)).directory)
    frame = frame[~frame["warmup"] & frame["ok"]]
    docker = frame[frame["backend"] == "docker"]
    process = frame[frame["backend"] == "process"]
    docker_ready = describe(list(docker["stage.to_ready_s"]))
    docker_lifecycle = describe(list(docker["stage.to_exit_s"] + docker["stage.remove_s"]))
    process_ready = describe(list(process["stage.to_ready_s"]))
    # spawn -> exit: from the Popen call (created) to the exit stamp, what hyperfine times
    process_spawn_exit = describe(list(process["stage.to_exit_s"] - process["stage.create_s"]))
    alone_frame = alone_frame[~alone_frame["warmup"] & alone_frame["ok"]]
    alone_spawn_exit = describe(
        list(alone_frame["stage.to_exit_s"] - alone_frame["stage.create_s"])
    )
    alone_ready = describe(list(alone_frame["stage.to_ready_s"]))

    docker_backend = get_backend("docker")
    docker_backend.check_available()
    prepared = docker_backend.prepare([])
    process_backend = get_backend("process")
    process_backend.check_available()
    process_backend.prepare([])
    probe = str(process_backend.probe_path())  # type: ignore[attr-defined]
    docker_backend.close()
    hf_docker = hyperfine(
        ["docker", "run", "--rm", "--network", "none", prepared["image_tag"], "ready"], runs=samples
    )
    hf_process = hyperfine([probe, "ready"], runs=max(100, samples))

    quick_started = time.monotonic()
    with tempfile.TemporaryDirectory() as results:
        quick = subprocess.run(
            [sys.executable, "-m", "bench", "run", "scenarios/quick.yaml", "--results", results],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    quick_wall_s = time.monotonic() - quick_started

    print(
        f"bench startup metric, n={samples} per backend (warmups excluded), run wall {bench_wall_s:.1f} s"
    )
    print(f"  docker  to READY            {ms(docker_ready)}")
    print(f"  docker  create->removed     {ms(docker_lifecycle)}")
    print(f"  process to READY            {ms(process_ready)}")
    print(f"  process spawn->exit         {ms(process_spawn_exit)}")
    print(f"bench process alone, back to back (settle 0), n={len(alone_frame)}")
    print(f"  process to READY            {ms(alone_ready)}")
    print(f"  process spawn->exit         {ms(alone_spawn_exit)}")
    print("hyperfine (no shell)")
    print(f"  docker run --rm --network none IMAGE ready   {ms(hf_docker)}")
    print(f"  probe ready                                  {ms(hf_process)}")
    print("ratios (medians)")
    print(
        f"  docker: bench create->removed / hyperfine docker run = "
        f"{docker_lifecycle['median'] / hf_docker['median']:.3f}"
    )
    print(
        f"  docker: bench to READY / hyperfine docker run         = "
        f"{docker_ready['median'] / hf_docker['median']:.3f}"
    )
    print(
        f"  process: bench spawn->exit (alone) - hyperfine = "
        f"{(alone_spawn_exit['median'] - hf_process['median']) * 1e3:+.3f} ms (goal <= +1 ms)"
    )
    print(
        f"  process: bench spawn->exit (interleaved, settle) - hyperfine = "
        f"{(process_spawn_exit['median'] - hf_process['median']) * 1e3:+.3f} ms"
    )
    print(
        f"quick suite (bench run scenarios/quick.yaml): wall {quick_wall_s:.1f} s, exit {quick.returncode}"
    )


if __name__ == "__main__":
    main()
