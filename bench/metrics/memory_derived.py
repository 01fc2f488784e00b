"""What the memory metric derives once every group is measured: overheads and slopes.

Overheads are views minus the native baseline's; the MemAvailable slope per backend is
pooled over the groups (each group one repeat) and compared with the native backend's.
Pure functions of recorded samples.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from bench.backends.base import Mechanism
from bench.metrics.slope import (
    SlopeFit,
    across_groups,
    difference,
    fit_group,
)
from bench.samples import Sample

# The views an overhead is computed for (PSS as the whole-instance total)
OVERHEAD_VIEWS = ("pss", "cgroup_usage", "cgroup_peak", "memavailable_drop")


def overhead_samples(
    samples: list[Sample], mechanisms: Mapping[str, Mechanism | str]
) -> list[Sample]:
    """Per instance: view minus the native baseline's median of the same case, view, role.

    A native backend runs the payload alone, so its figure is what the payload itself
    uses. For PSS the whole-instance total is compared; cgroup views compare cgroup
    usage; MemAvailable compares drop per instance. The baseline is taken from the same
    block (and the same KSM state) when that block has one, else from every block.
    """

    def is_native(sample: Sample) -> bool:
        return str(mechanisms.get(sample.backend, "")) == Mechanism.NATIVE

    def key(sample: Sample, role: str) -> tuple[str, str, str, str]:
        view = str(sample.labels["view"])
        return (sample.case, view, role, str(sample.labels.get("ksm", "")))

    def eligible(sample: Sample) -> bool:
        view, role = str(sample.labels.get("view")), str(sample.labels.get("role"))
        return view in OVERHEAD_VIEWS and (view != "pss" or role == "total")

    by_block: dict[tuple[int, str, str, str, str], list[float]] = defaultdict(list)
    pooled: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for sample in samples:
        if is_native(sample) and sample.ok and sample.value is not None and eligible(sample):
            k = key(sample, str(sample.labels["role"]))
            by_block[(sample.block, *k)].append(sample.value)
            pooled[k].append(sample.value)
    block_medians = {k: statistics.median(values) for k, values in by_block.items()}
    pooled_medians = {k: statistics.median(values) for k, values in pooled.items()}
    results = []
    for sample in samples:
        if is_native(sample) or not sample.ok or sample.value is None or not eligible(sample):
            continue
        view = str(sample.labels["view"])
        k = key(sample, "total" if view == "pss" else str(sample.labels["role"]))
        reference: float | None = block_medians.get((sample.block, *k))
        if reference is None:
            reference = pooled_medians.get(k)
        if reference is None:
            continue
        labels = dict(sample.labels)
        labels.update({"view": f"{view}_overhead", "of_view": view, "baseline_mib": reference})
        results.append(
            Sample(
                metric="memory",
                backend=sample.backend,
                case=sample.case,
                value=sample.value - reference,
                unit="MiB",
                round=sample.round,
                block=sample.block,
                instance=sample.instance,
                params=dict(sample.params),
                labels=labels,
            )
        )
    return results


def interval_finding(value: float, low: float | None, high: float | None, below_zero: str) -> str:
    """What a per-instance figure with its 95% interval may be reported as.

    An interval that contains 0, or none at all (one group), is "not distinguishable
    from 0"; one wholly below 0 is ``below_zero`` (never a negative finding).
    """
    if low is None or high is None:
        return "not distinguishable from 0 (one group: no interval, run more rounds)"
    if high < 0:
        return below_zero
    if low <= 0:
        return "not distinguishable from 0"
    return f"{value:+.1f} MiB per instance [{low:+.1f}, {high:+.1f}]"


def cost_finding(cost: float, low: float | None, high: float | None) -> str:
    """What a per-instance cost from the MemAvailable slope may be reported as.

    An instance cannot give memory back: a cost whose whole interval lies below 0 says
    that the host drifted by more than the instance costs (MemAvailable's resolution on
    that host), never that the instance freed memory.
    """
    return interval_finding(
        cost, low, high, "below 0: the host's drift exceeds this cost (not a finding)"
    )


def slope_samples(samples: list[Sample], mechanisms: Mapping[str, Mechanism | str]) -> list[Sample]:
    """Per backend and case: the MemAvailable slope over every group, and its overhead.

    Each group's points (MemAvailable after each instance started, then after each one
    removed) are fitted together, one intercept per group and the host's drift over time
    taken out; the groups are the independent repeats, so the interval is Student's t
    over the groups' slopes (none from one group). The overhead is the cost per instance
    minus the native backend's, with a 95% CI (Welch over the groups). An interval that
    contains 0 is said to be "not distinguishable from 0": a negative figure is never a
    finding.
    """
    groups: dict[tuple[str, str, str], list[list[tuple[float, float, float]]]] = defaultdict(list)
    drift_removed: dict[tuple[str, str, str], bool] = {}
    for sample in samples:
        if sample.labels.get("view") == "memavailable_slope" and sample.ok:
            points = [
                (float(p[0]), float(p[1]), float(p[2])) for p in sample.labels.get("points", [])
            ]
            key = (sample.backend, sample.case, str(sample.labels.get("ksm", "")))
            groups[key].append(points)
            drift_removed[key] = drift_removed.get(key, True) and bool(
                sample.labels.get("drift_removed")
            )

    # each group is one independent repeat: its slope is one observation, and the
    # interval comes from how the groups' slopes differ (points within a group share the
    # host's momentary state, so a within-group interval would be too narrow)
    fits: dict[tuple[str, str, str], SlopeFit] = {}
    for key, point_groups in groups.items():
        per_group = [f for g in point_groups if (f := fit_group(g, drift_removed.get(key, False)))]
        pooled = across_groups(per_group)
        if pooled is not None:
            fits[key] = pooled
    natives = {
        (case, ksm): fit
        for (backend, case, ksm), fit in fits.items()
        if str(mechanisms.get(backend, "")) == Mechanism.NATIVE
    }
    results: list[Sample] = []
    for (backend, case, ksm), fit in sorted(fits.items()):
        cost = -fit.slope
        low = -fit.ci_high if fit.ci_high is not None else None
        high = -fit.ci_low if fit.ci_low is not None else None
        labels: dict[str, Any] = {
            "view": "memavailable_slope_pooled",
            "role": "host",
            "ksm": ksm,
            "ci_low_mib": low,
            "ci_high_mib": high,
            "points": fit.points,
            "groups": len(groups[(backend, case, ksm)]),
            "df": fit.df,
            "distinguishable_from_zero": fit.excludes_zero(),
            "interval": "t over groups" if fit.df >= 1 else "none: one group",
            "finding": cost_finding(cost, low, high),
        }
        results.append(
            Sample(
                metric="memory",
                backend=backend,
                case=case,
                value=cost,
                unit="MiB",
                instance="*",
                labels=labels,
            )
        )
        native = natives.get((case, ksm))
        if native is None or str(mechanisms.get(backend, "")) == Mechanism.NATIVE:
            continue
        delta, d_low, d_high = difference(native, fit)  # native slope - this slope = cost diff
        distinguishable = d_low is not None and d_high is not None and (d_low > 0 or d_high < 0)
        results.append(
            Sample(
                metric="memory",
                backend=backend,
                case=case,
                value=delta,
                unit="MiB",
                instance="*",
                labels={
                    "view": "memavailable_slope_overhead",
                    "role": "host",
                    "ksm": ksm,
                    "ci_low_mib": d_low,
                    "ci_high_mib": d_high,
                    "distinguishable_from_zero": distinguishable,
                    "finding": interval_finding(
                        delta, d_low, d_high, "below native (not an overhead)"
                    ),
                },
            )
        )
    return results
