"""Limit checks as records, and the pure arithmetic of their verdicts.

What held is decided here from measured numbers only, with fixed inputs in tests:
- memory: enforced when the payload was killed for the limit and peak usage stayed
  within the limit plus a tolerance;
- cpu: enforced when the cores measured (CPU time over wall time, after a warm-up) stayed
  at or under the quota plus a tolerance and the kernel throttled the group; less than the
  quota on a busy host is contention, said in the verdict's note, not a failure;
- pids: enforced when forks were refused exactly at the limit and the pids ``max``
  event counter rose.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from bench.scenario import LimitOptions

SERIES_MAX_POINTS = 200
CPU_WARMUP_S = 0.5


@dataclass(kw_only=True)
class LimitCheck:
    """One check's outcome: what was set, what was measured, and whether it held."""

    kind: str  # memory | memory_control | cpu | pids | *_guest_v2
    set_value: float | None
    set_unit: str
    measured: float | None
    unit: str
    enforced: bool | None  # None = not applicable
    evidence: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    error: str | None = None
    # how the verdict was reached, in words (the CPU check's contention note)
    note: str = ""


def downsample(
    points: list[tuple[int, Any]], origin_ns: int, scale: float = 1.0
) -> list[list[float]]:
    """Series points as [seconds since origin, value * scale], at most SERIES_MAX_POINTS."""
    if not points:
        return []
    step = max(1, len(points) // SERIES_MAX_POINTS)
    picked = points[::step]
    if picked[-1] is not points[-1]:
        picked.append(points[-1])
    return [[round((t - origin_ns) / 1e9, 4), float(v) * scale] for t, v in picked]


def cpu_cores_used(usage: list[tuple[int, Any]], skip_s: float = CPU_WARMUP_S) -> float | None:
    """Average cores used between the first point after ``skip_s`` and the last point."""
    if len(usage) < 2:
        return None
    start_ns = usage[0][0] + int(skip_s * 1e9)
    window = [(t, v) for t, v in usage if t >= start_ns] or usage
    if len(window) < 2:
        window = usage
    (t0, u0), (t1, u1) = window[0], window[-1]
    if t1 <= t0:
        return None
    return float(u1 - u0) / float(t1 - t0)


def rate_series(usage: list[tuple[int, Any]]) -> list[tuple[int, float]]:
    """Per-interval rate (cores) from cumulative (ns, cpu ns) points."""
    return [
        (t1, (u1 - u0) / (t1 - t0)) for (t0, u0), (t1, u1) in itertools.pairwise(usage) if t1 > t0
    ]


@dataclass(frozen=True)
class CpuVerdict:
    """Whether a CPU quota held, and the words that say how it was judged."""

    enforced: bool
    note: str


def cpu_verdict(
    measured_cores: float | None, quota_cores: float, throttled_delta: int | None, tolerance: float
) -> CpuVerdict:
    """Judge a quota on the kernel's evidence: never above Q, and throttled while wanting more.

    Enforced when the cores used stayed at or under ``Q x (1 + tolerance)`` and the kernel
    throttled the group (``nr_throttled`` rose): the payload runs more busy threads than
    Q, so an applied quota always throttles it. A payload that got *less* than Q on a busy
    host (contention: other work took the cores) is still enforced, and the note says how
    much the host delivered; what a quota promises is a ceiling, not a share. Not
    enforced: usage over the ceiling, or no throttling at all (the quota never acted:
    not applied, or never reached, and either way not shown). Pure.
    """
    if measured_cores is None or throttled_delta is None:
        return CpuVerdict(False, "no usage or throttling counters could be read")
    used = f"{measured_cores:.3g} of {quota_cores:g} cores"
    ceiling = quota_cores * (1 + tolerance)
    if measured_cores > ceiling:
        return CpuVerdict(
            False, f"exceeded: used {used}, over the quota + {tolerance:.0%} tolerance"
        )
    if throttled_delta <= 0:
        return CpuVerdict(
            False,
            f"not shown: the kernel never throttled the group (nr_throttled +0) while it "
            f"used {used}",
        )
    if measured_cores < quota_cores * (1 - tolerance):
        return CpuVerdict(
            True,
            f"the host delivered {used} (contention); throttled {throttled_delta} times",
        )
    return CpuVerdict(True, f"held at {used}; throttled {throttled_delta} times")


def memory_verdict(
    killed: bool, peak_bytes: int | None, limit_bytes: int, tolerance_bytes: float
) -> bool:
    """Enforced when the payload was OOM-killed and peak usage stayed within the limit."""
    return killed and peak_bytes is not None and peak_bytes <= limit_bytes + tolerance_bytes


def parse_fork_output(text: str) -> dict[str, Any]:
    """The probe's fork report: ``FORK_FAILED k ERRNO`` (first refusal) and ``FORKED k``."""
    failed = re.search(r"^FORK_FAILED (\d+) (\S+)", text, re.M)
    forked = re.search(r"^FORKED (\d+)", text, re.M)
    return {
        "refused_after": int(failed.group(1)) if failed else None,
        "errno": failed.group(2) if failed else None,
        "forked": int(forked.group(1)) if forked else None,
    }


def pids_verdict(fork: dict[str, Any], limit: int, max_events_delta: int | None) -> bool:
    """Enforced when forks were refused exactly at the limit (the probe is one task of P)."""
    return (
        fork.get("refused_after") is not None
        and fork["refused_after"] + 1 == limit
        and (max_events_delta is None or max_events_delta > 0)
    )


def cpu_check(
    quota: float,
    usage: list[tuple[int, Any]],
    throttled_delta: int | None,
    options: LimitOptions,
    evidence: dict[str, Any],
    error: str | None = None,
    kind: str = "cpu",
) -> LimitCheck:
    """The CPU check's verdict and record from cumulative (ns, cpu ns) usage points."""
    measured = cpu_cores_used(usage)
    origin = usage[0][0] if usage else 0
    verdict = cpu_verdict(measured, quota, throttled_delta, options.cpu_tolerance)
    return LimitCheck(
        kind=kind,
        set_value=quota,
        set_unit="cores",
        measured=measured,
        unit="cores",
        enforced=verdict.enforced,
        note=verdict.note,
        evidence={
            "nr_throttled_delta": throttled_delta,
            "threads": options.cpu_threads,
            "seconds": options.cpu_seconds,
            "samples": len(usage),
            "error_fraction": abs(measured - quota) / quota if measured is not None else None,
            **evidence,
        },
        series={"cores": downsample(rate_series(usage), origin)},
        error=error,
    )


def not_applicable(kind: str, set_value: float, unit: str, reason: str) -> LimitCheck:
    """A record saying the backend cannot apply this limit, and why (never a number)."""
    return LimitCheck(
        kind=kind,
        set_value=set_value,
        set_unit=unit,
        measured=None,
        unit=unit,
        enforced=None,
        evidence={"reason": reason},
    )


def failed_check(kind: str, set_value: float | None, unit: str, error: str) -> LimitCheck:
    """A check that could not be taken: no measurement, not enforced, and why."""
    return LimitCheck(
        kind=kind,
        set_value=set_value,
        set_unit=unit,
        measured=None,
        unit=unit,
        enforced=False,
        error=error,
    )
