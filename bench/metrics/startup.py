"""Startup time: host monotonic stamps of every lifecycle stage, and the pure arithmetic on them.

Stages (README, Method): create (before the create call), created, started (start returned /
process spawned), ready (READY read by the host), exited, removed. Derived durations:
create_s, start_s, to_ready_s (the headline value, create -> ready), ready_after_start_s,
to_exit_s, remove_s; docker adds attach_s. Never the guest's or container's own clock.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from typing import Any

from bench.backends.base import Backend
from bench.errors import BenchError
from bench.metrics.base import Metric, RunContext
from bench.plan import Step
from bench.samples import Sample
from bench.scenario import Scenario

STAGE_ORDER = (
    "create",
    "created",
    "attached",
    "started",
    "first_console_byte",
    "userspace",
    "ready",
    "exited",
    "destroyed",
    "removed",
    "gone",
)

# (stage name, from stamp, to stamp): durations derived from the stamps
DERIVED_STAGES = (
    ("create_s", "create", "created"),
    ("attach_s", "created", "attached"),
    ("start_s", "created", "started"),
    ("to_first_byte_s", "create", "first_console_byte"),
    ("to_userspace_s", "create", "userspace"),
    ("kernel_boot_s", "first_console_byte", "userspace"),
    ("userspace_to_ready_s", "userspace", "ready"),
    ("to_ready_s", "create", "ready"),
    ("ready_after_start_s", "started", "ready"),
    ("to_exit_s", "create", "exited"),
    ("remove_s", "exited", "removed"),
    ("teardown_s", "removed", "gone"),
)


class StageOrderError(ValueError):
    """Stamps are out of order: a clock or lifecycle bug, never a measurement."""


def check_stage_order(t_ns: Mapping[str, int]) -> None:
    """Raise StageOrderError unless the present stamps are non-decreasing in stage order."""
    present = [(name, t_ns[name]) for name in STAGE_ORDER if name in t_ns]
    for (earlier, t_earlier), (later, t_later) in itertools.pairwise(present):
        if t_later < t_earlier:
            raise StageOrderError(f"stage {later} ({t_later}) precedes {earlier} ({t_earlier})")


def startup_stages(t_ns: Mapping[str, int]) -> dict[str, float]:
    """Return every derivable stage duration in seconds from monotonic ns stamps."""
    check_stage_order(t_ns)
    stages: dict[str, float] = {}
    for name, start, end in DERIVED_STAGES:
        if start in t_ns and end in t_ns:
            stages[name] = (t_ns[end] - t_ns[start]) / 1e9
    return stages


def relative_stamps(t_ns: Mapping[str, int]) -> dict[str, int]:
    """Stamps relative to create (ns), plus the absolute create stamp as ``create_abs``."""
    origin = t_ns.get("create", 0)
    out = {name: value - origin for name, value in t_ns.items()}
    out["create_abs"] = origin
    return out


class StartupMetric(Metric):
    """One instance per step: start, READY, exit, remove; one sample with every stage."""

    name = "startup"

    def rounds(self, scenario: Scenario) -> tuple[int, int]:
        """Warmups, then ``samples`` measured rounds per block."""
        return scenario.warmups, scenario.samples

    def describe(self, step: Step) -> str:
        """Startup steps are many and short: the progress bar says enough."""
        return ""

    def measure(self, ctx: RunContext, step: Step) -> Iterator[Sample]:
        """Measure one startup, then pause ``settle_s`` so teardown stays out of the next."""
        scenario = ctx.scenario
        cold_note = None
        if scenario.start == "cold":
            cold_note = ctx.drop_page_cache()
            if cold_note:
                ctx.warn(cold_note)
        sample = measure_startup(ctx, ctx.backends[step.backend], step)
        if scenario.start == "cold":
            sample.labels["cold"] = cold_note is None
        yield sample
        if scenario.settle_s:
            time.sleep(scenario.settle_s)


def measure_startup(ctx: RunContext, backend: Backend, step: Step) -> Sample:
    """Start one instance, wait for READY and exit, remove it; return one startup Sample.

    The instance is in the run's cleanup registry from before its create call until it is
    removed and its host processes are gone.
    """
    timeout_s = ctx.scenario.timeout_s
    spec = ctx.spec_for(step.case.spec)
    # the engines' cleanup after the last instance is not this one's startup
    quiet = ctx.wait_quiet()
    instance = ctx.new_instance(backend, spec)
    error: str | None = None
    try:
        backend.start(spec, instance.name, ctx.run_id, instance)
        backend.wait_ready(instance, timeout_s)
        code = backend.wait_exit(instance, timeout_s)
        if code != 0:
            error = f"payload exited with code {code}: {instance.output_text(300)!r}"
    except BenchError as exc:
        error = str(exc)
    except Exception as exc:  # an engine or SDK error: recorded on the sample, never hidden
        error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            ctx.finish(backend, instance)
        except Exception as exc:
            error = error or f"cleanup failed: {type(exc).__name__}: {exc}"
    t_ns = instance.t_ns
    stages: dict[str, float] = {}
    try:
        stages = startup_stages(t_ns)
    except StageOrderError as exc:
        error = error or str(exc)
    ok = error is None and "ready" in t_ns
    labels: dict[str, Any] = dict(instance.labels)
    labels.setdefault("accel", "n/a")  # only VMs have an accelerator; recorded on every sample
    # what ran just before: a process after a container starts slower (the engine's own
    # asynchronous cleanup); recorded so that such a mixture can be told apart
    labels["after_backend"] = ctx.previous_backend
    labels["quiet_wait_s"] = round(quiet.waited_s, 4)
    labels["quiet"] = quiet.quiet
    if instance.exit_code is not None:
        labels["exit_code"] = instance.exit_code
    return Sample(
        metric="startup",
        backend=backend.name,
        case=step.case.name,
        value=stages.get("to_ready_s") if ok else None,
        unit="s",
        ok=ok,
        error=error,
        warmup=step.warmup,
        round=step.round,
        instance=instance.name,
        params=dict(step.case.params),
        stages=stages,
        t_ns=relative_stamps(t_ns),
        labels=labels,
    )
