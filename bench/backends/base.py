"""The backend contract: one lifecycle for every kind of instance, stamping monotonic times.

Like PerfKitBenchmarker's resource template, the public methods (``start``,
``wait_ready``, ``wait_exit``, ``stop``, ``wait_gone``) stamp ``time.monotonic_ns()``
around private steps each backend implements. Metrics are then pure arithmetic on
``Instance.t_ns``.

Each backend also *declares* what it is and what it can do, so that no metric, runner,
report or comparison ever branches on a backend's name:

- ``capabilities.mechanism``: native, container, sandbox or vm (the axis every
  comparison is ordered by);
- ``capabilities.limits``: for memory, cpu and pids, whether the backend applies the
  instance spec's limit at create, live (after the instance exists, before the payload
  runs), or not at all (with the reason, which becomes a "not applicable" record);
- ``capabilities.runtime_in_limit``: the limited cgroup also holds the instance's runtime
  (a VMM with the guest's RAM, a sandbox kernel), so a memory-limit check sets the limit
  as the runtime's measured footprint plus the scenario's headroom;
- ``capabilities.guest_kernel``: instances boot bench's guest kernel and initramfs, so
  ``Instance.extra["cmdline_extra"]`` reaches the guest's init (guest-internal checks);
- ``capabilities.roles``: the roles of the host processes ``host_processes`` returns;
- ``capabilities.footprint_estimate_mib``: what an idle instance costs the host beyond
  its payload and guest RAM, for refusing a scenario that cannot fit before it starts;
- ``capabilities.engine_processes``: the daemons instances are made through, whose
  cleanup after an instance is waited out before the next sample.

``metadata()`` is merged into the labels of every sample the backend's instances
produce (like PKB's ``GetResourceMetadata``). Backends register themselves by subclassing
``Backend`` with a ``name`` (like PKB's ``AutoRegisterResourceMeta``); ``bench.backends``
discovers the modules.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

from bench.backends.host_procs import pid_alive
from bench.cgroups.instance import InstanceCgroup
from bench.cgroups.layout import CgroupLayout, CgroupLayoutError
from bench.cgroups.layout import detect as detect_layout
from bench.cgroups.readers import (
    instance_cgroup_dirs,
    read_cpu_usage,
    read_memory_events,
    read_memory_usage,
    read_pids,
)
from bench.errors import BackendUnavailable, BenchError
from bench.interrupts import deferred
from bench.scenario import InstanceSpec

BENCH_LABEL = "io.bench.managed"
BENCH_RUN_LABEL = "io.bench.run_id"
NAME_PREFIX = "bench-"
LIMIT_KINDS = ("memory", "cpu", "pids")


def now_ns() -> int:
    """Host monotonic clock in nanoseconds: the only clock bench times with."""
    return time.monotonic_ns()


class Mechanism(StrEnum):
    """The isolation mechanism class of a backend, in the order comparisons show them."""

    NATIVE = "native"
    CONTAINER = "container"
    SANDBOX = "sandbox"
    VM = "vm"


MECHANISM_ORDER: tuple[Mechanism, ...] = tuple(Mechanism)


@dataclass(frozen=True)
class LimitSupport:
    """How a backend applies one kind of limit from the instance spec.

    ``when`` is ``create`` (part of the create call), ``live`` (set on the existing
    instance before its payload runs), or None: not applicable, and ``how`` says why.
    """

    when: Literal["create", "live"] | None
    how: str

    @property
    def applicable(self) -> bool:
        """True when the backend can apply this limit at all."""
        return self.when is not None


@dataclass(frozen=True)
class Capabilities:
    """What a backend is and can do (see the module docstring)."""

    mechanism: Mechanism
    limits: Mapping[str, LimitSupport]
    roles: tuple[str, ...]
    runtime_in_limit: bool = False
    guest_kernel: bool = False
    # host memory one idle instance costs beyond its payload (and beyond its guest RAM,
    # for a guest): a planning estimate, used only to refuse a scenario that cannot fit
    footprint_estimate_mib: float = 2.0
    # the daemons instances are made through (their command names): their work after an
    # instance ended is waited out before the next sample (bench.quiescence)
    engine_processes: tuple[str, ...] = ()

    def limit(self, kind: str) -> LimitSupport:
        """How ``kind`` (memory, cpu, pids) is applied; not applicable if undeclared."""
        return self.limits.get(kind, LimitSupport(None, f"the backend declares no {kind} limit"))


@dataclass
class Instance:
    """One running (or finished) instance and the times its lifecycle stages were reached.

    ``t_ns`` keys: create (before the create call), created (it returned), started (start
    returned / process spawned), ready (READY read on the host), exited, removed, gone;
    backends may add their own (docker's ``attached``, a guest's ``first_console_byte``
    and ``userspace``).
    """

    backend: str
    name: str
    spec: InstanceSpec
    run_id: str
    t_ns: dict[str, int] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    handle: Any = None
    exit_code: int | None = None
    output: bytearray = field(default_factory=bytearray)
    stopped: bool = False
    # knobs a metric sets before start(); backends with the guest_kernel capability read
    # "cmdline_extra" (kernel parameters for this guest only)
    extra: dict[str, Any] = field(default_factory=dict)

    def output_text(self, limit: int = 2000) -> str:
        """Return the tail of what the instance printed, decoded leniently."""
        return bytes(self.output[-limit:]).decode(errors="replace")


@dataclass(frozen=True)
class HostCheck:
    """The outcome of one ``bench doctor`` check: ok/warn/fail, what was seen, the fix."""

    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""


_REGISTRY: dict[str, type[Backend]] = {}
_REGISTRY_LOCK = threading.Lock()


class Backend(ABC):
    """A kind of instance bench can start. Subclasses with a ``name`` register themselves."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register every concrete subclass that names itself (PKB's auto-registration)."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not isinstance(name, str):
            return
        with _REGISTRY_LOCK:
            existing = _REGISTRY.get(name)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise TypeError(
                    f"backend name {name!r} is taken by {existing.__module__}."
                    f"{existing.__qualname__}"
                )
            _REGISTRY[name] = cls

    # -- what the backend is ------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """Labels merged into every sample of this backend (instance labels take precedence).

        Subclasses extend it with what distinguishes them (runtime, machine type ...).
        """
        return {"mechanism": str(self.capabilities.mechanism)}

    @abstractmethod
    def check_available(self) -> None:
        """Raise BackendUnavailable (why, how to fix) unless the backend can run now."""

    @abstractmethod
    def prepare(self, specs: Sequence[InstanceSpec]) -> dict[str, str]:
        """Build or fetch what instances boot from (never timed); return labels to record."""

    @abstractmethod
    def versions(self) -> dict[str, Any]:
        """Return versions of the software under this backend, for run.json."""

    def doctor_checks(self) -> list[HostCheck]:
        """Rows for ``bench doctor``: the backend is reachable, and the versions it runs.

        Backends with more to check (guest artefacts, KVM, a runtime) extend the list.
        """
        try:
            self.check_available()
            versions = self.versions()
        except BenchError as exc:
            return [HostCheck(self.name, "fail", str(exc), getattr(exc, "fix", ""))]
        finally:
            self.close()
        shown = ", ".join(
            f"{key} {value}"
            for key, value in versions.items()
            if isinstance(value, str | int | float) and value != ""
        )
        return [HostCheck(self.name, "ok", shown or "available")]

    def memory_estimate_mib(self, spec: InstanceSpec) -> float:
        """What one instance of ``spec`` may cost the host (planning only, never a figure)."""
        capabilities = self.capabilities
        payload_mib = float(spec.payload.alloc_mib or 0)
        if capabilities.guest_kernel:
            # the payload allocates inside the guest's RAM
            return capabilities.footprint_estimate_mib + spec.guest_memory_mib
        return capabilities.footprint_estimate_mib + payload_mib

    # -- the lifecycle ------------------------------------------------------------------

    def start(
        self, spec: InstanceSpec, name: str, run_id: str, instance: Instance | None = None
    ) -> Instance:
        """Create and start an instance, stamping create, created and started.

        Pass ``instance`` (already in the caller's cleanup registry) so that whatever the
        create call left behind is reachable for removal even when a later step raises.
        Limits in ``spec`` are applied as ``capabilities.limits`` declares, before the
        payload runs. SIGINT and SIGTERM wait until these calls returned (see
        ``bench.interrupts``).
        """
        instance = instance or Instance(self.name, name, spec, run_id)
        # an interrupt waits for the engine calls in flight: raised inside one, it would
        # leave an instance the engine goes on creating with no handle to remove it by
        with deferred():
            instance.t_ns["create"] = now_ns()
            self._create(instance)
            instance.t_ns["created"] = now_ns()
            self._before_start(instance)
            self._start(instance)
            instance.t_ns["started"] = now_ns()
        return instance

    def wait_ready(self, instance: Instance, timeout_s: float) -> None:
        """Block until the instance printed READY; stamps ready at the moment it was read."""
        instance.t_ns["ready"] = self._wait_ready(instance, time.monotonic() + timeout_s)

    def wait_exit(self, instance: Instance, timeout_s: float) -> int:
        """Block until the instance's payload exited; stamps exited, returns its exit code."""
        code = self._wait_exit(instance, time.monotonic() + timeout_s)
        instance.t_ns["exited"] = now_ns()
        instance.exit_code = code
        return code

    def stop(self, instance: Instance) -> None:
        """Kill and remove the instance (idempotent once it succeeded); stamps removed.

        An instance whose removal did not complete (an engine error, an interrupt in the
        middle of the call) is not marked stopped: the cleanup registry tries again.
        """
        if instance.stopped:
            return
        with deferred():
            self._remove(instance)
            instance.stopped = True
            instance.t_ns["removed"] = now_ns()

    def wait_gone(self, instance: Instance, timeout_s: float = 10.0) -> None:
        """Wait until every host process of the instance has exited; stamps ``gone``.

        Removal returning is not the end of teardown (docker's containerd-shim exits after
        it); waiting here keeps one instance's teardown out of the next one's timing.
        """
        self._wait_gone(instance, time.monotonic() + timeout_s)
        instance.t_ns["gone"] = now_ns()

    def is_alive(self, instance: Instance) -> bool:
        """True while the instance's host processes exist (density checks what it counts).

        An engine that cannot even say (the container is unknown to it) means gone.
        """
        try:
            roles = self.host_processes(instance)
        except Exception:
            return False
        return any(pid_alive(pid) for pids in roles.values() for pid in pids)

    @abstractmethod
    def _create(self, instance: Instance) -> None: ...

    def _before_start(self, instance: Instance) -> None:
        """Optional step between create and start (docker attaches its output stream here)."""
        return None

    @abstractmethod
    def _start(self, instance: Instance) -> None: ...

    @abstractmethod
    def _wait_ready(self, instance: Instance, deadline: float) -> int:
        """Return the monotonic ns at which READY was read."""

    @abstractmethod
    def _wait_exit(self, instance: Instance, deadline: float) -> int:
        """Return the payload's exit code."""

    @abstractmethod
    def _remove(self, instance: Instance) -> None: ...

    def _wait_gone(self, instance: Instance, deadline: float) -> None:
        """Backends whose teardown outlives removal override this."""
        return None

    # -- what exists because of an instance ---------------------------------------------

    @abstractmethod
    def main_pid(self, instance: Instance) -> int | None:
        """The host pid whose cgroup is the instance's (probe, container init, qemu)."""

    @abstractmethod
    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        """Every host process that exists because of the instance, by role.

        The roles are ``capabilities.roles``; a process charged to another cgroup (docker's
        containerd-shim) is still listed: it exists because of the instance.
        """

    def limit_readings(
        self, instance: Instance, layout: CgroupLayout
    ) -> Callable[[], dict[str, Any]]:
        """A reader of the instance's limit evidence, sampled while it lives.

        Keys (each None where unreadable): usage_bytes, peak_bytes, cache_bytes,
        anon_bytes, oom_kill, failcnt, usage_ns, nr_throttled, nr_periods, pids_current,
        pids_max_events. The default reads the cgroups of ``main_pid``; a backend whose
        limit is enforced elsewhere (a VM's vCPU threads) overrides it.
        """
        pid = self.main_pid(instance)
        if pid is None:
            raise BenchError(f"{instance.name}: no host pid to find its cgroup")
        dirs = instance_cgroup_dirs(pid, layout)
        return cgroup_reader(dirs, layout)

    def exit_details(self, instance: Instance) -> dict[str, Any]:
        """How the payload ended, in keys every metric understands.

        ``killed_by_host``: the host kernel SIGKILLed the instance's process (or runtime);
        ``oom_killed``: the engine itself says the memory limit killed it (None if the
        engine has no such verdict); ``oom_kill_final`` / ``peak_bytes_final``: cgroup
        counters read after exit, only where the cgroup outlives the payload. Backends add
        their own evidence keys.
        """
        return {}

    def close(self) -> None:
        """Release connections the backend holds (engine clients); safe to call twice."""
        return None

    # -- finding what bench left behind -------------------------------------------------

    @abstractmethod
    def sweep(self) -> list[str]:
        """Remove every instance bench ever left behind on this host; return their names."""

    @abstractmethod
    def leftovers(self) -> list[str]:
        """List instances of bench's that exist now (for tests and ``bench clean --dry-run``)."""

    def remove_leftovers(self, names: Collection[str]) -> list[str]:
        """Remove these leftover instances only; return those verified gone afterwards.

        Backends that can remove one instance by name override ``_remove_named``; the
        default can only sweep everything, so it refuses unless everything was asked for.
        """
        wanted = set(names)
        if not wanted:
            return []
        present = set(self.leftovers())
        self._remove_named(sorted(wanted & present), everything=wanted >= present)
        still = set(self.leftovers())
        return sorted(wanted - still)

    def _remove_named(self, names: list[str], everything: bool) -> None:
        """Remove the named leftovers (see ``remove_leftovers``)."""
        if not everything:
            raise BenchError(
                f"backend {self.name} cannot remove single instances; "
                "bench clean --all removes all of them"
            )
        self.sweep()


def cgroup_reader(dirs: Mapping[str, Path], layout: CgroupLayout) -> Callable[[], dict[str, Any]]:
    """A reader of limit evidence from cgroup dirs (controller -> dir; v2: every key one dir)."""
    folders = dict(dirs)

    def read() -> dict[str, Any]:
        values: dict[str, Any] = {}
        if "memory" in folders:
            values.update(read_memory_usage(folders["memory"], layout))
            values.update(read_memory_events(folders["memory"], layout))
        values.update(read_cpu_usage(folders, layout))
        if "pids" in folders:
            values.update({f"pids_{k}": v for k, v in read_pids(folders["pids"]).items()})
        return values

    return read


def own_cgroups_layout(backend: str) -> CgroupLayout:
    """The host's cgroup layout, for a backend that makes its instances' cgroups itself.

    Raises BackendUnavailable (why, how to fix) without root or a usable hierarchy.
    """
    if os.geteuid() != 0:
        raise BackendUnavailable(
            backend, "not running as root, cannot create cgroups", "run bench as root"
        )
    try:
        return detect_layout()
    except (OSError, CgroupLayoutError) as exc:
        raise BackendUnavailable(
            backend, f"no usable cgroup hierarchy ({exc})", "mount cgroups (v1 or v2)"
        ) from None


def own_cgroup_reader(group: InstanceCgroup, layout: CgroupLayout) -> Callable[[], dict[str, Any]]:
    """A limit-evidence reader of a cgroup bench made itself.

    No lookup by pid, which would race the instance's joining the cgroup.
    """
    if layout.version == 1:
        dirs = dict(group.dirs)
    else:
        unified = group.dirs["unified"]
        dirs = {c: unified for c in ("memory", "cpu", "cpuacct", "pids")}
    return cgroup_reader(dirs, layout)


def registered_backends() -> dict[str, type[Backend]]:
    """Every backend class registered so far (``bench.backends`` discovers the modules)."""
    with _REGISTRY_LOCK:
        return dict(_REGISTRY)


def unregister_backend(name: str) -> None:
    """Forget a registered backend (for tests that register one of their own)."""
    with _REGISTRY_LOCK:
        _REGISTRY.pop(name, None)


def current_layout() -> CgroupLayout:
    """The host's cgroup layout (a thin alias so backends need one import)."""
    return detect_layout()
