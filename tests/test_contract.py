"""The backend and metric contract: a backend defined here runs through the real runner.

Adding a mechanism must need nothing but its own module: this test registers a tiny
backend of its own (a plain ``sleep`` process) and runs startup and memory through the
real runner, with no change anywhere else. It also checks the layering rules: metrics
import no engine SDK and never branch on a backend's name, and the run path imports no
analysis stack.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bench.backends import backend_names
from bench.backends.base import (
    Backend,
    Capabilities,
    Instance,
    LimitSupport,
    Mechanism,
    now_ns,
    unregister_backend,
)
from bench.errors import InstanceTimeout
from bench.results import read_run, read_samples
from bench.runner import run_scenario
from bench.scenario import InstanceSpec, parse_scenario
from tests.conftest import REPO

SLEEPERS: dict[str, subprocess.Popen[bytes]] = {}


class SleeperBase(Backend):
    """A plain ``sleep`` process: ready once it runs; ``ready`` payloads exit at once.

    It has no ``name``, so defining it registers nothing: the fixture registers a named
    subclass for one test and forgets it afterwards (other tests never see it).
    """

    description = "A plain sleep process (a backend defined by a test)."
    capabilities = Capabilities(
        mechanism=Mechanism.CONTAINER,
        limits={"memory": LimitSupport(None, "a test backend applies no limits")},
        roles=("sleep",),
    )

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "flavour": "coreutils sleep"}

    def check_available(self) -> None:
        return None

    def prepare(self, specs: Sequence[InstanceSpec]) -> dict[str, str]:
        return {"sleep": "/bin/sleep"}

    def versions(self) -> dict[str, Any]:
        return {"sleep": "coreutils"}

    def _create(self, instance: Instance) -> None:
        instance.handle = {"proc": None}

    def _start(self, instance: Instance) -> None:
        seconds = "0" if instance.spec.payload.mode == "ready" else "3600"
        proc = subprocess.Popen(["sleep", seconds], start_new_session=True)
        instance.handle["proc"] = proc
        SLEEPERS[instance.name] = proc

    def _wait_ready(self, instance: Instance, deadline: float) -> int:
        return now_ns()  # running is ready: sleep prints nothing

    def _wait_exit(self, instance: Instance, deadline: float) -> int:
        proc = instance.handle["proc"]
        try:
            return int(proc.wait(timeout=max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            raise InstanceTimeout(f"{instance.name}: sleep did not exit") from None

    def _remove(self, instance: Instance) -> None:
        proc = (instance.handle or {}).get("proc")
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        SLEEPERS.pop(instance.name, None)

    def main_pid(self, instance: Instance) -> int | None:
        proc = (instance.handle or {}).get("proc")
        return proc.pid if proc is not None and proc.poll() is None else None

    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        pid = self.main_pid(instance)
        return {"sleep": [pid] if pid else []}

    def sweep(self) -> list[str]:
        names = list(SLEEPERS)
        for proc in SLEEPERS.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        SLEEPERS.clear()
        return names

    def leftovers(self) -> list[str]:
        return [name for name, proc in SLEEPERS.items() if proc.poll() is None]


@pytest.fixture
def sleeper() -> Iterator[str]:
    assert "sleeper" not in backend_names()
    registered = type("SleeperBackend", (SleeperBase,), {"name": "sleeper"})
    assert "sleeper" in backend_names(), "a subclass with a name registers itself"
    yield "sleeper"
    registered().sweep()
    unregister_backend("sleeper")
    assert "sleeper" not in backend_names()


@pytest.mark.cgroups
@pytest.mark.usefixtures("process_backend", "no_leftovers")
def test_a_backend_defined_in_a_test_runs_startup_and_memory_through_the_runner(
    sleeper: str, tmp_path: Path
) -> None:
    text = (
        f"name: contract\nbackends: [process, {sleeper}]\nmetrics: [startup, memory]\n"
        "samples: 3\nwarmups: 1\nrepeats: 2\nrepeat_gap_s: 0\nsettle_s: 0\n"
        "memory: {instances: 2, rounds: 1, settle_s: 0.2, drop_caches: false}\n"
    )
    outcome = run_scenario(parse_scenario(text), text, "test", tmp_path)
    assert outcome.status == "complete"
    records = read_samples(outcome.directory).records
    mine = [r for r in records if r["backend"] == sleeper]
    startup = [r for r in mine if r["metric"] == "startup" and not r["warmup"]]
    assert len(startup) == 6 and all(r["ok"] for r in startup)
    assert {r["block"] for r in startup} == {0, 1}
    assert all(r["labels"]["mechanism"] == "container" for r in mine)
    assert all(r["labels"]["flavour"] == "coreutils sleep" for r in mine), "metadata merged"
    assert all(r["stages"]["to_ready_s"] > 0 for r in startup)
    # no engine behind either backend: nothing to wait out before a sample, and it says so
    assert all(r["labels"]["quiet_wait_s"] == 0 and r["labels"]["quiet"] for r in startup)
    pss = [r for r in mine if r["labels"].get("view") == "pss" and r["labels"]["role"] == "sleep"]
    assert len(pss) == 4 and all(r["value"] > 0 for r in pss)
    overheads = [r for r in mine if r["labels"].get("view") == "pss_overhead"]
    assert len(overheads) == 4, "overhead against the native baseline, by mechanism"
    run = read_run(outcome.directory)
    assert run["backends"][sleeper]["mechanism"] == "container"
    assert run["backends"][sleeper]["limits"]["memory"]["when"] is None
    assert not SLEEPERS, "every instance was removed"


def test_unknown_backend_lists_the_registered_ones() -> None:
    from bench.errors import ScenarioError

    with pytest.raises(ScenarioError) as caught:
        parse_scenario("name: t\nbackends: [nosuch]\n", "x.yaml")
    message = str(caught.value)
    assert "field backends[0]" in message
    for name in backend_names():
        assert name in message


def _imports_and_name_branches(path: Path) -> tuple[set[str], list[str]]:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    branches = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Compare):
            text = ast.unparse(node)
            names_a_backend = ".name" in text or "backend ==" in text or "backend !=" in text
            against_literal = any(
                isinstance(c, ast.Constant) and isinstance(c.value, str) for c in node.comparators
            )
            if names_a_backend and against_literal:
                branches.append(text)
    return imported, branches


def test_metrics_import_no_sdk_and_never_branch_on_a_backend_name() -> None:
    for path in sorted((REPO / "bench" / "metrics").glob("*.py")):
        imported, branches = _imports_and_name_branches(path)
        assert not imported & {"docker", "libvirt", "pandas", "scipy"}, (path, imported)
        assert not branches, (path, branches)


def test_the_run_path_imports_no_analysis_stack(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from bench.runner import run_scenario\n"
        "from bench.scenario import parse_scenario\n"
        "import bench.cli\n"
        "text = 'name: t\\nbackends: [process]\\nsamples: 1\\nwarmups: 0\\n'\n"
        f"run_scenario(parse_scenario(text), text, 't', __import__('pathlib').Path({str(tmp_path)!r}))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'scipy', 'plotly', 'numpy', 'pyarrow'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
