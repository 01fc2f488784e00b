"""Backends are optional plug-ins: a missing SDK or engine means 'unavailable', not a trace."""

from __future__ import annotations

import importlib

from bench.backends.base import Backend
from bench.errors import BackendUnavailable, BenchError

BACKEND_CLASSES: dict[str, str] = {
    "process": "bench.backends.process:ProcessBackend",
    "docker": "bench.backends.docker:DockerBackend",
    "libvirt": "bench.backends.libvirt:LibvirtBackend",
}


def backend_names() -> list[str]:
    """Names of every backend bench knows."""
    return list(BACKEND_CLASSES)


def get_backend(name: str) -> Backend:
    """Instantiate a backend by name (not yet checked for availability)."""
    try:
        target = BACKEND_CLASSES[name]
    except KeyError:
        raise BenchError(
            f"unknown backend {name!r}; valid backends: {', '.join(BACKEND_CLASSES)}"
        ) from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(
            name, f"cannot import {module_name} ({exc})", "pip install -e ."
        ) from None
    backend: Backend = getattr(module, class_name)()
    return backend
