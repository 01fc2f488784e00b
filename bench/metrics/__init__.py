"""Metrics: each drives backends through their lifecycle and turns what it read into Samples.

Every metric implements the contract in ``bench.metrics.base`` and registers itself by
name; ``metric_class`` imports the built-in ones on first use.
"""

from __future__ import annotations

import importlib

from bench.errors import BenchError

BUILTIN_METRIC_MODULES = (
    "bench.metrics.startup",
    "bench.metrics.memory",
    "bench.metrics.density",
    "bench.metrics.limits",
)


def metric_class(name: str) -> type:
    """The metric class registered as ``name`` (startup, memory, density, limits)."""
    from bench.metrics.base import Metric

    for module in BUILTIN_METRIC_MODULES:
        importlib.import_module(module)
    try:
        return Metric.registry[name]
    except KeyError:
        raise BenchError(
            f"unknown metric {name!r}; valid metrics: {', '.join(sorted(Metric.registry))}"
        ) from None
