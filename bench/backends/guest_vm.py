"""What every VM backend shares: bench's guest, the accelerator decision, their doctor rows.

``GuestBackend`` is the abstract base of the backends whose instances boot bench's guest
kernel and initramfs (libvirt, qemu-microvm). It owns the artefacts (built on first use,
never timed), the kernel command line of one guest (the artefacts' base line, the
backend's and the instance's extra parameters, the payload after ``--``), the
accelerator decision per requested value (KVM only on the evidence of a real KVM boot:
``bench.backends.accel``), what ``prepare`` and ``versions`` report about them, and the
doctor rows for the artefacts and KVM. A subclass says how it boots (``probe_kvm``) and
what its accelerator decision depends on (``_accel_cache_key``).
"""

from __future__ import annotations

import contextlib
import os
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.artifacts.guest import GuestArtifacts, boot_cmdline, guest_artifacts
from bench.backends.accel import AccelDecision, cached_probe, requested_decision
from bench.backends.base import NAME_PREFIX, Backend, HostCheck, Instance
from bench.errors import BenchError, InstanceTimeout
from bench.scenario import InstanceSpec, Payload

KVM_PROBE_TIMEOUT_S = 20.0


class GuestBackend(Backend):
    """A backend whose instances are guests of bench's kernel + initramfs (see module)."""

    def __init__(self, extra_cmdline: Sequence[str] = ()) -> None:
        self._artifacts: GuestArtifacts | None = None
        self._extra_cmdline = list(extra_cmdline)
        self._decisions: dict[str, AccelDecision] = {}

    @property
    def artifacts(self) -> GuestArtifacts:
        """Guest kernel + initramfs (built or taken from the cache on first use)."""
        if self._artifacts is None:
            self._artifacts = guest_artifacts()
        return self._artifacts

    def guest_cmdline(self, instance: Instance) -> str:
        """The guest kernel's command line: base, extra parameters, then the payload."""
        cmdline_base = self.artifacts.cmdline_base
        extra = [*self._extra_cmdline, *instance.extra.get("cmdline_extra", [])]
        if extra:
            cmdline_base = f"{cmdline_base} {' '.join(extra)}"
        return boot_cmdline(cmdline_base, instance.spec.payload.argv())

    # -- the accelerator ----------------------------------------------------------------

    @abstractmethod
    def _accel_cache_key(self) -> list[object]:
        """What a cached KVM decision depends on besides the host boot (VMM version ...)."""

    def _kvm_unusable(self) -> str | None:
        """Why KVM cannot even be tried here (None: boot a guest to find out)."""
        if not os.path.exists("/dev/kvm"):
            return "no /dev/kvm on this host"
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "/dev/kvm is not readable and writable"
        return None

    @abstractmethod
    def _start_kvm_guest(self, instance: Instance) -> None:
        """Create and start ``instance`` under KVM, whatever the decision says."""

    @abstractmethod
    def _wait_userspace(self, instance: Instance, deadline: float) -> None:
        """Wait until the guest's init printed its userspace marker."""

    def _boot_failure_detail(self, instance: Instance) -> str:
        """What the VMM said about a boot that failed (its log or stderr), for the reason."""
        return ""

    def probe_kvm(self, timeout_s: float = KVM_PROBE_TIMEOUT_S) -> AccelDecision:
        """Boot one KVM guest; KVM is usable only if it reaches userspace in time.

        Every way it can fail is evidence for TCG, and the reason says which.
        """
        unusable = self._kvm_unusable()
        if unusable is not None:
            return AccelDecision("tcg", "auto", unusable)
        spec = InstanceSpec(payload=Payload(mode="ready"))
        instance = Instance(self.name, f"{NAME_PREFIX}kvmprobe-{os.getpid()}", spec, "kvm-probe")
        started = time.monotonic()
        try:
            self._start_kvm_guest(instance)
            self._wait_userspace(instance, time.monotonic() + timeout_s)
        except InstanceTimeout:
            tail = instance.output_text(300).strip()
            detail = self._boot_failure_detail(instance)
            return AccelDecision(
                "tcg",
                "auto",
                f"a KVM guest did not reach userspace within {timeout_s:.0f} s"
                + (f" (console: {tail!r})" if tail else " (no console output)")
                + (f"; {detail}" if detail else ""),
            )
        except BenchError as exc:
            return AccelDecision("tcg", "auto", f"a KVM guest failed to boot: {exc}")
        except Exception as exc:  # the VMM refusing the guest is evidence too
            return AccelDecision(
                "tcg", "auto", f"a KVM guest could not start: {type(exc).__name__}: {exc}"
            )
        finally:
            with contextlib.suppress(Exception):
                self.stop(instance)
                self.wait_gone(instance)
        return AccelDecision(
            "kvm", "auto", "a KVM guest reached userspace", round(time.monotonic() - started, 3)
        )

    def accel_decision(self, requested: str = "auto") -> AccelDecision:
        """Decide KVM or TCG for ``requested``; ``auto`` needs a real KVM boot as evidence."""
        if requested in self._decisions:
            return self._decisions[requested]
        decision = requested_decision(requested)
        if decision is None:
            artifacts = self.artifacts
            key = [
                self.name,
                *self._accel_cache_key(),
                artifacts.kernel.sha256,
                artifacts.initramfs.sha256,
            ]
            decision = cached_probe(key, self.probe_kvm)
        self._decisions[requested] = decision
        return decision

    # -- what a run records ---------------------------------------------------------------

    def prepare(self, specs: Sequence[InstanceSpec]) -> dict[str, str]:
        """Build the guest artefacts and decide the accelerator for every requested one."""
        artifacts = self.artifacts
        for requested in sorted({spec.accel for spec in specs} or {"auto"}):
            self.accel_decision(requested)
        labels = {
            "guest_kernel": artifacts.kernel.version,
            "guest_kernel_sha256": artifacts.kernel.sha256,
            "initramfs_sha256": artifacts.initramfs.sha256,
            "machine": str(self.metadata().get("machine", "")),
        }
        for requested, decision in self._decisions.items():
            labels[f"accel[{requested}]"] = f"{decision.accel}: {decision.reason}"
        return labels

    def guest_versions(self) -> dict[str, Any]:
        """The guest's kernel and command line, and the accelerator decisions so far."""
        return {
            "guest_kernel": self.artifacts.kernel.version,
            "guest_kernel_package": self.artifacts.kernel.package,
            "guest_kernel_image": self.artifacts.kernel.path.name,
            "guest_cmdline_base": self.artifacts.cmdline_base,
            "accel": {k: asdict(v) for k, v in self._decisions.items()},
        }

    # -- bench doctor -------------------------------------------------------------------

    def guest_doctor_checks(self) -> list[HostCheck]:
        """The guest artefacts build, and whether KVM really boots this backend's guest."""
        try:
            artifacts = self.artifacts
        except BenchError as exc:
            return [
                HostCheck(f"{self.name} guest artefacts", "fail", str(exc), "run ansible/up.sh")
            ]
        kernel = artifacts.kernel
        return [
            HostCheck(
                f"{self.name} guest artefacts",
                "ok",
                f"kernel {kernel.package} {kernel.version} ({kernel.path.name}), "
                f"initramfs {artifacts.initramfs.sha256[:12]}",
            ),
            self._kvm_check(),
        ]

    def _kvm_check(self) -> HostCheck:
        """Decide KVM by a real guest boot; /dev/kvm existing is never taken as evidence."""
        name = f"kvm ({self.name})"
        if not os.path.exists("/dev/kvm"):
            return HostCheck(
                name,
                "warn",
                "/dev/kvm absent: guests run under TCG (software emulation)",
                "enable virtualization extensions or nested KVM if VMs are to be measured",
            )
        try:
            decision = self.accel_decision("auto")
        except BenchError as exc:
            return HostCheck(
                name,
                "warn",
                f"/dev/kvm present, but no guest boot could test it: {exc}",
                f"fix the {self.name} check first",
            )
        if decision.accel == "kvm":
            return HostCheck(name, "ok", f"KVM boots guests: {decision.reason}")
        return HostCheck(
            name,
            "warn",
            f"/dev/kvm present but unusable: {decision.reason}; guests run under TCG "
            "(software emulation)",
            "on a lab host, enable working (nested) KVM; figures here are TCG figures",
        )
