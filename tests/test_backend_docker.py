"""The docker backend against the real engine: stages, labels, network none, cleanup."""

from __future__ import annotations

import pytest

from bench.backends.base import BENCH_LABEL, Backend
from bench.backends.docker import DockerBackend
from bench.errors import BackendUnavailable, InstanceTimeout
from bench.metrics.startup import STAGE_ORDER
from bench.scenario import InstanceSpec, Payload
from tests.support import startup_series

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


def test_startup_series_has_every_stage_in_order(docker_backend: Backend) -> None:
    samples, ctx = startup_series(
        docker_backend, "name: t\nbackends: [docker]\nsamples: 4\nwarmups: 1\n", "run-000002"
    )
    assert not ctx.registry.names()
    for sample in samples:
        assert sample.ok, sample.error
        assert {
            "create",
            "created",
            "attached",
            "started",
            "ready",
            "exited",
            "removed",
            "gone",
        } == (set(sample.t_ns) - {"create_abs"})
        stamps = [sample.t_ns[name] for name in STAGE_ORDER if name in sample.t_ns]
        assert stamps == sorted(stamps)
        for stage in (
            "create_s",
            "attach_s",
            "start_s",
            "to_ready_s",
            "to_exit_s",
            "remove_s",
            "teardown_s",
        ):
            assert sample.stages[stage] > 0, stage
        assert sample.labels["image"].startswith("sha256:")
        assert sample.labels["exit_code"] == 0
        assert sample.value is not None and sample.value < 10


def test_container_is_labelled_named_and_has_no_network(docker_backend: Backend) -> None:
    spec = InstanceSpec(memory_mib=64, cpus=0.5, payload=Payload(mode="idle"))
    instance = docker_backend.start(spec, "bench-test-inspect", "test-run-000002")
    try:
        docker_backend.wait_ready(instance, 30)
        inspect = docker_backend.client.api.inspect_container(instance.handle["id"])  # type: ignore[attr-defined]
        assert inspect["Name"] == "/bench-test-inspect"
        assert inspect["Config"]["Labels"][BENCH_LABEL] == "true"
        assert inspect["Config"]["Labels"]["io.bench.run_id"] == "test-run-000002"
        assert inspect["HostConfig"]["NetworkMode"] == "none"
        assert inspect["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert inspect["HostConfig"]["NanoCpus"] == 500_000_000
        assert inspect["State"]["Running"] is True
        assert "bench-test-inspect" in docker_backend.leftovers()
    finally:
        docker_backend.stop(instance)
    assert "bench-test-inspect" not in docker_backend.leftovers()


def test_bridge_network_when_asked(docker_backend: Backend) -> None:
    spec = InstanceSpec(network="bridge")
    instance = docker_backend.start(spec, "bench-test-bridge", "test-run-000002")
    try:
        docker_backend.wait_ready(instance, 30)
        inspect = docker_backend.client.api.inspect_container(instance.handle["id"])  # type: ignore[attr-defined]
        assert inspect["HostConfig"]["NetworkMode"] == "bridge"
    finally:
        docker_backend.stop(instance)


def test_exit_timeout_is_an_error_and_container_is_removed(docker_backend: Backend) -> None:
    instance = docker_backend.start(
        InstanceSpec(payload=Payload(mode="idle")), "bench-test-hang", "r"
    )
    try:
        docker_backend.wait_ready(instance, 30)
        with pytest.raises(InstanceTimeout, match="did not exit"):
            docker_backend.wait_exit(instance, 1)
    finally:
        docker_backend.stop(instance)
    assert "bench-test-hang" not in docker_backend.leftovers()


def test_leftovers_are_found_by_label_and_removed_by_name(docker_backend: Backend) -> None:
    # another bench run may share this host (the fleet test's, a user's): a test never
    # sweeps everything, it removes what it made, found the way bench clean finds it
    instance = docker_backend.start(
        InstanceSpec(payload=Payload(mode="idle")), "bench-test-orphan", "r"
    )
    docker_backend.wait_ready(instance, 30)
    assert "bench-test-orphan" in docker_backend.leftovers()
    assert docker_backend.remove_leftovers(["bench-test-orphan"]) == ["bench-test-orphan"]
    assert "bench-test-orphan" not in docker_backend.leftovers()
    docker_backend.stop(instance)  # closes the attach socket; the container is already gone


def test_unreachable_engine_says_why_and_how_to_fix() -> None:
    backend = DockerBackend(base_url="unix:///nonexistent/docker.sock")
    with pytest.raises(BackendUnavailable) as caught:
        backend.check_available()
    message = str(caught.value)
    assert message.startswith(
        "backend docker unavailable: no engine socket at /nonexistent/docker.sock"
    )
    assert "ansible/up.sh" in message
