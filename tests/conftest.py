"""Shared fixtures: one provisioned engine per session, and a leftover check after each test.

Tests that need the real Docker engine or writable cgroups skip with the reason when
they are absent, except under CI=true, where an absent engine is a failure: a broken
install step must never hide behind skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.backends.base import Backend
from bench.errors import BenchError

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


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


@pytest.fixture
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the test, assert bench left no container or cgroup behind (then sweep anyway)."""
    yield
    from bench.backends import backend_names, get_backend

    problems = []
    for name in backend_names():
        try:
            backend = get_backend(name)
            backend.check_available()
        except BenchError:
            continue
        try:
            left = backend.leftovers()
            if left:
                problems.append(f"{name}: {left}")
                backend.sweep()
        finally:
            backend.close()
    assert not problems, f"bench instances left behind: {problems}"
