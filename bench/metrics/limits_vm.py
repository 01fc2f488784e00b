"""Limit enforcement for libvirt guests: limits applied LIVE on the qemu cgroup.

HOST-NOTES: memtune hard_limit in the domain XML fails at create on hosts where root
lacks CAP_SYS_RESOURCE, so limits are set live:
- memory: a calibration boot measures the qemu cgroup's anonymous-memory peak; the
  checked guests start PAUSED, get ``hard_limit = calibration peak + L`` through
  setMemoryParameters(AFFECT_LIVE), then resume, and the guest allocates more (or, for the
  control, less) than L. Enforced = the host killed qemu for the cgroup's limit (domain
  'shutoff (crashed)', no BENCH_EXIT line, memory.oom_control oom_kill sampled) and peak
  usage stayed within the limit + tolerance.
- cpu: vcpu_quota/vcpu_period set live after READY; measured = CPU time of the vCPU
  threads (/proc/PID/task/TID/schedstat, ns) over wall time; throttling from the vcpu
  cgroups' cpu.stat.
- pids: the limit exists only inside the guest: not applicable on the host side.
A payload killed inside the guest (its own kernel's OOM) is a different row from a qemu
killed by the host: the guest's init reports the former as BENCH_EXIT 137.
"""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path
from typing import Any

from bench.backends.base import Instance
from bench.cgroups.guest_v2 import (
    TIME_KEY,
    cpu_max_value,
    cpu_throttled_rise,
    cpu_usage_rate,
    guest_cgroup_param,
    memory_max_bytes,
    memory_oom_killed,
    memory_oom_kills,
    memory_peak_bytes,
    parse_cgroup_dump,
    parse_cgroup_errors,
    parse_cgroup_samples,
    pids_max_events,
    pids_peak,
)
from bench.cgroups.readers import (
    cgroup_dir_for_pid,
    parse_flat_keyed,
    read_memory_events,
    read_memory_usage,
)
from bench.cgroups.sampler import CgroupSampler, Series
from bench.errors import BenchError
from bench.metrics.limits import (
    LimitCheck,
    LimitRunner,
    cpu_check,
    cpu_verdict,
    downsample,
    memory_verdict,
    parse_fork_output,
    pids_verdict,
)
from bench.metrics.procmem import MIB
from bench.scenario import InstanceSpec, Payload

CPU_PERIOD_US = 100_000
PIDS_NOT_APPLICABLE = (
    "a guest's processes are not host tasks: a pids limit exists only inside the guest "
    "(measured by the guest-internal cgroup v2 check)"
)


def vcpu_threads(pid: int) -> list[int]:
    """Thread ids of qemu's vCPU threads (named 'CPU n/TCG' or 'CPU n/KVM')."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().startswith("CPU "):
                found.append(int(task.name))
    return sorted(found)


def thread_cpu_ns(pid: int, tids: list[int]) -> int | None:
    """Summed on-CPU time of threads, ns, from schedstat (None once qemu is gone)."""
    total = 0
    try:
        for tid in tids:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


class VmLimitRunner(LimitRunner):
    """The libvirt flavour of the limit checks (see the module docstring)."""

    def _guest_spec(self, payload: Payload, memory_mib: int | None = None) -> InstanceSpec:
        update: dict[str, Any] = {"payload": payload}
        if memory_mib is not None:
            update["guest_memory_mib"] = max(self.case.spec.guest_memory_mib, memory_mib)
        return self.case.spec.model_copy(update=update)

    def _boot(self, spec: InstanceSpec, paused: bool = False) -> Instance:
        name = self.names()
        instance = Instance(self.backend.name, name, spec, self.run_id)
        instance.extra["start_paused"] = paused
        self.live[name] = (self.backend, instance)
        self.backend.start(spec, name, self.run_id, instance)
        return instance

    def _finish(self, instance: Instance) -> None:
        try:
            self.backend.stop(instance)
            self.backend.wait_gone(instance)
        finally:
            self.live.pop(instance.name, None)

    def _memory_dir(self, instance: Instance) -> Path:
        pid = self.backend.main_pid(instance)
        directory = cgroup_dir_for_pid(pid, "memory", self.layout) if pid else None
        if directory is None:
            raise BenchError(f"{instance.name}: qemu's memory cgroup not found")
        return directory

    def _sample_memory(self, directory: Path) -> CgroupSampler:
        def read() -> dict[str, Any]:
            return {
                **read_memory_usage(directory, self.layout),
                **read_memory_events(directory, self.layout),
            }

        return CgroupSampler(read, self.options.sample_interval_s).start()

    def memory(self) -> list[LimitCheck]:
        """Calibrate, then over-limit and control guests under a live hard_limit."""
        import libvirt

        options = self.options
        guest_mib = options.memory_alloc_mib + 128
        # calibration: the same guest, allocating the control amount, no limit
        calibration = self._boot(
            self._guest_spec(
                Payload(mode="alloc", alloc_mib=options.memory_control_mib, seconds=1.0), guest_mib
            )
        )
        try:
            directory = self._memory_dir(calibration)
            sampler = self._sample_memory(directory)
            self.backend.wait_ready(calibration, self.timeout_s)
            self.backend.wait_exit(calibration, self.timeout_s)
            # anonymous memory, not usage: page cache charged to qemu's cgroup (the kernel
            # and initramfs files, if nobody else cached them first) varies from boot to
            # boot and is reclaimable, so it would make the limit a coin toss
            calibration_peak = sampler.stop().maximum("anon_bytes")
        finally:
            self._finish(calibration)
        if calibration_peak is None:
            raise BenchError("calibration guest: qemu cgroup usage could not be sampled")
        limit_bytes = calibration_peak + options.memory_limit_mib * MIB
        checks = []
        for kind, alloc_mib in (
            ("memory", options.memory_alloc_mib),
            ("memory_control", options.memory_control_mib),
        ):
            instance = self._boot(
                self._guest_spec(
                    Payload(mode="alloc", alloc_mib=alloc_mib, seconds=1.0), guest_mib
                ),
                paused=True,
            )
            series = Series()
            details: dict[str, Any] = {}
            error = None
            try:
                directory = self._memory_dir(instance)
                domain = instance.handle["domain"]
                domain.setMemoryParameters(
                    {"hard_limit": limit_bytes // 1024}, libvirt.VIR_DOMAIN_AFFECT_LIVE
                )
                applied = read_memory_usage(directory, self.layout)
                limit_file = (
                    (directory / "memory.limit_in_bytes")
                    if self.layout.version == 1
                    else (directory / "memory.max")
                )
                details["limit_file_bytes"] = int(limit_file.read_text().split()[0])
                sampler = self._sample_memory(directory)
                domain.resume()
                try:
                    self.backend.wait_ready(instance, self.timeout_s)
                    self.backend.wait_exit(instance, self.timeout_s)
                except BenchError as exc:
                    details["wait_error"] = str(exc)
                series = sampler.stop()
                details.update(self.backend.exit_details(instance))
                details["usage_at_limit_bytes"] = applied.get("usage_bytes")
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                self._finish(instance)
            peak = series.maximum("usage_bytes")
            oom_kills = series.maximum("oom_kill")
            host_killed = (
                details.get("shutoff_reason") == "crashed"
                and details.get("guest_exit_code") is None
            )
            evidence = {
                "host_killed_qemu": host_killed,
                "oom_kill_count": oom_kills,
                "failcnt": series.maximum("failcnt"),
                "domain_state": details.get("domain_state"),
                "shutoff_reason": details.get("shutoff_reason"),
                "guest_exit_code": details.get("guest_exit_code"),
                "calibration_anon_peak_mib": calibration_peak / MIB,
                "hard_limit_mib": limit_bytes / MIB,
                "limit_file_bytes": details.get("limit_file_bytes"),
                "headroom_mib": options.memory_limit_mib,
                "alloc_mib": alloc_mib,
                "guest_memory_mib": guest_mib,
                "samples": len(series.points),
                "applied": "live, setMemoryParameters(AFFECT_LIVE) while paused",
                "accel": instance.labels.get("accel", "n/a"),
            }
            if kind == "memory":
                enforced = memory_verdict(
                    host_killed and (oom_kills or 0) > 0,
                    peak,
                    limit_bytes,
                    options.memory_tolerance_mib * MIB,
                )
            else:
                enforced = (not host_killed) and details.get("guest_exit_code") == 0
            origin = series.points[0][0] if series.points else 0
            checks.append(
                LimitCheck(
                    kind,
                    limit_bytes / MIB,
                    "MiB",
                    peak / MIB if peak is not None else None,
                    "MiB",
                    enforced,
                    evidence,
                    {"usage_mib": downsample(series.values("usage_bytes"), origin, 1 / MIB)},
                    error=error,
                )
            )
        checks.append(self._guest_row(lambda: GuestV2Checks(self).memory(), "memory_guest_v2"))
        return checks

    def _guest_row(self, check: Any, kind: str) -> LimitCheck:
        try:
            result: LimitCheck = check()
        except Exception as exc:
            return LimitCheck(kind, None, "", None, "", False, error=f"{type(exc).__name__}: {exc}")
        result.evidence.setdefault("accel", self._accel())
        return result

    def _accel(self) -> str:
        decision = self.backend.accel_decision(self.case.spec.accel)  # type: ignore[attr-defined]
        return str(decision.accel)

    def cpu(self) -> list[LimitCheck]:
        """vcpu_quota set live after READY; vCPU threads' CPU time measured over wall time."""
        import libvirt

        options = self.options
        checks = []
        for quota in options.cpu_quotas:
            spec = self._guest_spec(
                Payload(mode="burn", threads=options.cpu_threads, seconds=options.cpu_seconds)
            )
            instance = self._boot(spec)
            error = None
            usage: list[tuple[int, Any]] = []
            throttled: list[int] = []
            try:
                self.backend.wait_ready(instance, self.timeout_s)
                pid = self.backend.main_pid(instance)
                assert pid is not None
                tids = vcpu_threads(pid)
                instance.handle["domain"].setSchedulerParametersFlags(
                    {"vcpu_period": CPU_PERIOD_US, "vcpu_quota": round(quota * CPU_PERIOD_US)},
                    libvirt.VIR_DOMAIN_AFFECT_LIVE,
                )
                vcpu_dirs = [
                    d for d in (cgroup_dir_for_pid(t, "cpu", self.layout) for t in tids) if d
                ]
                deadline = time.monotonic() + options.cpu_seconds
                while time.monotonic() < deadline:
                    value = thread_cpu_ns(pid, tids)
                    if value is None:
                        break
                    usage.append((time.monotonic_ns(), value))
                    with contextlib.suppress(OSError):
                        throttled.append(
                            sum(
                                parse_flat_keyed((d / "cpu.stat").read_text()).get(
                                    "nr_throttled", 0
                                )
                                for d in vcpu_dirs
                            )
                        )
                    time.sleep(options.sample_interval_s)
                with contextlib.suppress(BenchError):
                    self.backend.wait_exit(instance, self.timeout_s)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                self._finish(instance)
            delta = throttled[-1] - throttled[0] if len(throttled) >= 2 else None
            evidence = {
                "vcpus": spec.vcpus,
                "measured_on": "qemu vCPU threads (schedstat)",
                "applied": "live, setSchedulerParametersFlags vcpu_quota/vcpu_period",
                "accel": instance.labels.get("accel", "n/a"),
            }
            checks.append(cpu_check(quota, usage, delta, options, evidence, error))
            checks.append(
                self._guest_row(functools.partial(GuestV2Checks(self).cpu, quota), "cpu_guest_v2")
            )
        return checks

    def pids(self) -> list[LimitCheck]:
        """Not applicable on the host side for a VM (with the reason); measured in the guest."""
        guest = self._guest_row(lambda: GuestV2Checks(self).pids(), "pids_guest_v2")
        return [
            LimitCheck(
                "pids",
                self.options.pids_limit,
                "tasks",
                None,
                "tasks",
                None,
                {"reason": PIDS_NOT_APPLICABLE},
            ),
            guest,
        ]


class GuestV2Checks:
    """The guest-internal view: the same limits as cgroup v2 files inside the guest.

    The guest's init mounts cgroup2, writes the limit and runs the payload in that group,
    then prints the group's files over the serial console; the host parses them with the
    same readers it uses on v2 hosts. This is also how bench's v2 logic meets a real v2
    kernel on hosts that are themselves v1. Guest OOM (the payload killed inside the guest)
    is its own row, distinct from qemu killed by the host.
    """

    def __init__(self, runner: VmLimitRunner) -> None:
        self.runner = runner

    def _boot(self, limits: dict[str, str], payload: Payload) -> tuple[str, int | None]:
        runner = self.runner
        spec = runner._guest_spec(payload, max(runner.case.spec.guest_memory_mib, 128))
        name = runner.names()
        instance = Instance(runner.backend.name, name, spec, runner.run_id)
        instance.extra["cmdline_extra"] = [guest_cgroup_param(limits)]
        runner.live[name] = (runner.backend, instance)
        try:
            runner.backend.start(spec, name, runner.run_id, instance)
            runner.backend.wait_ready(instance, runner.timeout_s)
            code = runner.backend.wait_exit(instance, runner.timeout_s)
        finally:
            runner._finish(instance)
        return instance.output_text(200_000), code

    def memory(self) -> LimitCheck:
        """memory.max = L inside the guest; the payload allocates more than L."""
        options = self.runner.options
        limit = options.memory_limit_mib * MIB
        console, code = self._boot(
            {"memory.max": str(limit)},
            Payload(mode="alloc", alloc_mib=options.memory_alloc_mib, seconds=1.0),
        )
        dump = parse_cgroup_dump(console)
        peak = memory_peak_bytes(dump)
        killed = memory_oom_killed(dump) and code == 137
        return LimitCheck(
            "memory_guest_v2",
            options.memory_limit_mib,
            "MiB",
            peak / MIB if peak is not None else None,
            "MiB",
            memory_verdict(killed, peak, limit, options.memory_tolerance_mib * MIB),
            {
                "guest_exit_code": code,
                "oom_kill_count": memory_oom_kills(dump),
                "memory_max_file": memory_max_bytes(dump),
                "where": "guest cgroup v2",
                "errors": parse_cgroup_errors(console),
            },
            {"usage_mib": _guest_series(console, "memory.current", 1 / MIB)},
        )

    def pids(self) -> LimitCheck:
        """pids.max = P inside the guest; the payload forks past it."""
        options = self.runner.options
        console, code = self._boot(
            {"pids.max": str(options.pids_limit)},
            Payload(mode="fork", forks=options.pids_forks, seconds=1.0),
        )
        dump = parse_cgroup_dump(console)
        fork = parse_fork_output(console)
        max_events = pids_max_events(dump)
        return LimitCheck(
            "pids_guest_v2",
            options.pids_limit,
            "tasks",
            fork["refused_after"] + 1 if fork["refused_after"] is not None else pids_peak(dump),
            "tasks",
            pids_verdict(fork, options.pids_limit, max_events),
            {
                **fork,
                "pids_events_max": max_events,
                "pids_peak": pids_peak(dump),
                "guest_exit_code": code,
                "where": "guest cgroup v2",
            },
            {"tasks": _guest_series(console, "pids.current")},
        )

    def cpu(self, quota: float) -> LimitCheck:
        """cpu.max = Q inside the guest; cores = guest CPU time / guest time (a ratio)."""
        options = self.runner.options
        console, code = self._boot(
            {"cpu.max": cpu_max_value(round(quota * CPU_PERIOD_US), CPU_PERIOD_US)},
            Payload(mode="burn", threads=options.cpu_threads, seconds=options.cpu_seconds),
        )
        samples = parse_cgroup_samples(console)
        measured = cpu_usage_rate(samples)
        throttled = cpu_throttled_rise(samples)
        return LimitCheck(
            "cpu_guest_v2",
            quota,
            "cores",
            measured,
            "cores",
            cpu_verdict(measured, quota, throttled, options.cpu_tolerance),
            {
                "nr_throttled_delta": throttled,
                "guest_exit_code": code,
                "where": "guest cgroup v2",
                "clock": "guest CPU time / guest time: a ratio of guest clocks only",
            },
            {"usage_usec": _guest_series(console, "usage_usec")},
        )


def _guest_series(console: str, key: str, scale: float = 1.0) -> list[list[float]]:
    samples = parse_cgroup_samples(console)
    points = [(int(s[TIME_KEY]) * 1_000_000, s[key]) for s in samples if key in s]
    return downsample(points, points[0][0] if points else 0, scale)
