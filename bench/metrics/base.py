"""The metric contract: one entry point per metric, given a run context, yielding samples.

Like PerfKitBenchmarker's benchmark modules (one ``benchmark_spec`` passed to every
phase), every metric takes a ``RunContext`` and a plan ``Step`` and yields ``Sample``
records; the runner is one loop over the plan. A metric uses only the backend contract
(``bench.backends.base``) and the cgroup and /proc readers: it never imports an engine
SDK and never branches on a backend's name. Where it needs to know what a backend is, it
reads the backend's declared capabilities.

The context owns what every metric shares: the cleanup registry (every instance is in
it from before its create call until it is gone), instance naming, the sample sink
(which stamps run id, sequence number, block and the backend's metadata on each
record), progress events, the clock and the run options.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bench.backends.base import NAME_PREFIX, Backend, Instance, now_ns
from bench.cgroups.layout import CgroupLayout
from bench.plan import Step
from bench.precision import PrecisionTracker
from bench.quiescence import Quiet, wait_for_quiet
from bench.samples import Sample
from bench.scenario import InstanceSpec, Scenario


@dataclass
class RunEvent:
    """Something the CLI may show: phase changes, a finished step or sample, a warning."""

    kind: str  # "phase" | "planned" | "step" | "progress" | "sample" | "warning"
    message: str = ""
    total: int = 0
    sample: Sample | None = None
    step: Step | None = None


@dataclass(frozen=True)
class RunOptions:
    """Run-time options that are not part of the scenario (recorded in run.json).

    ``inject_spin_ms``: the probe spins this long before READY in every backend, a known
    slowdown for checking that comparisons detect one; the scenario stays identical.
    ``skip_unavailable``: measure the backends that are available and record why the
    others are not, instead of refusing the run. ``tune``: hold the CPUs out of deep
    idle states for the run (recorded as ``tuning`` in run.json). ``overrides``: scenario fields the
    command line changed, recorded as such.
    """

    inject_spin_ms: float | None = None
    skip_unavailable: bool = False
    # hold the CPUs out of deep idle for the run (bench.host_settings.low_latency)
    tune: bool = False
    # --target-mde: blocks until every quantity's MDE is at or under it (bench.precision),
    # at least min_blocks, at most max_blocks, within max_wall_s
    target_mde: float | None = None
    min_blocks: int = 2
    max_blocks: int = 20
    max_wall_s: float | None = None
    # command-line overrides of scenario fields (samples, warmups, backends, seed, repeats)
    overrides: tuple[tuple[str, Any], ...] = ()


class CleanupRegistry:
    """Every instance that may exist, until it is removed: the runner's safety net.

    Thread-safe (a density ramp starts instances from a pool). ``remove_all`` is what
    runs on every exit path, interrupt included.
    """

    def __init__(self) -> None:
        self._live: dict[str, tuple[Backend, Instance]] = {}
        self._lock = threading.Lock()

    def track(self, backend: Backend, instance: Instance) -> None:
        """Register an instance before its create call (so a half-created one is found)."""
        with self._lock:
            self._live[instance.name] = (backend, instance)

    def release(self, instance: Instance) -> None:
        """Forget an instance that is removed."""
        with self._lock:
            self._live.pop(instance.name, None)

    def names(self) -> list[str]:
        """Names of the instances that may exist now."""
        with self._lock:
            return list(self._live)

    def remove_all(self) -> list[str]:
        """Stop every registered instance; return what failed (every one is tried)."""
        with self._lock:
            entries = list(self._live.values())
        errors = []
        for backend, instance in entries:
            try:
                backend.stop(instance)
            except Exception as exc:  # cleanup must try every instance
                errors.append(f"cleanup of {instance.name} failed: {exc}")
            self.release(instance)
        return errors


@dataclass
class RunContext:
    """What a metric gets to do its work (see the module docstring)."""

    run_id: str
    scenario: Scenario
    backends: Mapping[str, Backend]
    layout: CgroupLayout
    sink: Callable[[Sample], None]
    emit: Callable[[RunEvent], None] = lambda event: None
    options: RunOptions = field(default_factory=RunOptions)
    registry: CleanupRegistry = field(default_factory=CleanupRegistry)
    # with --target-mde: the block medians so far, and whether they are precise enough
    precision: PrecisionTracker | None = None
    clock: Callable[[], int] = now_ns
    drop_page_cache: Callable[[], str | None] = lambda: "page cache not dropped"
    notes: list[str] = field(default_factory=list)
    block: int = 0
    step: int = -1
    # the backend of the step before this one (the host state it left shows in startup)
    previous_backend: str | None = None
    _names: Iterator[int] = field(default_factory=itertools.count)
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    def skip_numbering(self, seq: int, name: int) -> None:
        """Continue sequence numbers and instance names after a resumed run's last ones."""
        self._seq = itertools.count(seq)
        self._names = itertools.count(name)

    def new_name(self) -> str:
        """A fresh instance name: bench's prefix, the run's random suffix, a counter."""
        with self._lock:
            number = next(self._names)
        return f"{NAME_PREFIX}{self.run_id[-6:]}-{number}"

    def new_instance(self, backend: Backend, spec: InstanceSpec) -> Instance:
        """A named instance, already in the cleanup registry (start it with backend.start)."""
        instance = Instance(backend.name, self.new_name(), spec, self.run_id)
        self.registry.track(backend, instance)
        return instance

    def start(self, backend: Backend, spec: InstanceSpec) -> Instance:
        """Register, create and start an instance (stamps create, created, started)."""
        instance = self.new_instance(backend, spec)
        backend.start(spec, instance.name, self.run_id, instance)
        return instance

    def finish(self, backend: Backend, instance: Instance, gone_timeout_s: float = 10.0) -> None:
        """Remove an instance and wait until its host processes are gone, then forget it.

        It stays in the cleanup registry until its removal succeeded: a removal cut short
        (an engine error, an interrupt) is retried by the registry on the way out.
        """
        backend.stop(instance)
        try:
            backend.wait_gone(instance, gone_timeout_s)
        finally:
            self.registry.release(instance)

    def record(self, sample: Sample) -> Sample:
        """Stamp run id, sequence number, block (unless set) and backend metadata; write it."""
        with self._lock:
            sample.seq = next(self._seq)
        sample.run_id = self.run_id
        if sample.block < 0:
            sample.block = self.block
        if sample.step < 0:
            sample.step = self.step
        backend = self.backends.get(sample.backend)
        if backend is not None:
            metadata = self._metadata.get(backend.name)
            if metadata is None:
                metadata = self._metadata[backend.name] = backend.metadata()
            for key, value in metadata.items():
                sample.labels.setdefault(key, value)
        self.sink(sample)
        if self.precision is not None:
            self.precision.add(sample)
        self.emit(RunEvent("sample", sample=sample))
        return sample

    def phase(self, message: str) -> None:
        """Announce what the run is doing now."""
        self.emit(RunEvent("phase", message))

    def progress(self, message: str) -> None:
        """Say where a long step is (a ramp's count, a group's instance): shown in place."""
        self.emit(RunEvent("progress", message))

    def warn(self, message: str) -> None:
        """Announce a problem once and keep it among the run's notes."""
        if message not in self.notes:
            self.notes.append(message)
            self.emit(RunEvent("warning", message))

    def wait_quiet(self) -> Quiet:
        """Wait until the run's engines finished their work after the last instance."""
        names = {n for b in self.backends.values() for n in b.capabilities.engine_processes}
        return wait_for_quiet(sorted(names))

    def spec_for(self, spec: InstanceSpec) -> InstanceSpec:
        """The spec as this run starts it (run options such as an injected spin applied)."""
        if self.options.inject_spin_ms is None:
            return spec
        spin_ms = (spec.payload.spin_ms or 0.0) + self.options.inject_spin_ms
        payload = spec.payload.model_copy(update={"spin_ms": spin_ms})
        return spec.model_copy(update={"payload": payload})


class Metric(ABC):
    """One kind of measurement. Subclasses with a ``name`` register themselves."""

    name: ClassVar[str]
    registry: ClassVar[dict[str, type[Metric]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register concrete metrics by name."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if isinstance(name, str):
            Metric.registry[name] = cls

    @abstractmethod
    def rounds(self, scenario: Scenario) -> tuple[int, int]:
        """(warmup rounds, measured rounds) per block: the metric's shape in the plan."""

    def describe(self, step: Step) -> str:
        """A line for progress output while ``step`` runs."""
        return f"{self.name}: {step.backend}, {step.case.name}"

    @abstractmethod
    def measure(self, ctx: RunContext, step: Step) -> Iterator[Sample]:
        """Take the step's measurements; yield each sample as soon as it exists.

        Instances are started through ``ctx`` (registered before create) and removed on
        every path, including when the consumer stops iterating (generator close).
        """

    def finish(self, ctx: RunContext) -> Iterator[Sample]:
        """Samples derived once every step has run (e.g. overhead vs the native baseline)."""
        return iter(())

    def restore(self, samples: list[Sample]) -> None:
        """Take back the samples a resumed run recorded before it stopped (for ``finish``)."""
        return None


@contextlib.contextmanager
def closing_samples(samples: Iterator[Sample]) -> Iterator[Iterator[Sample]]:
    """Close a metric's sample generator on every exit path (its finally blocks run)."""
    try:
        yield samples
    finally:
        close = getattr(samples, "close", None)
        if close is not None:
            close()
