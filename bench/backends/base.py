"""The backend protocol: one lifecycle for every kind of instance, stamping monotonic times.

Like PerfKitBenchmarker's resource template, the public methods (``start``,
``wait_ready``, ``wait_exit``, ``stop``) stamp ``time.monotonic_ns()`` around private
steps each backend implements. Metrics are then pure arithmetic on ``Instance.t_ns``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bench.scenario import InstanceSpec

BENCH_LABEL = "io.bench.managed"
BENCH_RUN_LABEL = "io.bench.run_id"
NAME_PREFIX = "bench-"


def now_ns() -> int:
    """Host monotonic clock in nanoseconds: the only clock bench times with."""
    return time.monotonic_ns()


@dataclass
class Instance:
    """One running (or finished) instance and the times its lifecycle stages were reached.

    ``t_ns`` keys: create (before the create call), created (it returned), started (start
    returned / process spawned), ready (READY read on the host), exited, removed; backends
    may add their own (e.g. docker's ``attached``).
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
    # per-instance knobs a metric sets before start(): libvirt reads "start_paused" and
    # "cmdline_extra" (kernel parameters for this guest only)
    extra: dict[str, Any] = field(default_factory=dict)

    def output_text(self, limit: int = 2000) -> str:
        """Return the tail of what the instance printed, decoded leniently."""
        return bytes(self.output[-limit:]).decode(errors="replace")


class Backend(ABC):
    """A kind of instance bench can start: process, docker (and, later, libvirt)."""

    name: ClassVar[str]

    @abstractmethod
    def check_available(self) -> None:
        """Raise BackendUnavailable (why, how to fix) unless the backend can run now."""

    @abstractmethod
    def prepare(self, specs: Sequence[InstanceSpec]) -> dict[str, str]:
        """Build or fetch what instances boot from (never timed); return labels to record."""

    @abstractmethod
    def versions(self) -> dict[str, Any]:
        """Return versions of the software under this backend, for run.json."""

    def start(
        self, spec: InstanceSpec, name: str, run_id: str, instance: Instance | None = None
    ) -> Instance:
        """Create and start an instance, stamping create, created and started.

        Pass ``instance`` (already in the caller's cleanup registry) so that whatever the
        create call left behind is reachable for removal even when a later step raises.
        """
        instance = instance or Instance(self.name, name, spec, run_id)
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
        """Kill and remove the instance on every path (idempotent); stamps removed."""
        if instance.stopped:
            return
        try:
            self._remove(instance)
        finally:
            instance.stopped = True
            instance.t_ns["removed"] = now_ns()

    @abstractmethod
    def _create(self, instance: Instance) -> None: ...

    def wait_gone(self, instance: Instance, timeout_s: float = 10.0) -> None:
        """Wait until every host process of the instance has exited; stamps ``gone``.

        Removal returning is not the end of teardown (docker's containerd-shim exits after
        it); waiting here keeps one instance's teardown out of the next one's timing.
        """
        self._wait_gone(instance, time.monotonic() + timeout_s)
        instance.t_ns["gone"] = now_ns()

    def _wait_gone(self, instance: Instance, deadline: float) -> None:
        """Backends whose teardown outlives removal override this."""
        return None

    @abstractmethod
    def main_pid(self, instance: Instance) -> int | None:
        """The host pid whose cgroup is the instance's (probe, container init, qemu)."""

    @abstractmethod
    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        """Every host process that exists because of the instance, by role.

        Roles: ``probe`` (process), ``container`` + ``containerd-shim`` (docker; the shim
        is charged to the caller's cgroup, not the container's, but exists because of it),
        ``qemu`` (libvirt).
        """

    def exit_details(self, instance: Instance) -> dict[str, Any]:
        """What the engine knows about how the payload ended (e.g. docker's OOMKilled)."""
        return {}

    def close(self) -> None:
        """Release connections the backend holds (engine clients); safe to call twice."""
        return None

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

    @abstractmethod
    def sweep(self) -> list[str]:
        """Remove every instance bench ever left behind on this host; return their names."""

    @abstractmethod
    def leftovers(self) -> list[str]:
        """List instances of bench's that exist now (for tests and ``bench clean --dry-run``)."""
