"""Memory overhead per instance, three views, for N idle instances at once.

1. PSS of every host process that exists because of the instance, by role (the
   backend declares its roles: qemu; container processes + containerd-shim; the probe),
   from /proc/PID/smaps_rollup.
2. Host MemAvailable drop divided by N, page cache dropped first when allowed.
3. The instance's own cgroup usage (v1 memory.usage_in_bytes / max_usage_in_bytes,
   v2 memory.current / memory.peak), read while the instances live.
Overhead = view minus what the payload itself uses: the median of the same case and view
on the run's native backends (the mechanism class, never a name), in the same block
where that block has one. Computed from recorded values by ``overhead_samples``; without
a native backend in the run nothing is computed, and nothing is invented.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.backends.base import Backend, Instance, Mechanism
from bench.cgroups.readers import cgroup_dir_for_pid, read_memory_usage
from bench.errors import BenchError
from bench.host_settings import KSM_DIR, THP_ENABLED, changed_settings, ksm_counters
from bench.metrics.base import Metric, RunContext
from bench.metrics.ledger import instance_ledger
from bench.metrics.procmem import MIB, mem_available_bytes, pss_bytes
from bench.metrics.slope import (
    SlopeFit,
    across_groups,
    difference,
    fit_slope,
    fit_slope_with_drift,
)
from bench.plan import Step
from bench.samples import Sample
from bench.scenario import InstanceSpec, MemoryOptions, Scenario

MEMORY_VIEWS = ("pss", "memavailable_drop", "cgroup_usage", "cgroup_peak")


def idle_spec(spec: InstanceSpec) -> InstanceSpec:
    """The spec with a payload that stays alive (``ready`` exits at once, so it becomes idle)."""
    if spec.payload.mode == "ready":
        return spec.model_copy(update={"payload": spec.payload.model_copy(update={"mode": "idle"})})
    return spec


class MemoryMetric(Metric):
    """One step = N idle instances of one backend and case, every view read, all removed."""

    name = "memory"

    def __init__(self) -> None:
        self._taken: list[Sample] = []

    def rounds(self, scenario: Scenario) -> tuple[int, int]:
        """No warmups; ``memory.rounds`` groups per backend and case in each block."""
        return 0, scenario.memory.rounds

    def describe(self, step: Step) -> str:
        """What the step starts."""
        return f"memory: idle {step.backend} instances, {step.case.name}"

    def measure(self, ctx: RunContext, step: Step) -> Iterator[Sample]:
        """Start the group, settle, read every view, remove the group."""
        for sample in measure_memory(ctx, ctx.backends[step.backend], step):
            self._taken.append(sample)
            yield sample

    def restore(self, samples: list[Sample]) -> None:
        """Memory samples taken before a resume count towards the derived records."""
        self._taken.extend(
            s
            for s in samples
            if s.metric == self.name and s.step >= 0  # derived records carry step -1
        )

    def finish(self, ctx: RunContext) -> Iterator[Sample]:
        """Overhead records against the run's native backends."""
        mechanisms = {
            name: backend.capabilities.mechanism for name, backend in ctx.backends.items()
        }
        overheads = overhead_samples(self._taken, mechanisms)
        overheads += slope_samples(self._taken, mechanisms)
        if self._taken and Mechanism.NATIVE not in mechanisms.values():
            ctx.warn("memory overhead not computed: no native backend (process) in the run")
        yield from overheads


KSM_PAGES_TO_SCAN = 2000  # pages per wake-up while bench lets KSM settle (default 100)
KSM_SLEEP_MS = 20
KSM_POLL_S = 1.0


def host_knobs(options: MemoryOptions) -> dict[Path, str]:
    """The sysfs values a memory group runs under (KSM's run switch, THP's mode)."""
    knobs: dict[Path, str] = {}
    if options.ksm == "off":
        knobs[KSM_DIR / "run"] = "0"
    elif options.ksm == "on":
        knobs.update(ksm_on_knobs())
    if options.thp != "host":
        knobs[THP_ENABLED] = options.thp
    return knobs


def ksm_on_knobs() -> dict[Path, str]:
    """KSM switched on, scanning fast enough to settle within minutes."""
    return {
        KSM_DIR / "pages_to_scan": str(KSM_PAGES_TO_SCAN),
        KSM_DIR / "sleep_millisecs": str(KSM_SLEEP_MS),
        KSM_DIR / "run": "1",
    }


def settle_ksm(options: MemoryOptions) -> dict[str, Any]:
    """Wait until KSM's pages_sharing is stable (or the timeout); return its curve.

    Stable: at least two full scans done, and pages_sharing moved less than 1% over the
    last ``ksm_stable_s``. Each point is [seconds, pages_sharing, MemAvailable MiB].
    """
    origin = time.monotonic()
    start = ksm_counters()
    series: list[list[float]] = []
    stable = False
    while True:
        elapsed = time.monotonic() - origin
        counters = ksm_counters()
        series.append(
            [round(elapsed, 2), counters.get("pages_sharing", 0), mem_available_bytes() / MIB]
        )
        window = [p for p in series if p[0] >= elapsed - options.ksm_stable_s]
        scans = counters.get("full_scans", 0) - start.get("full_scans", 0)
        if elapsed >= options.ksm_stable_s and scans >= 2 and window:
            low, high = min(p[1] for p in window), max(p[1] for p in window)
            if high == 0 or (high - low) <= 0.01 * high:
                stable = True
                break
        if elapsed >= options.ksm_timeout_s:
            break
        time.sleep(KSM_POLL_S)
    return {
        "settle_s": round(time.monotonic() - origin, 2),
        "stable": stable,
        "full_scans": ksm_counters().get("full_scans", 0) - start.get("full_scans", 0),
        "series": series,
    }


def measure_memory(ctx: RunContext, backend: Backend, step: Step) -> list[Sample]:
    """Start ``memory.instances`` idle instances, settle, read every view, remove them.

    MemAvailable is also read after every instance (``step_settle_s`` after READY), for
    the slope of MemAvailable against N. With ``ksm: both`` the instances are read again
    after KSM settled; KSM and THP are set for the group and given back afterwards.
    """
    options = ctx.scenario.memory
    spec = idle_spec(ctx.spec_for(step.case.spec))
    count = options.instances
    samples: list[Sample] = []
    error: str | None = None
    instances: list[Instance] = []
    state = {"ksm": "off" if options.ksm != "on" else "on"}

    def record(
        instance: Instance | None,
        view: str,
        role: str,
        value_bytes: float | None,
        error: str | None = None,
        seconds: float | None = None,
        not_applicable: str | None = None,
        **extra: object,
    ) -> None:
        labels: dict[str, object] = dict(instance.labels) if instance is not None else {}
        labels.setdefault("accel", "n/a")
        labels.update(
            {
                "view": view,
                "role": role,
                "instances": count,
                "settle_s": options.settle_s,
                "page_cache": state.get("cache_note") or "dropped",
                "ksm": state["ksm"],
                "thp": options.thp,
            }
        )
        labels.update(extra)
        value = (
            seconds
            if seconds is not None
            else (value_bytes / MIB if value_bytes is not None else None)
        )
        samples.append(
            Sample(
                metric="memory",
                backend=backend.name,
                case=step.case.name,
                value=value,
                unit="s" if seconds is not None else "MiB",
                ok=value is not None or not_applicable is not None,
                error=error
                or (
                    None
                    if value is not None or not_applicable is not None
                    else f"{view}/{role} unreadable"
                ),
                round=step.round,
                instance=instance.name if instance is not None else "*",
                params=dict(step.case.params),
                labels=labels,
            )
        )

    try:
        with changed_settings(host_knobs(options), ctx.run_id) as previous:
            state["cache_note"] = (
                ctx.drop_page_cache() if options.drop_caches else "not dropped (scenario)"
            ) or ""
            before_bytes = mem_available_bytes()
            origin = time.monotonic()

            def point(n: int) -> tuple[float, float, float]:
                return (float(n), time.monotonic() - origin, mem_available_bytes() / MIB)

            points = [point(0)]
            for number in range(1, count + 1):
                instance = ctx.new_instance(backend, spec)
                instances.append(instance)
                backend.start(spec, instance.name, ctx.run_id, instance)
                backend.wait_ready(instance, ctx.scenario.timeout_s)
                ctx.progress(f"memory {backend.name}: {number} of {count} idle instances")
                if options.step_settle_s:
                    time.sleep(options.step_settle_s)
                points.append(point(number))
            time.sleep(options.settle_s)
            if options.ksm == "on":
                settled = settle_ksm(options)
                record(None, "ksm_settle", "host", None, seconds=settled.pop("settle_s"), **settled)
            _read_group(ctx, backend, instances, record, before_bytes)
            if options.ksm == "both":
                with changed_settings(ksm_on_knobs(), f"{ctx.run_id}-ksm"):
                    state["ksm"] = "on"
                    settled = settle_ksm(options)
                    record(
                        None, "ksm_settle", "host", None, seconds=settled.pop("settle_s"), **settled
                    )
                    _read_group(ctx, backend, instances, record, before_bytes)
                state["ksm"] = "off"
            else:
                # ramp down, one instance at a time: N falls while time goes on, so the
                # host's drift and the instances' cost can be told apart
                while instances:
                    ctx.finish(backend, instances.pop())
                    if options.step_settle_s:
                        time.sleep(options.step_settle_s)
                    points.append(point(len(instances)))
            _record_slope(record, points, drift_removed=options.ksm != "both")
            for sample in samples:
                sample.labels.setdefault("host_settings_before", previous)
    except BenchError as exc:
        error = str(exc)
    finally:
        for instance in instances:
            try:
                ctx.finish(backend, instance)
            except Exception as exc:
                error = error or f"cleanup failed: {exc}"
    if error is not None:
        record(None, "error", "-", None, error=error)
    return samples


def _read_group(
    ctx: RunContext,
    backend: Backend,
    instances: list[Instance],
    record: Callable[..., None],
    before_bytes: int,
) -> None:
    """Every view and the ledger of each live instance, then the host-wide records."""
    after_bytes = mem_available_bytes()
    totals: list[int] = []
    for instance in instances:
        if not backend.is_alive(instance):
            record(
                instance,
                "pss",
                "total",
                None,
                error=f"{instance.name} vanished while idle: removed from outside the "
                "run (bench clean --all, an engine restart?)",
            )
            continue
        roles = backend.host_processes(instance)
        total = 0
        complete = True
        for role, pids in sorted(roles.items()):
            role_bytes = 0
            for pid in pids:
                value = pss_bytes(pid)
                if value is None:
                    complete = False
                    continue
                role_bytes += value
            record(instance, "pss", role, role_bytes if pids else 0, pids=pids)
            total += role_bytes
        record(instance, "pss", "total", total if complete else None)
        main = backend.main_pid(instance)
        directory = cgroup_dir_for_pid(main, "memory", ctx.layout) if main else None
        usage = read_memory_usage(directory, ctx.layout) if directory else {}
        cgroup_name = str(directory) if directory else None
        record(
            instance,
            "cgroup_usage",
            "cgroup",
            usage.get("usage_bytes"),
            cgroup=cgroup_name,
            cache_bytes=usage.get("cache_bytes"),
        )
        record(instance, "cgroup_peak", "cgroup", usage.get("peak_bytes"), cgroup=cgroup_name)
        ledger = instance_ledger(backend, instance, ctx.layout)
        for part, value in ledger.parts.items():
            note = ledger.notes.get(part)
            if value is None and part in ledger.not_applicable:
                record(instance, "ledger", part, None, not_applicable=note)
            else:
                record(instance, "ledger", part, value, error=note if value is None else None)
        ledger_total = ledger.parts.get("total")
        if ledger_total is not None:
            totals.append(ledger_total)
    count = len(instances)
    accel = instances[0].labels.get("accel", "n/a") if instances else "n/a"
    drop = (before_bytes - after_bytes) / count if count else None
    extra: dict[str, object] = {}
    if drop is not None and totals:
        mean_total = sum(totals) / len(totals)
        extra = {
            "ledger_total_mean_mib": mean_total / MIB,
            "unexplained_mib": (drop - mean_total) / MIB,
        }
    record(
        None,
        "memavailable_drop",
        "host",
        round(drop) if drop is not None else None,
        before_bytes=before_bytes,
        after_bytes=after_bytes,
        accel=accel,
        **extra,
    )


def _record_slope(
    record: Callable[..., None], points: list[tuple[float, float, float]], drift_removed: bool
) -> None:
    """The group's MemAvailable-against-N slope, as the cost of one more instance."""
    if drift_removed:
        fit = fit_slope_with_drift([points])
    else:
        # (ksm: both) the instances were read twice, then removed together: no ramp down
        fit = fit_slope([[(n, y) for n, _t, y in points]])
    if fit is None:
        return
    # MemAvailable falls as N grows: the cost of one more instance is minus the slope
    record(
        None,
        "memavailable_slope",
        "host",
        -fit.slope * MIB,
        ci_low_mib=-fit.ci_high if fit.ci_high is not None else None,
        ci_high_mib=-fit.ci_low if fit.ci_low is not None else None,
        points=[[n, round(t, 2), round(y, 2)] for n, t, y in points],
        drift_removed=drift_removed,
        df=fit.df,
    )


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

    def group_fit(points: list[tuple[float, float, float]], drift: bool) -> SlopeFit | None:
        if drift:
            return fit_slope_with_drift([points])
        return fit_slope([[(n, y) for n, _t, y in points]])

    # each group is one independent repeat: its slope is one observation, and the
    # interval comes from how the groups' slopes differ (points within a group share the
    # host's momentary state, so a within-group interval would be too narrow)
    fits: dict[tuple[str, str, str], SlopeFit] = {}
    for key, point_groups in groups.items():
        per_group = [f for g in point_groups if (f := group_fit(g, drift_removed.get(key, False)))]
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
                    "finding": (
                        f"{delta:+.1f} MiB per instance [{d_low:+.1f}, {d_high:+.1f}]"
                        if distinguishable and d_low is not None and d_high is not None
                        else "not distinguishable from 0"
                        + ("" if d_low is not None else " (one group: run more rounds)")
                    ),
                },
            )
        )
    return results
