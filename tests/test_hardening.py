"""Runs that survive the unexpected: instances removed from outside, interrupts, bad hosts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bench.backends import get_backend
from bench.errors import ScenarioError
from bench.metrics.procmem import MIB
from bench.results import read_samples
from bench.runner import RunOutcome, check_fits, run_scenario
from bench.scenario import expand_cases, parse_scenario

pytestmark = [pytest.mark.cgroups]


@pytest.mark.usefixtures("process_backend", "no_leftovers")
def test_density_counts_only_instances_alive_at_the_stop(tmp_path: Path) -> None:
    text = (
        "name: ramp\nbackends: [process]\nmetrics: [density]\n"
        "density: {max_count: 8, interval_s: 0.4, slo_min_instances: 100}\n"
    )
    outcome: list[RunOutcome] = []
    thread = threading.Thread(
        target=lambda: outcome.append(run_scenario(parse_scenario(text), text, "t", tmp_path))
    )
    thread.start()
    process = get_backend("process")
    victim = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and victim is None:
        present = process.leftovers()
        if len(present) >= 3:
            victim = sorted(present)[0]
        time.sleep(0.05)
    assert victim is not None, "the ramp never started instances"
    assert process.remove_leftovers([victim]) == [victim], "removed from outside the run"
    thread.join(timeout=60)
    assert outcome and outcome[0].status == "complete"
    records = read_samples(outcome[0].directory).records
    final = next(r for r in records if r["labels"].get("view") == "count_reached")
    vanished = [r for r in records if r["labels"].get("view") == "vanished"]
    assert [r["instance"] for r in vanished] == [victim]
    assert not vanished[0]["ok"] and "removed from outside" in vanished[0]["error"]
    assert final["value"] == final["labels"]["count_started"] - 1
    assert final["labels"]["vanished"] == 1


def test_a_scenario_that_cannot_fit_is_refused_with_the_arithmetic() -> None:
    scenario = parse_scenario(
        "name: big\nbackends: [process]\nmetrics: [memory]\n"
        "instance: {payload: {mode: alloc, alloc_mib: 1024}}\n"
        "memory: {instances: 30}\ndensity: {mem_floor_mib: 2048}\n"
    )
    backends = {"process": get_backend("process")}
    with pytest.raises(ScenarioError) as caught:
        check_fits(scenario, backends, expand_cases(scenario), available_bytes=8 * 1024 * MIB)
    message = str(caught.value)
    assert "cannot fit" in message and "30 x 1026 MiB" in message
    assert "MemAvailable 8192 MiB - floor 2048 MiB" in message
    check_fits(scenario, backends, expand_cases(scenario), available_bytes=40 * 1024 * MIB)
