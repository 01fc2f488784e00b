"""The native baseline: the probe as a plain host process in its own cgroup.

This is the floor every other backend is judged against (IBM's "native"). The probe is
started through a tiny static helper (``bench/artifacts/cgexec.c``) that joins the
instance's cgroup and then execs the probe: the probe's whole address space is faulted
inside its cgroup, so the cgroup's memory counts all of it. (A probe that joined its
cgroup itself, after exec, left the pages of its own start charged to bench's cgroup:
on cgroup v2 its cgroup showed one page against 0.27 MiB PSS.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.artifacts.cgexec import build_cgexec
from bench.artifacts.probe import ProbeBinary, build_probe
from bench.artifacts.static_build import StaticBinary
from bench.backends.base import (
    Backend,
    Capabilities,
    Instance,
    LimitSupport,
    Mechanism,
    own_cgroup_reader,
    own_cgroups_layout,
)
from bench.backends.host_procs import wait_for_pid_exit
from bench.backends.stream import READY_MARKER, wait_for_marker
from bench.cgroups import delegation
from bench.cgroups import layout as cgroup_layout
from bench.cgroups.instance import (
    InstanceCgroup,
    bench_cgroup_dirs,
    remove_cgroup_dirs,
    remove_empty_parents,
    sweep_bench_cgroups,
    v2_instance_parent,
)
from bench.cgroups.readers import read_memory_events, read_memory_usage
from bench.errors import InstanceError, InstanceTimeout
from bench.scenario import InstanceSpec

MIB = 1024 * 1024


class ProcessBackend(Backend):
    """Run the probe directly on the host, each instance in a cgroup of its own."""

    name = "process"
    description = "The probe as a plain host process in its own cgroup: the native baseline."
    capabilities = Capabilities(
        mechanism=Mechanism.NATIVE,
        limits={
            "memory": LimitSupport("create", "memory limit on the instance's own cgroup"),
            "cpu": LimitSupport("create", "CFS quota on the instance's own cgroup"),
            "pids": LimitSupport("create", "pids.max on the instance's own cgroup"),
        },
        roles=("probe",),
    )

    def __init__(self) -> None:
        self._probe: ProbeBinary | None = None
        self._cgexec: StaticBinary | None = None
        self._layout: cgroup_layout.CgroupLayout | None = None

    def check_available(self) -> None:
        """Need root and a cgroup hierarchy bench can create directories in."""
        self._layout = own_cgroups_layout(self.name)

    @property
    def layout(self) -> cgroup_layout.CgroupLayout:
        """The host's cgroup layout (detected once)."""
        if self._layout is None:
            self._layout = cgroup_layout.detect()
        return self._layout

    def prepare(self, specs: Sequence[InstanceSpec]) -> dict[str, str]:
        """Build the static probe and the cgroup exec helper; find bench's cgroup parent.

        Both binaries are cached by their source. On a systemd v2 host the delegated
        subtree is set up here, before any timed create.
        """
        self._probe = build_probe()
        self._cgexec = build_cgexec()
        if self.layout.version == 2:
            v2_instance_parent(self.layout)
        return {"probe_sha256": self._probe.sha256, "cgexec_sha256": self._cgexec.sha256}

    def versions(self) -> dict[str, Any]:
        """No software of its own beyond the kernel: the cgroup layout and bench's parent."""
        found: dict[str, Any] = {"cgroup_layout": self.layout.mode}
        subtree = delegation.cached_subtree()
        if subtree is not None:
            found["cgroup_parent"] = subtree.describe()
        elif self.layout.version == 2 and self.layout.v2_mount:
            found["cgroup_parent"] = f"{self.layout.v2_mount}/bench (no systemd: bench's own)"
        found["start"] = "cgexec helper: joins the instance cgroup, then execs the probe"
        return found

    def probe_path(self) -> Path:
        """Path of the built probe (after prepare)."""
        if self._probe is None:
            self._probe = build_probe()
        return self._probe.path

    def cgexec_path(self) -> Path:
        """Path of the built cgroup exec helper (after prepare)."""
        if self._cgexec is None:
            self._cgexec = build_cgexec()
        return self._cgexec.path

    def _create(self, instance: Instance) -> None:
        group = InstanceCgroup.create(self.layout, instance.name)
        instance.handle = {"cgroup": group, "proc": None}
        spec = instance.spec
        if spec.memory_mib is not None:
            group.set_memory_limit(spec.memory_mib * MIB)
        if spec.cpus is not None:
            group.set_cpu_quota(spec.cpus)
        if spec.pids_limit is not None:
            group.set_pids_limit(spec.pids_limit)
        instance.labels["cgroup"] = instance.name

    def _start(self, instance: Instance) -> None:
        group: InstanceCgroup = instance.handle["cgroup"]
        # cgexec joins the cgroup (BENCH_CGROUP_PROCS) and execs the probe, so the probe's
        # address space is charged to its cgroup from its first page. A preexec_fn would
        # force fork() instead of vfork() and add ~1.2 ms to every spawn.
        env = {
            "PATH": "/usr/bin:/bin",
            "BENCH_CGROUP_PROCS": ":".join(map(str, group.procs_files())),
        }
        proc = subprocess.Popen(
            [str(self.cgexec_path()), str(self.probe_path()), *instance.spec.payload.argv()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        instance.handle["proc"] = proc
        instance.labels["pid"] = str(proc.pid)

    def _read_chunk(self, instance: Instance) -> bytes | None:
        proc: subprocess.Popen[bytes] = instance.handle["proc"]
        assert proc.stdout is not None
        data = os.read(proc.stdout.fileno(), 65536)
        return data or None

    def _wait_ready(self, instance: Instance, deadline: float) -> int:
        proc: subprocess.Popen[bytes] = instance.handle["proc"]
        assert proc.stdout is not None
        return wait_for_marker(
            proc.stdout.fileno(),
            lambda: self._read_chunk(instance),
            instance.output,
            READY_MARKER,
            deadline,
            f"process {instance.name}",
        )

    def _wait_exit(self, instance: Instance, deadline: float) -> int:
        proc: subprocess.Popen[bytes] = instance.handle["proc"]
        # a pidfd wakes us the moment the child exits; Popen.wait(timeout) polls with
        # growing sleeps and would add up to a millisecond to the exit stamp
        if not wait_for_pid_exit(proc.pid, deadline):
            raise InstanceTimeout(f"process {instance.name}: did not exit before the timeout")
        code = proc.wait()
        self._drain(instance)
        return code

    def _drain(self, instance: Instance) -> None:
        proc: subprocess.Popen[bytes] = instance.handle["proc"]
        if proc.stdout is None or proc.stdout.closed:
            return
        with contextlib.suppress(OSError):
            os.set_blocking(proc.stdout.fileno(), False)
            while chunk := os.read(proc.stdout.fileno(), 65536):
                instance.output.extend(chunk)

    def _remove(self, instance: Instance) -> None:
        handle = instance.handle or {}
        proc: subprocess.Popen[bytes] | None = handle.get("proc")
        group: InstanceCgroup | None = handle.get("cgroup")
        try:
            if proc is not None:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                if proc.stdout is not None:
                    proc.stdout.close()
        finally:
            if group is not None:
                try:
                    group.remove()
                except OSError as exc:
                    raise InstanceError(
                        f"process {instance.name}: cgroup not removed: {exc}"
                    ) from exc

    def main_pid(self, instance: Instance) -> int | None:
        """The probe's pid."""
        proc = (instance.handle or {}).get("proc")
        return proc.pid if proc is not None else None

    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        """The probe and anything it forked (everything in its cgroup)."""
        group: InstanceCgroup | None = (instance.handle or {}).get("cgroup")
        pids = sorted(group.pids()) if group is not None else []
        main = self.main_pid(instance)
        if not pids and main is not None:
            pids = [main]
        return {"probe": pids}

    def limit_readings(
        self, instance: Instance, layout: cgroup_layout.CgroupLayout
    ) -> Callable[[], dict[str, Any]]:
        """The instance's own cgroup (bench made it: no need to look it up by pid).

        Looking it up by pid would race the helper, which joins the cgroup before its exec.
        """
        return own_cgroup_reader(instance.handle["cgroup"], layout)

    def exit_details(self, instance: Instance) -> dict[str, Any]:
        """The signal that ended the probe, and its cgroup's OOM-kill counter.

        bench owns this cgroup and removes it only in stop(), so after the probe exits it
        still exists: the counter read here is the cgroup's own, not an invented value.
        """
        proc = instance.handle["proc"]
        group: InstanceCgroup = instance.handle["cgroup"]
        details: dict[str, Any] = {
            "killed_by_host": proc.returncode == -signal.SIGKILL,
            "oom_killed": None,
        }
        if proc.returncode is not None and proc.returncode < 0:
            details["signal"] = -proc.returncode
        directory = group.dirs.get("memory") or group.dirs.get("unified")
        if directory is not None:
            events = read_memory_events(directory, self.layout)
            details["oom_kill_final"] = events.get("oom_kill")
            usage = read_memory_usage(directory, self.layout)
            details["peak_bytes_final"] = usage.get("peak_bytes")
        return details

    def sweep(self) -> list[str]:
        """Kill and remove every cgroup under bench's parent (leftovers of killed runs)."""
        return sweep_bench_cgroups(self.layout)

    def leftovers(self) -> list[str]:
        """Names of instance cgroups of bench's that exist now."""
        return sorted({d.name for d in bench_cgroup_dirs(self.layout)})

    def _remove_named(self, names: list[str], everything: bool) -> None:
        """Kill what is in these instances' cgroups and remove them."""
        wanted = set(names)
        directories = [d for d in bench_cgroup_dirs(self.layout) if d.name in wanted]
        remove_cgroup_dirs(directories)
        remove_empty_parents({d.parent for d in directories})
