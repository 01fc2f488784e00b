"""VMs through libvirt: the probe as init of a guest booted by direct kernel boot.

Lifecycle per instance: define the domain (``created``), start it (``started``: the
domain is running), then poll its serial console file on the host clock for the first
byte, the BENCH_USERSPACE marker (init started) and READY; the guest powers itself off
(``exited``), and the domain is destroyed if needed and undefined (``removed``), then
bench waits for the qemu process to be gone. Every boot is under a timeout: a failed
guest hangs rather than exits.

The accelerator is chosen by evidence, never by /dev/kvm existing: ``auto`` boots one
KVM guest with a short timeout and uses KVM only if that guest reaches userspace;
otherwise TCG (software emulation). The decision and its reason go on every sample.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.artifacts.guest import (
    USERSPACE_MARKER,
)
from bench.backends.base import (
    NAME_PREFIX,
    Capabilities,
    HostCheck,
    Instance,
    LimitSupport,
    Mechanism,
    cgroup_reader,
    current_layout,
    now_ns,
)
from bench.backends.guest_console import (
    GUEST_DID_NOT_REPORT,
    guest_exit_code,
    guest_uptime_s,
    take_console_bytes,
)
from bench.backends.guest_vm import GuestBackend
from bench.backends.libvirt_xml import DomainConfig, domain_xml, is_bench_domain_xml
from bench.backends.stream import READY_MARKER, has_marker_line
from bench.cgroups.layout import CgroupLayout
from bench.cgroups.readers import cgroup_dir_for_pid, instance_cgroup_dirs, parse_flat_keyed
from bench.errors import BackendUnavailable, BenchError, InstanceError, InstanceTimeout

LIBVIRT_URI = "qemu:///system"
LIBVIRT_FIX = "start libvirtd with ansible/up.sh"
CONSOLE_DIR = Path("/run/bench/libvirt")
QEMU_PIDFILE_DIR = Path("/run/libvirt/qemu")
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")
CONSOLE_POLL_S = 0.001
STATE_POLL_S = 0.002
MACHINE = "pc"
CPU_PERIOD_US = 100_000
MIB = 1024 * 1024
PIDS_NOT_APPLICABLE = (
    "a guest's processes are not host tasks: a pids limit exists only inside the guest "
    "(measured by the guest-internal cgroup v2 check)"
)


def _version_text(number: int) -> str:
    """Turn libvirt's packed version (major*1e6 + minor*1e3 + micro) into text."""
    return f"{number // 1_000_000}.{(number // 1000) % 1000}.{number % 1000}"


class LibvirtBackend(GuestBackend):
    """Boot guests under libvirt's QEMU driver: KVM where it really works, TCG otherwise."""

    name = "libvirt"
    description = (
        "The probe as init of a libvirt guest (Debian cloud kernel + busybox initramfs, "
        "direct kernel boot, machine pc); KVM only where a KVM guest really boots, else TCG."
    )
    capabilities = Capabilities(
        mechanism=Mechanism.VM,
        limits={
            "memory": LimitSupport(
                "live",
                "libvirt memtune hard_limit on the domain's cgroup, set live "
                "(setMemoryParameters AFFECT_LIVE) on the paused guest: memtune in the XML "
                "fails at create where root lacks CAP_SYS_RESOURCE",
            ),
            "cpu": LimitSupport(
                "live",
                "libvirt vcpu_quota/vcpu_period set live on the paused guest; measured on "
                "the vCPU threads",
            ),
            "pids": LimitSupport(None, PIDS_NOT_APPLICABLE),
        },
        roles=("qemu",),
        engine_processes=("libvirtd", "virtlogd"),
        runtime_in_limit=True,
        guest_kernel=True,
        footprint_estimate_mib=40.0,
    )

    def __init__(self, uri: str = LIBVIRT_URI, extra_cmdline: Sequence[str] = ()) -> None:
        super().__init__(extra_cmdline)
        self._uri = uri
        self._conn: Any = None

    # -- availability and preparation -------------------------------------------------

    def check_available(self) -> None:
        """Import libvirt-python and connect to the daemon; say how to fix either."""
        try:
            import libvirt
        except ImportError:
            raise BackendUnavailable(
                self.name,
                "libvirt-python is not installed",
                "pip install -e '.[vm]' (ansible/up.sh does, after installing libvirt-dev)",
            ) from None
        # libvirt prints every error to stderr by default; bench reports them itself
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        try:
            self._conn = libvirt.open(self._uri)
        except libvirt.libvirtError as exc:
            raise BackendUnavailable(
                self.name, f"cannot connect to {self._uri} ({exc.get_error_message()})", LIBVIRT_FIX
            ) from None

    @property
    def conn(self) -> Any:
        """The libvirt connection (opened on first use)."""
        if self._conn is None:
            self.check_available()
        return self._conn

    def close(self) -> None:
        """Close the libvirt connection."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def metadata(self) -> dict[str, Any]:
        """Mechanism, VMM and machine type."""
        return {**super().metadata(), "vmm": "qemu (libvirt)", "machine": MACHINE}

    def doctor_checks(self) -> list[HostCheck]:
        """Libvirt reachable, the guest artefacts build, and whether KVM really boots."""
        checks = []
        try:
            self.check_available()
            conn = self.conn
            checks.append(
                HostCheck(
                    self.name,
                    "ok",
                    f"libvirt {_version_text(conn.getLibVersion())}, "
                    f"QEMU {_version_text(conn.getVersion())}",
                )
            )
        except BenchError as exc:
            self.close()
            return [HostCheck(self.name, "fail", str(exc), getattr(exc, "fix", ""))]
        checks.extend(self.guest_doctor_checks())
        self.close()
        return checks

    def versions(self) -> dict[str, Any]:
        """Libvirt and QEMU versions, the guest kernel, and the accelerator decisions."""
        return {
            "libvirt": _version_text(self.conn.getLibVersion()),
            "qemu": _version_text(self.conn.getVersion()),
            "machine": MACHINE,
            **self.guest_versions(),
        }

    # -- accelerator choice ---------------------------------------------------------

    def _accel_cache_key(self) -> list[object]:
        """A cached KVM decision holds for this libvirt's QEMU (and the same artefacts)."""
        return [self.conn.getVersion()]

    def _kvm_unusable(self) -> str | None:
        """No /dev/kvm, or a libvirt that offers no kvm domain type."""
        reason = super()._kvm_unusable()
        if reason is None and "kvm" not in self.conn.getCapabilities():
            reason = "libvirt offers no 'kvm' domain type here"
        return reason

    def _start_kvm_guest(self, instance: Instance) -> None:
        """Define and start a domain of type kvm."""
        instance.labels["accel"] = "kvm"
        self._define_and_start(instance, "kvm")

    def _wait_userspace(self, instance: Instance, deadline: float) -> None:
        """Read the console file until the userspace marker."""
        self._read_console_until(instance, USERSPACE_MARKER, deadline)

    def _boot_failure_detail(self, instance: Instance) -> str:
        """The last errors of libvirt's qemu log for the domain."""
        errors = _qemu_log_errors(instance.name)
        return f"qemu log: {errors}" if errors else ""

    # -- lifecycle ----------------------------------------------------------------

    def _domain_config(self, instance: Instance, domain_type: str) -> DomainConfig:
        artifacts = self.artifacts
        spec = instance.spec
        return DomainConfig(
            name=instance.name,
            run_id=instance.run_id,
            domain_type=domain_type,
            memory_mib=spec.guest_memory_mib,
            vcpus=spec.vcpus,
            kernel=artifacts.kernel.path,
            initrd=artifacts.initramfs.path,
            cmdline=self.guest_cmdline(instance),
            console_log=CONSOLE_DIR / f"{instance.name}.log",
            machine=MACHINE,
        )

    def _define_and_start(self, instance: Instance, domain_type: str) -> None:
        instance.t_ns["create"] = now_ns()
        self._define(instance, domain_type)
        instance.t_ns["created"] = now_ns()
        self._start(instance)
        instance.t_ns["started"] = now_ns()

    def _define(self, instance: Instance, domain_type: str) -> None:
        config = self._domain_config(instance, domain_type)
        CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            config.console_log.unlink()
        instance.handle = {"domain": None, "console": config.console_log, "fd": None, "pid": None}
        instance.labels.update(
            {
                "accel": "tcg" if domain_type == "qemu" else "kvm",
                "machine": config.machine,
                "guest_kernel": self.artifacts.kernel.version,
                "guest_memory_mib": config.memory_mib,
                "vcpus": config.vcpus,
            }
        )
        try:
            instance.handle["domain"] = self.conn.defineXML(domain_xml(config))
        except Exception as exc:
            raise InstanceError(
                f"domain {instance.name}: define failed: {_libvirt_message(exc)}"
            ) from exc

    def _create(self, instance: Instance) -> None:
        decision = self.accel_decision(instance.spec.accel)
        instance.labels["accel_reason"] = decision.reason
        self._define(instance, "kvm" if decision.accel == "kvm" else "qemu")

    def _start(self, instance: Instance) -> None:
        import libvirt

        spec = instance.spec
        limited = spec.memory_mib is not None or spec.cpus is not None
        # limits are set live, so a limited guest starts paused and runs only once they hold
        flags = libvirt.VIR_DOMAIN_START_PAUSED if limited else 0
        domain = instance.handle["domain"]
        try:
            domain.createWithFlags(flags)
        except Exception as exc:
            raise InstanceError(
                f"domain {instance.name}: start failed: {_libvirt_message(exc)}"
            ) from exc
        with contextlib.suppress(OSError, ValueError):
            pid = int((QEMU_PIDFILE_DIR / f"{instance.name}.pid").read_text().strip())
            instance.handle["pid"] = pid
            instance.labels["qemu_pid"] = pid
        if limited:
            try:
                self.apply_limits(
                    instance,
                    memory_bytes=spec.memory_mib * MIB if spec.memory_mib is not None else None,
                    cpu_cores=spec.cpus,
                )
                domain.resume()
            except Exception as exc:
                raise InstanceError(
                    f"domain {instance.name}: live limits not applied: {_libvirt_message(exc)}"
                ) from exc

    def apply_limits(
        self, instance: Instance, memory_bytes: int | None = None, cpu_cores: float | None = None
    ) -> None:
        """Set a memory hard_limit and/or a vCPU quota on a running (or paused) domain.

        Records what was set (and what the cgroup file then said) in the instance's labels.
        """
        import libvirt

        domain = instance.handle["domain"]
        applied: dict[str, Any] = {}
        if memory_bytes is not None:
            domain.setMemoryParameters(
                {"hard_limit": memory_bytes // 1024}, libvirt.VIR_DOMAIN_AFFECT_LIVE
            )
            applied["hard_limit_bytes"] = memory_bytes // 1024 * 1024
            applied["limit_file_bytes"] = self._memory_limit_file_bytes(instance)
        if cpu_cores is not None:
            domain.setSchedulerParametersFlags(
                {"vcpu_period": CPU_PERIOD_US, "vcpu_quota": round(cpu_cores * CPU_PERIOD_US)},
                libvirt.VIR_DOMAIN_AFFECT_LIVE,
            )
            applied["vcpu_quota_us"] = round(cpu_cores * CPU_PERIOD_US)
            applied["vcpu_period_us"] = CPU_PERIOD_US
        instance.labels["limits_applied"] = applied

    def _memory_limit_file_bytes(self, instance: Instance) -> int | None:
        """What the kernel says the domain cgroup's memory limit now is (the evidence)."""
        pid = self.main_pid(instance)
        layout = current_layout()
        directory = cgroup_dir_for_pid(pid, "memory", layout) if pid else None
        if directory is None:
            return None
        name = "memory.limit_in_bytes" if layout.version == 1 else "memory.max"
        try:
            return int((directory / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def limit_readings(
        self, instance: Instance, layout: CgroupLayout
    ) -> Callable[[], dict[str, Any]]:
        """Memory from qemu's cgroup; CPU from the vCPU threads, where vcpu_quota applies.

        The quota is set per vCPU, so the CPU the limit governs is the vCPU threads' own
        (schedstat, ns), and throttling is read from the vcpu cgroups' cpu.stat.
        """
        pid = self.main_pid(instance)
        if pid is None:
            raise BenchError(f"{instance.name}: qemu's pid is unknown")
        dirs = instance_cgroup_dirs(pid, layout)
        memory = cgroup_reader({k: v for k, v in dirs.items() if k == "memory"}, layout)
        tids = vcpu_threads(pid)
        vcpu_dirs = [d for d in (cgroup_dir_for_pid(t, "cpu", layout) for t in tids) if d]

        def read() -> dict[str, Any]:
            values = memory()
            values["usage_ns"] = thread_cpu_ns(pid, tids)
            throttled = None
            with contextlib.suppress(OSError):
                throttled = sum(
                    parse_flat_keyed((d / "cpu.stat").read_text()).get("nr_throttled", 0)
                    for d in vcpu_dirs
                )
            values["nr_throttled"] = throttled
            return values

        return read

    def host_pids(self, instance: Instance) -> list[int]:
        """The qemu process of the guest (what exists on the host because of it)."""
        pid = (instance.handle or {}).get("pid")
        return [pid] if pid else []

    def main_pid(self, instance: Instance) -> int | None:
        """The guest's qemu process (its cgroup is the domain's machine cgroup)."""
        pid = (instance.handle or {}).get("pid")
        return int(pid) if pid else None

    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        """Qemu is the one host process a guest adds (libvirtd and virtlogd are shared)."""
        return {"qemu": self.host_pids(instance)}

    def _read_console(self, instance: Instance) -> bytes:
        handle = instance.handle
        if handle["fd"] is None:
            try:
                handle["fd"] = os.open(handle["console"], os.O_RDONLY | os.O_NONBLOCK)
            except FileNotFoundError:
                return b""
        chunks = []
        while True:
            data = os.read(handle["fd"], 65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def _read_console_until(self, instance: Instance, marker: str, deadline: float) -> int:
        """Poll the console file until ``marker`` is a line; stamp first byte and userspace."""
        next_state_check = 0.0
        while True:
            data = self._read_console(instance)
            stamp = now_ns()
            if data:
                take_console_bytes(instance, data, stamp)
                if has_marker_line(instance.output, marker):
                    return stamp
            now = time.monotonic()
            if now >= deadline:
                raise InstanceTimeout(
                    f"domain {instance.name}: no {marker} line before the timeout; "
                    f"console tail: {_tail(instance)!r}"
                )
            if now >= next_state_check:
                next_state_check = now + 0.05
                if not self._is_active(instance):
                    # drain what the guest wrote before it stopped
                    instance.output.extend(self._read_console(instance))
                    if has_marker_line(instance.output, marker):
                        return now_ns()
                    raise InstanceError(
                        f"domain {instance.name}: stopped before {marker}; "
                        f"console tail: {_tail(instance)!r}"
                    )
            time.sleep(CONSOLE_POLL_S)

    def _is_active(self, instance: Instance) -> bool:
        domain = (instance.handle or {}).get("domain")
        if domain is None:
            return False
        try:
            return bool(domain.isActive())
        except Exception:
            return False

    def _wait_ready(self, instance: Instance, deadline: float) -> int:
        stamp = self._read_console_until(instance, READY_MARKER, deadline)
        uptime = guest_uptime_s(instance.output)
        if uptime is not None:
            # the guest's own clock: informative only, never used for host figures
            instance.labels["guest_uptime_at_userspace_s"] = uptime
        return stamp

    def exit_details(self, instance: Instance) -> dict[str, Any]:
        """How the domain ended (libvirt state + reason) and what the guest's init reported.

        A guest whose qemu the host OOM-killed ends 'shutoff (crashed)' with no BENCH_EXIT
        line; a payload killed inside the guest ends with BENCH_EXIT 137 and a clean poweroff.
        """
        import libvirt

        details: dict[str, Any] = {}
        domain = (instance.handle or {}).get("domain")
        if domain is not None:
            with contextlib.suppress(Exception):
                state, reason = domain.state()
                details["domain_state"] = _STATE_NAMES.get(state, str(state))
                if state == libvirt.VIR_DOMAIN_SHUTOFF:
                    details["shutoff_reason"] = _SHUTOFF_REASONS.get(reason, str(reason))
        details["guest_exit_code"] = guest_exit_code(instance.output)
        # qemu killed by the host: the domain crashed and the guest never reported an exit
        details["killed_by_host"] = (
            details.get("shutoff_reason") == "crashed" and details["guest_exit_code"] is None
        )
        details["oom_killed"] = None
        return details

    def _wait_exit(self, instance: Instance, deadline: float) -> int:
        while self._is_active(instance):
            if time.monotonic() >= deadline:
                raise InstanceTimeout(
                    f"domain {instance.name}: guest did not power off before the timeout"
                )
            time.sleep(STATE_POLL_S)
        instance.output.extend(self._read_console(instance))
        code = guest_exit_code(instance.output)
        # no BENCH_EXIT line: the guest never reported (e.g. its qemu was killed by the host)
        return code if code is not None else GUEST_DID_NOT_REPORT

    def _remove(self, instance: Instance) -> None:
        handle = instance.handle or {}
        domain = handle.get("domain")
        errors = []
        if domain is not None:
            if self._is_active(instance):
                try:
                    domain.destroy()
                    instance.t_ns["destroyed"] = now_ns()
                except Exception as exc:
                    errors.append(f"destroy: {_libvirt_message(exc)}")
            try:
                domain.undefine()
            except Exception as exc:
                if not _is_no_domain(exc):  # already gone (e.g. swept) is not an error
                    errors.append(f"undefine: {_libvirt_message(exc)}")
        elif instance.name:
            # define may have taken effect even if its call failed: look it up by name
            errors.extend(self._remove_by_name(instance.name))
        if handle.get("fd") is not None:
            with contextlib.suppress(OSError):
                os.close(handle["fd"])
            handle["fd"] = None
        if handle.get("console") is not None:
            with contextlib.suppress(OSError):
                Path(handle["console"]).unlink()
        if errors:
            raise InstanceError(f"domain {instance.name}: {'; '.join(errors)}")

    def _remove_by_name(self, name: str) -> list[str]:
        try:
            domain = self.conn.lookupByName(name)
        except Exception:
            return []
        errors = []
        with contextlib.suppress(Exception):
            if domain.isActive():
                domain.destroy()
        try:
            domain.undefine()
        except Exception as exc:
            errors.append(f"undefine: {_libvirt_message(exc)}")
        return errors

    def _wait_gone(self, instance: Instance, deadline: float) -> None:
        pid = (instance.handle or {}).get("pid")
        if not pid:
            return
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            time.sleep(STATE_POLL_S)
        raise InstanceError(f"domain {instance.name}: qemu pid {pid} still alive after removal")

    # -- finding bench's domains ------------------------------------------------------

    def _bench_domains(self) -> list[Any]:
        found = []
        for domain in self.conn.listAllDomains(0):
            name = domain.name()
            if name.startswith(NAME_PREFIX):
                found.append(domain)
                continue
            with contextlib.suppress(Exception):
                if is_bench_domain_xml(domain.XMLDesc(0)):
                    found.append(domain)
        return found

    def leftovers(self) -> list[str]:
        """Names of bench's domains that exist now (running or only defined)."""
        return sorted(domain.name() for domain in self._bench_domains())

    def _remove_named(self, names: list[str], everything: bool) -> None:
        """Destroy and undefine these domains of bench's; remove their console logs."""
        wanted = set(names)
        for domain in self._bench_domains():
            name = domain.name()
            if name not in wanted:
                continue
            with contextlib.suppress(Exception):
                if domain.isActive():
                    domain.destroy()
            with contextlib.suppress(Exception):
                domain.undefine()
            for directory in (CONSOLE_DIR, QEMU_LOG_DIR):
                with contextlib.suppress(OSError):
                    (directory / f"{name}.log").unlink()

    def sweep(self) -> list[str]:
        """Destroy and undefine every bench domain; remove stale console logs."""
        removed = []
        for domain in self._bench_domains():
            with contextlib.suppress(Exception):
                if domain.isActive():
                    domain.destroy()
            with contextlib.suppress(Exception):
                domain.undefine()
            removed.append(domain.name())
        # console logs, and libvirt's per-domain qemu logs (one file per unique name)
        for directory in (CONSOLE_DIR, QEMU_LOG_DIR):
            if directory.is_dir():
                for log in directory.glob(f"{NAME_PREFIX}*.log"):
                    with contextlib.suppress(OSError):
                        log.unlink()
        return sorted(removed)


def vcpu_threads(pid: int) -> list[int]:
    """Thread ids of qemu's vCPU threads (named 'CPU n/TCG' or 'CPU n/KVM')."""
    found = []
    with contextlib.suppress(OSError):
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


_STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}
_SHUTOFF_REASONS = {
    0: "unknown",
    1: "shutdown",
    2: "destroyed",
    3: "crashed",
    4: "migrated",
    5: "saved",
    6: "failed",
    7: "from snapshot",
    8: "daemon",
}


def _qemu_log_errors(name: str, limit: int = 3) -> str:
    """The last error lines libvirt's qemu log has for a domain (evidence for the report)."""
    try:
        lines = (QEMU_LOG_DIR / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.strip() for line in lines if "error" in line.lower() or "warning:" in line]
    return " | ".join(errors[-limit:])[:400]


def _tail(instance: Instance, limit: int = 300) -> str:
    return instance.output_text(limit).strip()


def _is_no_domain(exc: BaseException) -> bool:
    """True when libvirt says the domain does not exist (any more)."""
    getter = getattr(exc, "get_error_code", None)
    if callable(getter):
        with contextlib.suppress(Exception):
            import libvirt

            return bool(getter() == libvirt.VIR_ERR_NO_DOMAIN)
    return "Domain not found" in str(exc)


def _libvirt_message(exc: BaseException) -> str:
    getter = getattr(exc, "get_error_message", None)
    if callable(getter):
        with contextlib.suppress(Exception):
            return str(getter())
    return str(exc)
