"""VMs without libvirt: bench starts ``qemu-system-x86_64 -M microvm`` itself.

The Firecracker-style floor: the same guest kernel (the PVH vmlinux) and initramfs as the
libvirt backend, booted by direct kernel boot on QEMU's minimal ``microvm`` machine, with
no daemon, no domain XML, no firmware option ROMs, no PCI, no network device. Comparing it
with the libvirt backend shows what libvirt and the ``pc`` machine type cost.

Lifecycle per instance:

- create: bench makes the instance's own cgroup (``<name>.qemu-microvm`` under bench's
  parent, in every resource hierarchy) and writes the memory limit and CFS quota into it
  (``created``);
- start: qemu is spawned (``started``) through ``/bin/sh``, which writes ``0`` to the
  cgroup's ``cgroup.procs`` files and then replaces itself with qemu (``exec``). qemu
  therefore runs in its cgroup from its first instruction (no memory charged elsewhere,
  nothing outside the limits), with no ``preexec_fn`` (which would force ``fork()`` of the
  whole harness instead of ``vfork()``: ~2.4 ms of the harness's time per spawn measured
  here, against ~0.2 ms for the shell, and unsafe while other harness threads run);
- the serial console is qemu's stdout, a pipe the host waits on with ``select()`` (no
  polling): the first console byte, ``BENCH_USERSPACE`` (init started) and READY are
  stamped the moment they are read;
- the guest's init powers off at the end (ACPI on the microvm machine), so qemu exits
  (``exited``, seen through a pidfd); in idle mode the guest stays up until removed;
- remove: qemu is SIGKILLed if still running (``destroyed``) and the cgroup removed
  (``removed``); ``gone`` once qemu's pid is reaped.

Every boot is under a timeout: a failed guest hangs rather than exits. The accelerator is
chosen by evidence (``bench.backends.accel``): KVM only if a KVM microvm reaches userspace
within a short timeout, else TCG; the decision and its reason go on every sample.

Limits: memory and CPU at create, on qemu's own cgroup, which holds the guest's RAM and
every qemu thread (``runtime_in_limit``). A pids limit does not apply on the host: a
guest's processes are not host tasks (the guest-internal cgroup v2 row covers it).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.artifacts.guest import (
    USERSPACE_MARKER,
)
from bench.backends.accel import AccelDecision
from bench.backends.base import (
    Capabilities,
    HostCheck,
    Instance,
    LimitSupport,
    Mechanism,
    now_ns,
    own_cgroup_reader,
    own_cgroups_layout,
)
from bench.backends.guest_console import (
    GUEST_DID_NOT_REPORT,
    guest_exit_code,
    guest_uptime_s,
    take_console_bytes,
)
from bench.backends.guest_vm import GuestBackend
from bench.backends.host_procs import pid_alive
from bench.backends.microvm_qemu import (
    MACHINE,
    MACHINE_OPTIONS,
    OWNER,
    QEMU_BINARY,
    QEMU_FIX,
    SHELL,
    SPAWN_ENV,
    MicrovmConfig,
    join_cgroup_argv,
    qemu_argv,
    qemu_facts,
    stray_qemus,
)
from bench.backends.stream import READY_MARKER, wait_for_marker
from bench.cgroups import layout as cgroup_layout
from bench.cgroups.instance import (
    InstanceCgroup,
    bench_cgroup_dirs,
    remove_cgroup_dirs,
    remove_empty_parents,
)
from bench.cgroups.readers import read_memory_events, read_memory_usage
from bench.errors import BackendUnavailable, BenchError, InstanceError, InstanceTimeout

GONE_POLL_S = 0.002
READ_CHUNK_BYTES = 65536
MIB = 1024 * 1024
PIDS_NOT_APPLICABLE = (
    "a guest's processes are not host tasks: a pids limit exists only inside the guest "
    "(measured by the guest-internal cgroup v2 check)"
)


class QemuMicrovmBackend(GuestBackend):
    """Boot guests on QEMU's microvm machine, started directly by bench (no libvirt)."""

    name = "qemu-microvm"
    description = (
        "The probe as init of a guest on QEMU's microvm machine, started directly by bench "
        "without libvirt (same kernel + initramfs as libvirt, PVH entry, serial console on a "
        "pipe); KVM only where a KVM guest really boots, else TCG."
    )
    capabilities = Capabilities(
        mechanism=Mechanism.VM,
        limits={
            "memory": LimitSupport(
                "create",
                "memory limit on qemu's own cgroup (holding the guest's RAM), written before "
                "qemu starts; qemu joins the cgroup before it execs",
            ),
            "cpu": LimitSupport(
                "create", "CFS quota on qemu's own cgroup (every qemu thread, vCPUs included)"
            ),
            "pids": LimitSupport(None, PIDS_NOT_APPLICABLE),
        },
        roles=("qemu",),
        runtime_in_limit=True,
        guest_kernel=True,
        # measured under TCG: an idle 128 MiB guest's qemu has a PSS of ~148 MiB
        footprint_estimate_mib=24.0,
    )

    def __init__(self, qemu: str | None = None, extra_cmdline: Sequence[str] = ()) -> None:
        super().__init__(extra_cmdline)
        self._qemu_request = qemu
        self._qemu: str | None = None
        self._qemu_version: str | None = None
        self._layout: cgroup_layout.CgroupLayout | None = None

    # -- availability and preparation -------------------------------------------------

    def check_available(self) -> None:
        """Need root, a cgroup hierarchy, and a qemu-system-x86_64 with the microvm machine."""
        self._layout = own_cgroups_layout(self.name)
        if not os.access(SHELL, os.X_OK):
            raise BackendUnavailable(self.name, f"{SHELL} is missing", "install dash")
        if self._qemu is not None:
            return
        qemu = shutil.which(self._qemu_request or QEMU_BINARY)
        if qemu is None:
            raise BackendUnavailable(
                self.name, f"{self._qemu_request or QEMU_BINARY} not found", QEMU_FIX
            )
        try:
            version, microvm = qemu_facts(qemu)
        except BenchError as exc:
            raise BackendUnavailable(self.name, str(exc), QEMU_FIX) from None
        if not microvm:
            raise BackendUnavailable(
                self.name,
                f"QEMU {version} ({qemu}) has no microvm machine type",
                "install a qemu-system-x86 built with microvm (QEMU >= 4.2; Debian's has it)",
            )
        self._qemu, self._qemu_version = qemu, version

    @property
    def qemu(self) -> str:
        """Absolute path of the qemu binary (checked on first use)."""
        if self._qemu is None:
            self.check_available()
        assert self._qemu is not None
        return self._qemu

    @property
    def layout(self) -> cgroup_layout.CgroupLayout:
        """The host's cgroup layout (detected once)."""
        if self._layout is None:
            self._layout = cgroup_layout.detect()
        return self._layout

    def metadata(self) -> dict[str, Any]:
        """Mechanism, VMM and machine type."""
        return {**super().metadata(), "vmm": "qemu (no libvirt)", "machine": MACHINE}

    def versions(self) -> dict[str, Any]:
        """QEMU's version, the machine, the guest kernel, and the accelerator decisions."""
        self.check_available()
        return {
            "qemu": self._qemu_version,
            "qemu_binary": self._qemu,
            "machine": MACHINE_OPTIONS,
            **self.guest_versions(),
        }

    def doctor_checks(self) -> list[HostCheck]:
        """QEMU with microvm, the guest artefacts, and whether KVM really boots a microvm."""
        try:
            self.check_available()
        except BenchError as exc:
            return [HostCheck(self.name, "fail", str(exc), getattr(exc, "fix", ""))]
        checks = [
            HostCheck(self.name, "ok", f"QEMU {self._qemu_version} ({self._qemu}), machine microvm")
        ]
        return checks + self.guest_doctor_checks()

    # -- accelerator choice ---------------------------------------------------------

    def _accel_cache_key(self) -> list[object]:
        """A cached KVM decision holds for this qemu binary and machine options."""
        self.check_available()
        return [self.qemu, self._qemu_version, MACHINE_OPTIONS]

    def _start_kvm_guest(self, instance: Instance) -> None:
        """Spawn a microvm with -accel kvm."""
        instance.handle = {"forced_accel": "kvm"}
        self.start(instance.spec, instance.name, instance.run_id, instance)

    def _wait_userspace(self, instance: Instance, deadline: float) -> None:
        """Read the console pipe until the userspace marker."""
        self._read_until(instance, USERSPACE_MARKER, deadline)

    def _boot_failure_detail(self, instance: Instance) -> str:
        """What qemu wrote on its stderr."""
        stderr = self._stderr_text(instance)
        return f"qemu stderr: {stderr[-300:]!r}" if stderr else ""

    # -- lifecycle ------------------------------------------------------------------

    def config(self, instance: Instance, accel: str) -> MicrovmConfig:
        """The microvm config of an instance: its spec, the artefacts, its extra cmdline."""
        artifacts = self.artifacts
        spec = instance.spec
        return MicrovmConfig(
            name=instance.name,
            accel=accel,
            memory_mib=spec.guest_memory_mib,
            vcpus=spec.vcpus,
            kernel=artifacts.kernel.path,
            initrd=artifacts.initramfs.path,
            cmdline=self.guest_cmdline(instance),
            qemu=self.qemu,
        )

    def _create(self, instance: Instance) -> None:
        forced = (instance.handle or {}).get("forced_accel")
        if forced is not None:
            decision = AccelDecision(forced, forced, "forced for the KVM probe boot")
        else:
            decision = self.accel_decision(instance.spec.accel)
        config = self.config(instance, decision.accel)
        instance.labels.update(
            {
                "accel": decision.accel,
                "accel_reason": decision.reason,
                "machine": MACHINE,
                "guest_kernel": self.artifacts.kernel.version,
                "guest_memory_mib": config.memory_mib,
                "vcpus": config.vcpus,
            }
        )
        group = InstanceCgroup.create(self.layout, instance.name, owner=OWNER)
        instance.handle = {
            "cgroup": group,
            "proc": None,
            "argv": join_cgroup_argv(group.procs_files(), qemu_argv(config)),
            "eof": False,
            "stderr_eof": False,
            "killed_by_bench": False,
            "stderr": bytearray(),
        }
        instance.labels["cgroup"] = group.name
        spec = instance.spec
        applied: dict[str, Any] = {}
        if spec.memory_mib is not None:
            group.set_memory_limit(spec.memory_mib * MIB)
            applied["limit_bytes"] = spec.memory_mib * MIB
        if spec.cpus is not None:
            group.set_cpu_quota(spec.cpus)
            applied["cpu_quota_cores"] = spec.cpus
        if applied:
            instance.labels["limits_applied"] = applied

    def _start(self, instance: Instance) -> None:
        handle = instance.handle
        try:
            proc = subprocess.Popen(
                handle["argv"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=SPAWN_ENV,
                start_new_session=True,
            )
        except OSError as exc:
            raise InstanceError(f"qemu-microvm {instance.name}: cannot start: {exc}") from exc
        handle["proc"] = proc
        assert proc.stdout is not None and proc.stderr is not None
        os.set_blocking(proc.stdout.fileno(), False)
        os.set_blocking(proc.stderr.fileno(), False)
        instance.labels["qemu_pid"] = proc.pid

    def _read_console(self, instance: Instance) -> bytes | None:
        """Read what the console has now into the instance's output (stamped); None at EOF.

        Returns b"": the bytes go to ``instance.output`` through ``take_console_bytes``,
        which stamps the first console byte and the userspace marker as they are read.
        """
        handle = instance.handle
        proc: subprocess.Popen[bytes] = handle["proc"]
        assert proc.stdout is not None
        try:
            data = os.read(proc.stdout.fileno(), READ_CHUNK_BYTES)
        except BlockingIOError:
            return b""
        if not data:
            handle["eof"] = True
            return None
        take_console_bytes(instance, data, now_ns())
        return b""

    def _read_until(self, instance: Instance, marker: str, deadline: float) -> int:
        """Select on the console pipe until ``marker`` is a line; return when it was read."""
        proc: subprocess.Popen[bytes] = instance.handle["proc"]
        assert proc.stdout is not None
        try:
            return wait_for_marker(
                proc.stdout.fileno(),
                lambda: self._read_console(instance),
                instance.output,
                marker,
                deadline,
                f"qemu-microvm {instance.name}",
            )
        except InstanceError as exc:
            stderr = self._stderr_text(instance)
            if stderr:
                raise type(exc)(f"{exc}; qemu stderr: {stderr!r}") from None
            raise

    def _wait_ready(self, instance: Instance, deadline: float) -> int:
        stamp = self._read_until(instance, READY_MARKER, deadline)
        uptime = guest_uptime_s(instance.output)
        if uptime is not None:
            # the guest's own clock: informative only, never used for host figures
            instance.labels["guest_uptime_at_userspace_s"] = uptime
        return stamp

    def _wait_exit(self, instance: Instance, deadline: float) -> int:
        handle = instance.handle
        proc: subprocess.Popen[bytes] = handle["proc"]
        assert proc.stdout is not None and proc.stderr is not None
        if proc.returncode is None:
            # a pidfd wakes us the moment qemu exits; the console is read meanwhile, or a
            # guest printing more than a pipe holds would stall on its serial port
            pidfd = os.pidfd_open(proc.pid)
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise InstanceTimeout(
                            f"qemu-microvm {instance.name}: guest did not power off before "
                            f"the timeout; console tail: {_tail(instance)!r}"
                        )
                    watched = [pidfd]
                    if not handle["stderr_eof"]:
                        watched.append(proc.stderr.fileno())
                    if not handle["eof"]:
                        watched.append(proc.stdout.fileno())
                    readable, _, _ = select.select(watched, [], [], remaining)
                    if proc.stdout.fileno() in readable:
                        self._read_console(instance)
                    if proc.stderr.fileno() in readable:
                        self._stderr_text(instance)
                    if pidfd in readable:
                        break
            finally:
                os.close(pidfd)
            proc.wait()
        self._drain(instance)
        code = guest_exit_code(instance.output)
        # no BENCH_EXIT line: the guest never reported (e.g. its qemu was killed by the host)
        return code if code is not None else GUEST_DID_NOT_REPORT

    def _drain(self, instance: Instance) -> None:
        """Read what is left in the console pipe (qemu has exited or is being killed)."""
        proc: subprocess.Popen[bytes] | None = instance.handle.get("proc")
        if proc is None or proc.stdout is None or proc.stdout.closed:
            return
        with contextlib.suppress(OSError):
            while not instance.handle["eof"] and self._read_console(instance) is not None:
                if not _readable(proc.stdout.fileno()):
                    break
        self._stderr_text(instance)

    def _stderr_text(self, instance: Instance) -> str:
        """Everything qemu (or the joining shell) wrote to stderr so far."""
        handle = instance.handle or {}
        proc: subprocess.Popen[bytes] | None = handle.get("proc")
        buffer: bytearray = handle.get("stderr", bytearray())
        if proc is not None and proc.stderr is not None and not proc.stderr.closed:
            with contextlib.suppress(OSError):  # BlockingIOError: nothing more for now
                while chunk := os.read(proc.stderr.fileno(), READ_CHUNK_BYTES):
                    buffer.extend(chunk)
                handle["stderr_eof"] = True
        return bytes(buffer[-1000:]).decode(errors="replace").strip()

    def exit_details(self, instance: Instance) -> dict[str, Any]:
        """How qemu ended, what the guest's init reported, and qemu's cgroup counters.

        A guest whose qemu the host OOM-killed ends with qemu SIGKILLed and no BENCH_EXIT
        line; a payload killed inside the guest ends with BENCH_EXIT 137 and a clean
        poweroff. bench owns qemu's cgroup and removes it only in stop(), so the counters
        read here are the cgroup's own, after qemu exited.
        """
        handle = instance.handle or {}
        proc: subprocess.Popen[bytes] | None = handle.get("proc")
        details: dict[str, Any] = {"oom_killed": None}
        if proc is not None:
            if proc.returncode is None and handle.get("eof"):
                # the console ended: qemu is exiting, reap it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            proc.poll()
            code = proc.returncode
            details["qemu_returncode"] = code
            details["killed_by_host"] = code == -signal.SIGKILL and not handle["killed_by_bench"]
            if code is not None and code < 0:
                details["signal"] = -code
            stderr = self._stderr_text(instance)
            if stderr:
                details["qemu_stderr"] = stderr[-300:]
        details["guest_exit_code"] = guest_exit_code(instance.output)
        group: InstanceCgroup | None = handle.get("cgroup")
        directory = group.dirs.get("memory") or group.dirs.get("unified") if group else None
        if directory is not None:
            events = read_memory_events(directory, self.layout)
            details["oom_kill_final"] = events.get("oom_kill")
            usage = read_memory_usage(directory, self.layout)
            details["peak_bytes_final"] = usage.get("peak_bytes")
        return details

    def _remove(self, instance: Instance) -> None:
        handle = instance.handle or {}
        proc: subprocess.Popen[bytes] | None = handle.get("proc")
        group: InstanceCgroup | None = handle.get("cgroup")
        try:
            if proc is not None and proc.poll() is None:
                handle["killed_by_bench"] = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                instance.t_ns["destroyed"] = now_ns()
        finally:
            if proc is not None:
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
            if group is not None:
                try:
                    group.remove()  # returns once the killed qemu has left it
                except OSError as exc:
                    raise InstanceError(
                        f"qemu-microvm {instance.name}: cgroup not removed: {exc}"
                    ) from exc
            if proc is not None:
                proc.poll()  # reaped here already if it is dead (stop() without wait_gone)

    def _wait_gone(self, instance: Instance, deadline: float) -> None:
        """Gone = qemu's pid reaped (through a pidfd: no polling)."""
        proc: subprocess.Popen[bytes] | None = (instance.handle or {}).get("proc")
        if proc is None or proc.poll() is not None:
            return
        try:
            pidfd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            proc.poll()
            return
        try:
            select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(pidfd)
        if proc.poll() is None:
            raise InstanceError(
                f"qemu-microvm {instance.name}: qemu pid {proc.pid} alive after removal"
            )

    # -- what exists because of an instance ---------------------------------------------

    def main_pid(self, instance: Instance) -> int | None:
        """The pid of qemu (in the instance's own cgroup)."""
        proc = (instance.handle or {}).get("proc")
        return proc.pid if proc is not None else None

    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        """The one host process a microvm adds is qemu (there is no daemon)."""
        proc: subprocess.Popen[bytes] | None = (instance.handle or {}).get("proc")
        return {"qemu": [proc.pid] if proc is not None and proc.returncode is None else []}

    def limit_readings(
        self, instance: Instance, layout: cgroup_layout.CgroupLayout
    ) -> Callable[[], dict[str, Any]]:
        """Read qemu's own cgroup, which bench made (no lookup by pid, which would race the join).

        Memory, CPU (cpuacct usage, throttling) and pids all come from it: the quota is on
        the whole qemu, so the CPU it governs is the whole cgroup's.
        """
        return own_cgroup_reader(instance.handle["cgroup"], layout)

    # -- finding what bench left behind -------------------------------------------------

    def leftovers(self) -> list[str]:
        """Instances of this backend that exist now: their cgroups and stray qemu processes."""
        names = {_instance_of(d.name) for d in bench_cgroup_dirs(self.layout, OWNER)}
        names.update(name for pid, name in stray_qemus().items() if pid_alive(pid))
        return sorted(names)

    def sweep(self) -> list[str]:
        """Kill every qemu of this backend's (found by command line) and remove its cgroups."""
        return self._kill_and_remove(None)

    def _remove_named(self, names: list[str], everything: bool) -> None:
        """Kill these instances' qemu processes and remove their cgroups (others stay)."""
        self._kill_and_remove(set(names))

    def _kill_and_remove(self, wanted: set[str] | None) -> list[str]:
        """SIGKILL the matching stray qemus, wait until they are gone, remove the cgroups."""
        strays = {
            pid: name for pid, name in stray_qemus().items() if wanted is None or name in wanted
        }
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(pid_alive(pid) for pid in strays) and time.monotonic() < deadline:
            time.sleep(GONE_POLL_S)
        directories = [
            d
            for d in bench_cgroup_dirs(self.layout, OWNER)
            if wanted is None or _instance_of(d.name) in wanted
        ]
        remove_cgroup_dirs(directories)  # kills whatever is still inside
        remove_empty_parents({d.parent for d in directories})
        return sorted({_instance_of(d.name) for d in directories} | set(strays.values()))


def _instance_of(cgroup_name: str) -> str:
    return cgroup_name.removesuffix(f".{OWNER}")


def _readable(fd: int) -> bool:
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


def _tail(instance: Instance, limit: int = 300) -> str:
    return instance.output_text(limit).strip()
