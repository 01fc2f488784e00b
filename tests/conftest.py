"""Shared fixtures: one provisioned engine per session, a leftover check after each test, lanes.

Tests that need the real Docker engine or writable cgroups skip with the reason when
they are absent, except under CI=true, where an absent engine is a failure: a broken
install step must never hide behind skips.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.backends.base import Backend
from bench.errors import BenchError

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

# The suite runs in two lanes (pytest-xdist, ``-n 2`` in pyproject.toml; the lanes are
# this file's scheduler, below). The fleet test drives a lab host that runs under software
# emulation for about ten minutes, mostly waiting on it; it and the local provisioning
# test (both run Ansible against this host, whose package manager takes one at a time)
# share the fleet lane. Every other test runs in the host lane, one after the other in
# file order, as if alone: the lab host beside them is other work on a shared machine,
# which bench must measure through (its noise records say how busy the host was).
FLEET_LANE_TESTS = (
    "tests/test_fleet.py::",
    "tests/test_provision.py::test_provision_playbook_is_idempotent",
)


def lane_of(nodeid: str) -> str:
    """The lane a test runs in: ``fleet`` or ``host``."""
    return "fleet" if nodeid.startswith(FLEET_LANE_TESTS) else "host"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Schedule whole lanes: one worker takes the fleet lane, the other every other test.

    (pytest-xdist's own ``loadgroup`` cannot group under pytest 9, whose node ids it
    can no longer rename; a scope scheduler whose scopes are the lanes does the same.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return lane_of(nodeid)

    return Lanes(config, log)


def in_ci() -> bool:
    """True when running under CI (CI=true), where missing engines are failures."""
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip with the reason on a developer machine; fail under CI."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _prepared_backend(name: str, specs: list[Any]) -> Backend:
    """A backend checked and prepared once; skip (or fail under CI) when it cannot run."""
    from bench.backends import get_backend

    backend = get_backend(name)
    try:
        backend.check_available()
        backend.prepare(specs)
    except BenchError as exc:
        skip_or_fail(str(exc))
    return backend


@pytest.fixture(scope="session")
def process_backend() -> Backend:
    """The process backend, checked and prepared once per session."""
    return _prepared_backend("process", [])


@pytest.fixture(scope="session")
def docker_backend() -> Iterator[Backend]:
    """The docker backend against the engine ansible/up.sh started, image built once."""
    backend = _prepared_backend("docker", [])
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def libvirt_backend() -> Iterator[Backend]:
    """The libvirt backend against the daemon ansible/up.sh started, guest artefacts built once."""
    from bench.scenario import InstanceSpec

    backend = _prepared_backend("libvirt", [InstanceSpec(accel="tcg")])
    yield backend
    backend.close()


def _leftovers_by_backend() -> dict[str, set[str]]:
    """Every available backend's bench instances that exist now, but a live run's."""
    from bench.backends import backend_names, get_backend
    from bench.ownership import active_runs, owned_by_live_run, run_suffix

    live = {run_suffix(str(r["run_id"])) for r in active_runs()}
    found: dict[str, set[str]] = {}
    for name in backend_names():
        try:
            backend = get_backend(name)
            backend.check_available()
        except BenchError:
            continue
        try:
            found[name] = {n for n in backend.leftovers() if not owned_by_live_run(n, live)}
        finally:
            backend.close()
    return found


@pytest.fixture
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the test, assert it left no instance behind (then sweep what it left).

    Only instances that appeared during the test and belong to no live run count:
    another bench run on the same host (a developer's, a second session's) is not this
    test's to judge or remove. One that is still there after a short grace period is
    this test's leak, and is removed (that one only).
    """
    before = _leftovers_by_backend()
    yield
    from bench.backends import get_backend

    deadline = time.monotonic() + 5
    while True:
        new = {
            name: sorted(names - before.get(name, set()))
            for name, names in _leftovers_by_backend().items()
            if names - before.get(name, set())
        }
        if not new or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for name, names in new.items():
        backend = get_backend(name)
        try:
            backend.check_available()
            backend.remove_leftovers(names)
        finally:
            backend.close()
    assert not new, f"bench instances left behind: {new}"
