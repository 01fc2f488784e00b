"""Interrupts: an engine call in flight finishes first, and no instance survives a stop.

The pure part pins the rules of ``bench.interrupts`` (a signal inside ``deferred()``
waits for the block; once the run stops, further signals are dropped). The contract
part shows a backend's create call is never cut in half. The real part interrupts real
runs at a sweep of moments on docker, podman and a VM, in this process (the signal is
sent to the main thread, as a terminal's Ctrl-C is), and counts what each left behind
by label and name at the moment the run returned: there must be nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from bench import interrupts
from bench.backends import get_backend
from bench.backends.base import Backend, Capabilities, Instance, Mechanism, now_ns
from bench.errors import BenchError
from bench.ownership import instance_run_suffix, run_suffix
from bench.results import read_run
from bench.runner import RunInterrupted, run_scenario
from bench.scenario import InstanceSpec, Payload, parse_scenario
from tests.conftest import skip_or_fail
from tests.engine_proxy import EngineProxy


@pytest.fixture
def quiet_signals() -> Iterator[list[int]]:
    """SIGINT/SIGTERM recorded instead of raised outside the code under test.

    A signal the sweep sends after the run already returned lands here, harmlessly.
    """
    seen: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    previous = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    yield seen
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _to_main_thread(signum: int) -> None:
    signal.pthread_kill(threading.main_thread().ident or 0, signum)


# --- the rules -----------------------------------------------------------------------------


@pytest.mark.usefixtures("quiet_signals")
def test_a_signal_inside_deferred_waits_for_the_block_then_raises() -> None:
    finished = []
    with (
        pytest.raises(KeyboardInterrupt, match="held until the engine call returned"),
        interrupts.handling(),
        interrupts.deferred(),
    ):
        signal.raise_signal(signal.SIGINT)
        finished.append("the call went on to its end")
    assert finished == ["the call went on to its end"]


@pytest.mark.usefixtures("quiet_signals")
def test_outside_deferred_a_signal_raises_at_once_and_a_second_is_dropped() -> None:
    reached = []
    with interrupts.handling():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
            reached.append("after the signal")
        # the run is stopping: a second Ctrl-C must not cut its cleanup short
        signal.raise_signal(signal.SIGINT)
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
        reached.append("cleanup ran to its end")
    assert reached == ["cleanup ran to its end"]


def test_deferred_changes_nothing_without_handling(quiet_signals: list[int]) -> None:
    with interrupts.deferred():
        signal.raise_signal(signal.SIGINT)
    assert quiet_signals == [signal.SIGINT], "the caller's own handler saw it, unchanged"


class _SlowCreate(Backend):
    """A backend whose create call is interrupted halfway: the engine answers after it."""

    description = "A create call the test interrupts in the middle (never registered)."
    capabilities = Capabilities(mechanism=Mechanism.CONTAINER, limits={}, roles=())

    def check_available(self) -> None:
        return None

    def prepare(self, specs: Sequence[InstanceSpec]) -> dict[str, str]:
        return {}

    def versions(self) -> dict[str, Any]:
        return {}

    def _create(self, instance: Instance) -> None:
        signal.raise_signal(signal.SIGINT)  # the signal lands while the "engine" works
        instance.handle = {"id": "the engine's answer"}

    def _start(self, instance: Instance) -> None:
        instance.handle["started"] = True

    def _wait_ready(self, instance: Instance, deadline: float) -> int:
        return now_ns()

    def _wait_exit(self, instance: Instance, deadline: float) -> int:
        return 0

    def _remove(self, instance: Instance) -> None:
        instance.handle = None

    def main_pid(self, instance: Instance) -> int | None:
        return None

    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        return {}

    def sweep(self) -> list[str]:
        return []

    def leftovers(self) -> list[str]:
        return []


@pytest.mark.usefixtures("quiet_signals")
def test_an_interrupt_during_create_lets_the_call_return_its_handle_first() -> None:
    backend = _SlowCreate()
    instance = Instance("slow", "bench-test-0", InstanceSpec(), "run")
    with pytest.raises(KeyboardInterrupt), interrupts.handling():
        backend.start(instance.spec, instance.name, "run", instance)
    # the interrupt was raised only once the create and start calls had returned, so
    # the handle to remove the instance by is there
    assert instance.handle == {"id": "the engine's answer", "started": True}
    assert {"create", "created", "started"} <= set(instance.t_ns)


# --- a run reaps by name what its registry missed -----------------------------------------------


@pytest.mark.cgroups
@pytest.mark.usefixtures("process_backend", "no_leftovers")
def test_an_instance_outside_the_registry_is_removed_by_name_at_the_end(tmp_path: Path) -> None:
    text = "name: reap\nbackends: [process]\nmetrics: [startup]\nsamples: 2\nwarmups: 0\n"
    stray: list[Instance] = []

    def on_event(event: Any) -> None:
        if event.kind == "planned" and not stray:
            # an instance of this run that bench's registry never saw (a bug elsewhere)
            run_id = event.message.removeprefix("run ")
            name = f"bench-{run_suffix(run_id)}-999"
            spec = InstanceSpec(payload=Payload(mode="idle"))
            stray.append(get_backend("process").start(spec, name, run_id))

    outcome = run_scenario(parse_scenario(text), text, "reap.yaml", tmp_path, on_event)
    assert outcome.status == "complete" and stray
    name = stray[0].name
    assert name not in get_backend("process").leftovers()
    proc = stray[0].handle["proc"]
    assert proc.wait(timeout=10) == -signal.SIGKILL, "its process was killed by the reaping"
    proc.stdout.close()
    notes = read_run(outcome.directory)["notes"]
    assert any("outside the cleanup registry" in n and name in n for n in notes), notes


# --- the race CI met: SIGINT while the engine's create call is in flight -------------------------


@pytest.mark.docker
@pytest.mark.cgroups
@pytest.mark.usefixtures("docker_backend", "no_leftovers")
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_dockers_create_is_in_flight_leaves_no_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_signals: list[int], how: int
) -> None:
    """A create request held back on its way to the engine while the signal lands.

    This is how a container outlived a SIGINT in CI: the interrupt was raised while the
    create call waited for the engine, the removal by name found nothing yet ("no such
    container"), and then the engine created it. Here a proxy holds the create request
    back until the run had its chance to remove the instance (its DELETE went by) or
    1.5 s passed; only then does the engine create the container.
    """
    create_seen = threading.Event()
    delete_seen = threading.Event()

    def hold_the_create(data: bytes) -> None:
        if b"DELETE /" in data and b"/containers/" in data:
            delete_seen.set()
        if b"POST /" in data and b"/containers/create" in data and not create_seen.is_set():
            create_seen.set()
            if delete_seen.wait(1.5):  # the old code's removal by name
                time.sleep(0.3)  # ... has come back "no such container" by now

    created = threading.Event()

    def see_the_engine_create(data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 201 Created"):
            created.set()

    proxy = EngineProxy(
        tmp_path / "docker.sock", on_request=hold_the_create, on_response=see_the_engine_create
    )
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy.path}")
    text = "name: held\nbackends: [docker]\nmetrics: [startup]\nsamples: 2\nwarmups: 0\n"

    def interrupt_once_the_create_is_held() -> None:
        if create_seen.wait(60):
            _to_main_thread(how)

    sender = threading.Thread(target=interrupt_once_the_create_is_held)
    sender.start()
    try:
        with pytest.raises(RunInterrupted):
            run_scenario(parse_scenario(text), text, "held.yaml", tmp_path / "results")
        # the engine answered the held create: whatever it made exists by now
        assert created.wait(30), "the engine never created the container"
    finally:
        sender.join()
        proxy.close()
        monkeypatch.delenv("DOCKER_HOST")
    run = read_run(next((tmp_path / "results").glob("*/*")))
    assert run["status"] == "interrupted"
    docker = get_backend("docker")
    try:
        docker.check_available()
        left = [
            n for n in docker.leftovers() if instance_run_suffix(n) == run_suffix(run["run_id"])
        ]
    finally:
        docker.close()
    assert left == [], "the container the engine created after the signal was removed"


# --- a sweep of interrupts over real runs --------------------------------------------------------

SWEEPS = {
    # backend: (scenario lines, delays in seconds after the run was called)
    "docker": (
        "samples: 5\nwarmups: 0\nsettle_s: 0.02\nmetrics: [startup, memory, density]\n"
        "memory: {instances: 3, rounds: 1, settle_s: 0.3, drop_caches: false}\n"
        "density: {max_count: 8, interval_s: 0.05, slo_min_instances: 100}\n",
        (0.2, 0.5, 0.9, 1.4, 2.0, 2.8),
    ),
    "podman": (
        "samples: 4\nwarmups: 0\nsettle_s: 0.02\nmetrics: [startup, memory, density]\n"
        "memory: {instances: 2, rounds: 1, settle_s: 0.3, drop_caches: false}\n"
        "density: {max_count: 6, interval_s: 0.05, slo_min_instances: 100}\n",
        (0.3, 1.0, 1.8, 2.8),
    ),
    "qemu-microvm": (
        "samples: 2\nwarmups: 0\nsettle_s: 0.02\nmetrics: [startup, memory]\n"
        "timeout_s: 60\ninstance: {accel: tcg}\n"
        "memory: {instances: 2, rounds: 1, settle_s: 0.3, drop_caches: false}\n",
        (0.3, 1.5, 3.0, 4.5),
    ),
}


def _available(name: str) -> Backend:
    backend = get_backend(name)
    try:
        backend.check_available()
    except BenchError as exc:
        skip_or_fail(str(exc))
    return backend


def _left_by_run(backends: dict[str, Backend], suffix: str) -> dict[str, list[str]]:
    """What each backend has of the run's instances now, found by label and by name."""
    found = {}
    for name, backend in backends.items():
        mine = [n for n in backend.leftovers() if instance_run_suffix(n) == suffix]
        if mine:
            found[name] = mine
    return found


@pytest.mark.cgroups
@pytest.mark.parametrize(
    "backend_name",
    [
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("podman", marks=pytest.mark.podman),
        pytest.param("qemu-microvm", marks=pytest.mark.libvirt),
    ],
)
@pytest.mark.usefixtures("process_backend", "no_leftovers")
def test_a_sweep_of_interrupts_leaves_nothing_and_keeps_every_sample(
    tmp_path: Path, backend_name: str, quiet_signals: list[int]
) -> None:
    lines, delays_s = SWEEPS[backend_name]
    text = f"name: sweep\nbackends: [process, {backend_name}]\n{lines}"
    scenario = parse_scenario(text)
    backends = {"process": _available("process"), backend_name: _available(backend_name)}
    outcomes: list[str] = []
    try:
        for index, delay_s in enumerate(delays_s):
            how = (signal.SIGINT, signal.SIGTERM)[index % 2]
            results = tmp_path / f"r{index}"
            timer = threading.Timer(delay_s, _to_main_thread, (how,))
            timer.start()
            try:
                outcome = run_scenario(scenario, text, "sweep.yaml", results)
                status = outcome.status
            except RunInterrupted:
                status = "interrupted"
            finally:
                timer.join()  # the signal is sent before the next run starts
            directories = sorted(results.glob("*/*"))
            if not directories:
                outcomes.append(f"{delay_s} s: stopped before the run existed")
                continue
            run = read_run(directories[0])
            assert run["status"] == status, (delay_s, run["status"])
            lines_on_disk = (directories[0] / "samples.jsonl").read_text().splitlines()
            assert len([ln for ln in lines_on_disk if ln]) == (
                run["counts"]["samples"] + run["counts"]["noise"]
            ), f"samples lost at {delay_s} s"
            left = _left_by_run(backends, run_suffix(run["run_id"]))
            assert not left, f"{how.name} at {delay_s} s left {left}"
            outcomes.append(f"{delay_s} s {how.name}: {status}, {run['counts']['samples']} kept")
    finally:
        for backend in backends.values():
            backend.close()
    assert any("interrupted" in o for o in outcomes), outcomes


def test_a_kvm_probe_guest_belongs_to_its_live_process() -> None:
    """bench clean (and the leftover check) spare the guest another process is probing."""
    import os
    import subprocess

    from bench.ownership import owned_by_live_run

    assert owned_by_live_run(f"bench-kvmprobe-{os.getpid()}.microvm", set())
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not owned_by_live_run(f"bench-kvmprobe-{gone.pid}", set()), "a dead prober's is stray"
    assert owned_by_live_run("bench-a1b2c3-4", {"a1b2c3"})
    assert not owned_by_live_run("bench-a1b2c3-4", {"ffffff"})
    assert not owned_by_live_run("bench-test-hang", {"a1b2c3"})
