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
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.artifacts.guest import (
    EXIT_MARKER,
    UPTIME_MARKER,
    USERSPACE_MARKER,
    GuestArtifacts,
    boot_cmdline,
    guest_artifacts,
)
from bench.artifacts.probe import cache_dir
from bench.backends.base import NAME_PREFIX, Backend, Instance, now_ns
from bench.backends.libvirt_xml import DomainConfig, domain_xml, is_bench_domain_xml
from bench.backends.stream import READY_MARKER, has_marker_line
from bench.errors import BackendUnavailable, BenchError, InstanceError, InstanceTimeout
from bench.scenario import InstanceSpec, Payload

LIBVIRT_URI = "qemu:///system"
LIBVIRT_FIX = "start libvirtd with ansible/up.sh"
CONSOLE_DIR = Path("/run/bench/libvirt")
QEMU_PIDFILE_DIR = Path("/run/libvirt/qemu")
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")
CONSOLE_POLL_S = 0.001
STATE_POLL_S = 0.002
KVM_PROBE_TIMEOUT_S = 20.0
MACHINE = "pc"
GUEST_DID_NOT_REPORT = -1


@dataclass(frozen=True)
class AccelDecision:
    """Which accelerator guests use, and the evidence for it."""

    accel: str  # "kvm" | "tcg"
    requested: str  # "auto" | "kvm" | "tcg"
    reason: str
    probe_boot_s: float | None = None
    decided_at_utc: str | None = None
    cache_key: str | None = None


def _version_text(number: int) -> str:
    """Turn libvirt's packed version (major*1e6 + minor*1e3 + micro) into text."""
    return f"{number // 1_000_000}.{(number // 1000) % 1000}.{number % 1000}"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


class LibvirtBackend(Backend):
    """Boot guests under libvirt's QEMU driver: KVM where it really works, TCG otherwise."""

    name = "libvirt"

    def __init__(self, uri: str = LIBVIRT_URI, extra_cmdline: Sequence[str] = ()) -> None:
        self._uri = uri
        self._conn: Any = None
        self._artifacts: GuestArtifacts | None = None
        self._extra_cmdline = list(extra_cmdline)
        self._decisions: dict[str, AccelDecision] = {}

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

    @property
    def artifacts(self) -> GuestArtifacts:
        """Guest kernel + initramfs (built or taken from the cache on first use)."""
        if self._artifacts is None:
            self._artifacts = guest_artifacts()
        return self._artifacts

    def prepare(self, specs: Sequence[InstanceSpec]) -> dict[str, str]:
        """Build the guest artefacts and decide the accelerator for every requested one."""
        artifacts = self.artifacts
        for requested in sorted({spec.accel for spec in specs} or {"auto"}):
            self.accel_decision(requested)
        labels = {
            "guest_kernel": artifacts.kernel.version,
            "guest_kernel_sha256": artifacts.kernel.sha256,
            "initramfs_sha256": artifacts.initramfs.sha256,
            "machine": MACHINE,
        }
        for requested, decision in self._decisions.items():
            labels[f"accel[{requested}]"] = f"{decision.accel}: {decision.reason}"
        return labels

    def versions(self) -> dict[str, Any]:
        """Libvirt and QEMU versions, the guest kernel, and the accelerator decisions."""
        return {
            "libvirt": _version_text(self.conn.getLibVersion()),
            "qemu": _version_text(self.conn.getVersion()),
            "machine": MACHINE,
            "guest_kernel": self.artifacts.kernel.version,
            "guest_kernel_package": self.artifacts.kernel.package,
            "guest_cmdline_base": self.artifacts.cmdline_base,
            "accel": {k: asdict(v) for k, v in self._decisions.items()},
        }

    # -- accelerator choice ---------------------------------------------------------

    def accel_decision(self, requested: str = "auto") -> AccelDecision:
        """Decide KVM or TCG for ``requested``; ``auto`` needs a real KVM boot as evidence."""
        if requested in self._decisions:
            return self._decisions[requested]
        if requested == "tcg":
            decision = AccelDecision("tcg", requested, "TCG requested by the scenario")
        elif requested == "kvm":
            decision = AccelDecision("kvm", requested, "KVM requested by the scenario (not probed)")
        else:
            decision = self._probe_kvm_cached()
        self._decisions[requested] = decision
        return decision

    def _probe_cache_path(self) -> tuple[Path, str]:
        artifacts = self.artifacts
        key_source = json.dumps(
            [
                _boot_id(),
                self.conn.getVersion(),
                artifacts.kernel.sha256,
                artifacts.initramfs.sha256,
            ]
        )
        key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
        return cache_dir() / "accel-probe" / f"{key}.json", key

    def _probe_kvm_cached(self) -> AccelDecision:
        path, key = self._probe_cache_path()
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(path.read_text())
            cached = AccelDecision(**data)
            return AccelDecision(
                cached.accel,
                "auto",
                f"{cached.reason} (probe cached from {cached.decided_at_utc}, same host boot)",
                cached.probe_boot_s,
                cached.decided_at_utc,
                key,
            )
        decision = self.probe_kvm()
        decision = AccelDecision(
            decision.accel,
            "auto",
            decision.reason,
            decision.probe_boot_s,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            key,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(decision)))
        return decision

    def probe_kvm(self, timeout_s: float = KVM_PROBE_TIMEOUT_S) -> AccelDecision:
        """Boot one KVM guest; KVM is usable only if it reaches userspace before the timeout."""
        if not os.path.exists("/dev/kvm"):
            return AccelDecision("tcg", "auto", "no /dev/kvm on this host")
        if "kvm" not in self.conn.getCapabilities():
            return AccelDecision("tcg", "auto", "libvirt offers no 'kvm' domain type here")
        spec = InstanceSpec(payload=Payload(mode="ready"))
        name = f"{NAME_PREFIX}kvmprobe-{os.getpid()}"
        instance = Instance(self.name, name, spec, "kvm-probe")
        instance.labels["accel"] = "kvm"
        started = time.monotonic()
        try:
            self._define_and_start(instance, "kvm")
            self._read_console_until(instance, USERSPACE_MARKER, time.monotonic() + timeout_s)
        except InstanceTimeout:
            tail = _tail(instance)
            with contextlib.suppress(Exception):
                self.stop(instance)
            qemu_errors = _qemu_log_errors(name)
            return AccelDecision(
                "tcg",
                "auto",
                f"a KVM guest did not reach userspace within {timeout_s:.0f} s"
                + (f" (console: {tail!r})" if tail else " (no console output)")
                + (f"; qemu log: {qemu_errors}" if qemu_errors else ""),
            )
        except (InstanceError, BenchError) as exc:
            return AccelDecision("tcg", "auto", f"a KVM guest failed to boot: {exc}")
        except Exception as exc:  # libvirt refusing the domain is evidence too
            return AccelDecision(
                "tcg", "auto", f"a KVM guest could not start: {_libvirt_message(exc)}"
            )
        finally:
            with contextlib.suppress(Exception):
                self.stop(instance)
                self.wait_gone(instance)
        return AccelDecision(
            "kvm", "auto", "a KVM guest reached userspace", round(time.monotonic() - started, 3)
        )

    # -- lifecycle ----------------------------------------------------------------

    def _domain_config(self, instance: Instance, domain_type: str) -> DomainConfig:
        artifacts = self.artifacts
        spec = instance.spec
        cmdline_base = artifacts.cmdline_base
        extra = [*self._extra_cmdline, *instance.extra.get("cmdline_extra", [])]
        if extra:
            cmdline_base = f"{cmdline_base} {' '.join(extra)}"
        return DomainConfig(
            name=instance.name,
            run_id=instance.run_id,
            domain_type=domain_type,
            memory_mib=spec.guest_memory_mib,
            vcpus=spec.vcpus,
            kernel=artifacts.kernel.path,
            initrd=artifacts.initramfs.path,
            cmdline=boot_cmdline(cmdline_base, spec.payload.argv()),
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

        flags = libvirt.VIR_DOMAIN_START_PAUSED if instance.extra.get("start_paused") else 0
        try:
            instance.handle["domain"].createWithFlags(flags)
        except Exception as exc:
            raise InstanceError(
                f"domain {instance.name}: start failed: {_libvirt_message(exc)}"
            ) from exc
        with contextlib.suppress(OSError, ValueError):
            pid = int((QEMU_PIDFILE_DIR / f"{instance.name}.pid").read_text().strip())
            instance.handle["pid"] = pid
            instance.labels["qemu_pid"] = pid

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
                if "first_console_byte" not in instance.t_ns:
                    instance.t_ns["first_console_byte"] = stamp
                instance.output.extend(data)
                if "userspace" not in instance.t_ns and has_marker_line(
                    instance.output, USERSPACE_MARKER
                ):
                    instance.t_ns["userspace"] = stamp
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
        uptime = re.search(rb"^" + UPTIME_MARKER.encode() + rb" ([0-9.]+)", instance.output, re.M)
        if uptime:
            # the guest's own clock: informative only, never used for host figures
            instance.labels["guest_uptime_at_userspace_s"] = float(uptime.group(1))
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
        code = re.search(rb"^" + EXIT_MARKER.encode() + rb" (-?[0-9]+)", instance.output, re.M)
        details["guest_exit_code"] = int(code.group(1)) if code else None
        return details

    def _wait_exit(self, instance: Instance, deadline: float) -> int:
        while self._is_active(instance):
            if time.monotonic() >= deadline:
                raise InstanceTimeout(
                    f"domain {instance.name}: guest did not power off before the timeout"
                )
            time.sleep(STATE_POLL_S)
        instance.output.extend(self._read_console(instance))
        code = re.search(rb"^" + EXIT_MARKER.encode() + rb" (-?[0-9]+)", instance.output, re.M)
        # no BENCH_EXIT line: the guest never reported (e.g. its qemu was killed by the host)
        return int(code.group(1)) if code else GUEST_DID_NOT_REPORT

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
