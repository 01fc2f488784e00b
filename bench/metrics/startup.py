"""Startup time: host monotonic stamps of every lifecycle stage, and the pure arithmetic on them.

Stages (MEASURE.md): create (before the create call), created, started (start returned /
process spawned), ready (READY read by the host), exited, removed. Derived durations:
create_s, start_s, to_ready_s (the headline value, create -> ready), ready_after_start_s,
to_exit_s, remove_s; docker adds attach_s. Never the guest's or container's own clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from bench.backends.base import Backend, Instance
from bench.errors import BenchError
from bench.plan import Step
from bench.samples import Sample

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


def measure_startup(
    backend: Backend,
    step: Step,
    run_id: str,
    instance_name: str,
    timeout_s: float,
    live: dict[str, tuple[Backend, Instance]],
) -> Sample:
    """Start one instance, wait for READY and exit, remove it; return one startup Sample.

    ``live`` is the runner's cleanup registry: the instance is in it from the moment its
    create call may have taken effect until it is removed.
    """
    instance: Instance | None = None
    error: str | None = None
    try:
        instance = Instance(backend.name, instance_name, step.case.spec, run_id)
        live[instance_name] = (backend, instance)
        backend.start(step.case.spec, instance_name, run_id, instance)
        backend.wait_ready(instance, timeout_s)
        code = backend.wait_exit(instance, timeout_s)
        if code != 0:
            error = f"payload exited with code {code}: {instance.output_text(300)!r}"
    except BenchError as exc:
        error = str(exc)
    except Exception as exc:  # an engine or SDK error: recorded on the sample, never hidden
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if instance is not None:
            try:
                backend.stop(instance)
                backend.wait_gone(instance)
            except Exception as exc:
                error = error or f"cleanup failed: {type(exc).__name__}: {exc}"
            live.pop(instance_name, None)
    assert instance is not None
    t_ns = instance.t_ns
    stages: dict[str, float] = {}
    try:
        stages = startup_stages(t_ns)
    except StageOrderError as exc:
        error = error or str(exc)
    ok = error is None and "ready" in t_ns
    labels: dict[str, Any] = dict(instance.labels)
    labels.setdefault("accel", "n/a")  # only VMs have an accelerator; recorded on every sample
    if instance.exit_code is not None:
        labels["exit_code"] = instance.exit_code
    return Sample(
        run_id=run_id,
        seq=step.seq,
        metric="startup",
        backend=backend.name,
        case=step.case.name,
        value=stages.get("to_ready_s") if ok else None,
        unit="s",
        ok=ok,
        error=error,
        warmup=step.warmup,
        round=step.round,
        instance=instance_name,
        params=dict(step.case.params),
        stages=stages,
        t_ns=relative_stamps(t_ns),
        labels=labels,
    )
