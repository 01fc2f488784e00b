"""Containers through the podman CLI (daemonless), timed stage by stage.

Podman has no daemon: every step is one ``podman`` command, run with an argv list
(never a shell), so each stage includes the CLI's own start-up (~20 ms here). Lifecycle
per instance: ``podman create`` (labelled, named ``bench-...``; ``created``), ``podman
start`` (``started``: conmon and the container's init exist), then READY is read from
the container's k8s-file log, which conmon writes as the payload prints: the file is
polled every millisecond on the host clock, as the libvirt backend polls a console
file. The container's exit is seen through a pidfd on its init (its pid comes from
``--pidfile``) and its exit code from the exit file conmon writes; ``podman rm -f``
removes it (``removed``), and teardown ends when conmon and every process naming the
container (its ``podman container cleanup``) are gone (``gone``).

Flags every command gets, so a stock Debian host works without any podman config:

- ``--runtime runc``: crun refuses the hybrid cgroup v1 layout of the dev hosts;
- ``--cgroup-manager cgroupfs``: also on hosts without systemd, as docker's default;
- ``--ulimit nofile=S:H`` from the harness's own ``RLIMIT_NOFILE``: podman's default
  (1048576) is above the hard limit, and root without CAP_SYS_RESOURCE cannot raise it
  ("error setting rlimit type 7"); and ``--ulimit nproc``, because an explicit
  ``--ulimit`` replaces podman's default list, after which runc is asked for nproc
  1048576 ("rlimit type 6"). The nproc value is the harness's own, capped at
  ``kernel.pid_max``: podman lowers its own RLIMIT_NPROC to pid_max when it starts, and
  runc cannot raise the container's limit above that.
- ``--pull never`` (no registry), ``--pids-limit -1`` unless the spec sets one (podman's
  default would be 2048; unset means unlimited, as for docker).

``podman start`` runs in the container's bundle directory: conmon writes its OOM marker
file into its working directory, and podman 4.x reads it only from there. Started from
anywhere else, State.OOMKilled stays false after a memcg OOM kill (measured) and an
``oom`` file appears in the caller's directory.

Podman keeps its images and containers in its own store (/var/lib/containers), apart
from docker's. The image is built from the same FROM-scratch context as docker's
(``bench.artifacts.image``: busybox + the static probe), tagged by content hash, built
in ``prepare`` only when missing, never inside a timed interval.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import select
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.artifacts.image import (
    IMAGE_LABEL,
    IMAGE_REPOSITORY,
    ProbeImage,
    build_context,
    busybox_applets,
    busybox_path,
)
from bench.artifacts.probe import build_probe
from bench.backends.base import (
    BENCH_LABEL,
    NAME_PREFIX,
    Backend,
    Capabilities,
    HostCheck,
    Instance,
    LimitSupport,
    Mechanism,
    cgroup_reader,
    current_layout,
    now_ns,
)
from bench.backends.host_procs import (
    cmdline_of,
    pid_alive,
    processes_mentioning,
    read_pid_file,
)
from bench.backends.podman_cli import (
    BENCH_BACKEND_LABEL,
    RUN_DIR,
    InstanceFiles,
    K8sLogReader,
    conmon_exit_dir,
    create_argv,
    harness_ulimit_args,
    run_fix,
    version_word,
)
from bench.backends.stream import READY_MARKER, has_marker_line
from bench.cgroups.layout import CgroupLayout
from bench.cgroups.readers import (
    cgroup_dir_for_pid,
    instance_cgroup_dirs,
    read_memory_events,
    read_memory_usage,
)
from bench.errors import (
    ArtifactError,
    BackendUnavailable,
    BenchError,
    InstanceError,
    InstanceTimeout,
)
from bench.scenario import InstanceSpec

PODMAN_FIX = (
    "install podman and runc (ansible/up.sh does: apt-get install --no-install-recommends "
    "podman runc)"
)
LOG_POLL_S = 0.001
EXIT_FILE_POLL_S = 0.001
GONE_POLL_S = 0.002
# A podman command that has not returned by then is hung (it never takes seconds here).
CLI_TIMEOUT_S = 120.0
# After the payload's exit: how long conmon may take to write its exit file before
# bench asks podman instead (it writes it within ~5 ms of the exit here).
EXIT_FILE_GRACE_S = 2.0
EXIT_SIGKILL = 128 + 9


class PodmanBackend(Backend):
    """Run the probe in a FROM-scratch container through the podman CLI (runc, conmon)."""

    name = "podman"
    description = (
        "The probe in the same FROM-scratch container, through the daemonless podman CLI "
        "(conmon + runc, cgroupfs)."
    )
    capabilities = Capabilities(
        mechanism=Mechanism.CONTAINER,
        limits={
            "memory": LimitSupport("create", "podman --memory (= --memory-swap) at create"),
            "cpu": LimitSupport("create", "podman --cpus (CFS quota) at create"),
            "pids": LimitSupport("create", "podman --pids-limit at create"),
        },
        roles=("container", "conmon"),
        engine_processes=("conmon",),
        # measured here: PSS 0.7 MiB idle (conmon 0.5, probe 0.2); the container's cgroup
        # peaks at ~4.3 MiB while runc sets it up
        footprint_estimate_mib=4.0,
    )
    runtime = "runc"
    cgroup_manager = "cgroupfs"

    def __init__(self, executable: str = "podman", run_dir: Path = RUN_DIR) -> None:
        self._executable = executable
        self._run_dir = run_dir
        self._path: str | None = None
        self._version: str | None = None
        self._image: ProbeImage | None = None
        self._layout: CgroupLayout | None = None
        self._ulimits: list[str] | None = None
        # where conmon writes exit files: read from a live conmon's command line once
        self._exit_dir: Path | None = None
        # <graph root>/<driver>-containers: each container's bundle dir is <id>/userdata
        self._containers_dir: Path | None = None

    # -- what the backend is ------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """Mechanism, the OCI runtime, the cgroup manager and where READY is read from."""
        return {
            **super().metadata(),
            "runtime": self.runtime,
            "cgroup_manager": self.cgroup_manager,
            "log_driver": "k8s-file",
        }

    def _global_flags(self) -> list[str]:
        return ["--runtime", self.runtime, "--cgroup-manager", self.cgroup_manager]

    def _run(
        self, args: Sequence[str], timeout_s: float = CLI_TIMEOUT_S, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one podman command (argv, no shell); raises InstanceTimeout on a hang.

        It runs in bench's run dir (or ``cwd``), never the caller's: conmon inherits the
        working directory and writes its ``oom`` marker file there.
        """
        executable = self._path or self._executable
        if cwd is None and self._run_dir.is_dir():
            cwd = self._run_dir
        try:
            return subprocess.run(
                [executable, *self._global_flags(), *args],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout_s,
                check=False,
                # its own session: a Ctrl-C at the terminal reaches bench alone, which lets
                # a create in flight finish (bench.interrupts) instead of killing it halfway
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise InstanceTimeout(
                f"podman {args[0]} did not return within {timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise BackendUnavailable(self.name, f"cannot run podman ({exc})", PODMAN_FIX) from None

    def _checked(self, args: Sequence[str], what: str, cwd: Path | None = None) -> str:
        """Run a podman command that must succeed; return its stdout."""
        result = self._run(args, cwd=cwd)
        if result.returncode != 0:
            raise InstanceError(f"{what}: podman {args[0]} failed: {_tail(result.stderr)}")
        return result.stdout

    def check_available(self) -> None:
        """Root, the podman CLI, and podman accepting the runtime (``podman version``)."""
        if os.geteuid() != 0:
            raise BackendUnavailable(
                self.name,
                "not running as root (bench runs podman rootful: cgroup v1 limits need root)",
                "run bench as root",
            )
        path = shutil.which(self._executable)
        if path is None:
            raise BackendUnavailable(self.name, f"{self._executable} not found on PATH", PODMAN_FIX)
        self._path = path
        result = self._run(["version", "--format", "json"], timeout_s=30)
        if result.returncode != 0:
            raise BackendUnavailable(
                self.name,
                f"podman {' '.join(self._global_flags())} version failed: {_tail(result.stderr)}",
                PODMAN_FIX,
            )
        with contextlib.suppress(ValueError, AttributeError):
            self._version = json.loads(result.stdout).get("Client", {}).get("Version")

    def _ensure_available(self) -> None:
        if self._path is None:
            self.check_available()

    @property
    def layout(self) -> CgroupLayout:
        """The host's cgroup layout (detected once)."""
        if self._layout is None:
            self._layout = current_layout()
        return self._layout

    def prepare(self, specs: Sequence[InstanceSpec]) -> dict[str, str]:
        """Build the probe and the FROM-scratch image in podman's store (cached by hash)."""
        self._ensure_available()
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._image = self._build_image()
        self._ulimits = harness_ulimit_args()
        store = self._info().get("store", {})
        if store.get("graphRoot") and store.get("graphDriverName"):
            root = Path(store["graphRoot"])
            self._containers_dir = root / f"{store['graphDriverName']}-containers"
        return {"image": self._image.image_id, "image_tag": self._image.tag}

    def _build_image(self) -> ProbeImage:
        probe = build_probe()
        busybox = busybox_path()
        context = build_context(probe.path, busybox, busybox_applets(busybox))
        content = hashlib.sha256(context).hexdigest()
        tag = f"localhost/{IMAGE_REPOSITORY}:{content[:16]}"
        if self._run(["image", "exists", tag]).returncode != 0:
            with tempfile.TemporaryDirectory(prefix="bench-podman-build-") as directory:
                with tarfile.open(fileobj=io.BytesIO(context), mode="r") as tar:
                    # bench wrote this tar itself; keep its modes (/tmp is 1777, as in docker's)
                    tar.extractall(directory, filter="fully_trusted")
                # --layers=false: one image, no intermediate layers left in the store
                result = self._run(["build", "--layers=false", "--tag", tag, directory])
            if result.returncode != 0:
                raise ArtifactError(f"podman build of {tag} failed: {_tail(result.stderr)}")
        inspected = self._run(["image", "inspect", "--format", "{{.Id}}", tag])
        if inspected.returncode != 0:
            raise ArtifactError(f"podman image inspect {tag} failed: {_tail(inspected.stderr)}")
        return ProbeImage(tag, f"sha256:{inspected.stdout.strip()}", content)

    @property
    def image(self) -> ProbeImage:
        """The prepared image (prepare() must have run)."""
        if self._image is None:
            self.prepare([])
        assert self._image is not None
        return self._image

    def _info(self) -> dict[str, Any]:
        self._ensure_available()
        info: dict[str, Any] = json.loads(
            self._checked(["info", "--format", "json"], "podman info")
        )
        return info

    def versions(self) -> dict[str, Any]:
        """podman, the OCI runtime, conmon, the cgroup manager and store, as podman reports."""
        info = self._info()
        host, store = info.get("host", {}), info.get("store", {})
        runtime = host.get("ociRuntime", {})
        runtime_version = (runtime.get("version") or "").splitlines()
        conmon = re.search(r"version ([0-9][^,\s]*)", host.get("conmon", {}).get("version", ""))
        return {
            "podman": info.get("version", {}).get("Version", self._version),
            "runtime": runtime.get("name"),
            "runc": version_word(runtime_version[0]) if runtime_version else None,
            "conmon": conmon.group(1) if conmon else host.get("conmon", {}).get("version"),
            "cgroup_manager": host.get("cgroupManager"),
            "cgroup_version": host.get("cgroupVersion"),
            "storage_driver": store.get("graphDriverName"),
            "storage_root": store.get("graphRoot"),
            "events_backend": host.get("eventLogger"),
            "log_driver": "k8s-file",
        }

    def doctor_checks(self) -> list[HostCheck]:
        """Podman present (with versions), then a real ``podman run`` of the probe image."""
        rows = super().doctor_checks()
        if rows[0].status != "ok":
            return rows
        try:
            self.prepare([])
        except BenchError as exc:
            return [
                *rows,
                HostCheck(
                    "podman image",
                    "fail",
                    str(exc),
                    "build tools and busybox-static are needed: run ansible/up.sh",
                ),
            ]
        return [*rows, self._run_check()]

    def _run_check(self) -> HostCheck:
        name = f"bench-doctor-{os.getpid()}"
        files = InstanceFiles.for_name(name, self._run_dir)
        argv = create_argv(
            InstanceSpec(), name, "doctor", self.name, self.image.tag, files, self._ulimit_args()
        )
        argv[0:1] = ["run", "--rm"]
        started = time.monotonic()
        try:
            result = self._run(argv, timeout_s=60)
        except BenchError as exc:
            return HostCheck("podman run", "fail", str(exc), "see the podman error; ansible/up.sh")
        finally:
            self._run(["rm", "--force", "--time", "0", "--ignore", name])
            for path in files.all():
                path.unlink(missing_ok=True)
        elapsed_ms = (time.monotonic() - started) * 1000
        output = result.stdout + result.stderr
        if result.returncode == 0 and has_marker_line(result.stdout.encode(), READY_MARKER):
            return HostCheck(
                "podman run",
                "ok",
                f"podman run --rm of the probe image printed READY in {elapsed_ms:.0f} ms "
                f"(runtime {self.runtime}, {self.cgroup_manager}, {' '.join(self._ulimit_args())})",
            )
        return HostCheck("podman run", "fail", _tail(output), run_fix(output))

    def _ulimit_args(self) -> list[str]:
        if self._ulimits is None:
            self._ulimits = harness_ulimit_args()
        return self._ulimits

    # -- the lifecycle ------------------------------------------------------------------

    def _create(self, instance: Instance) -> None:
        files = InstanceFiles.for_name(instance.name, self._run_dir)
        # set before the call: a create that half-happened is still found by name
        instance.handle = {"id": None, "files": files, "log": K8sLogReader(files.log)}
        for path in files.all():
            path.unlink(missing_ok=True)
        argv = create_argv(
            instance.spec,
            instance.name,
            instance.run_id,
            self.name,
            self.image.tag,
            files,
            self._ulimit_args(),
        )
        stdout = self._checked(argv, f"container {instance.name}")
        lines = stdout.split()
        if not lines:
            raise InstanceError(f"container {instance.name}: podman create printed no id")
        container_id = lines[-1]
        instance.handle["id"] = container_id
        instance.labels["container_id"] = container_id[:12]
        instance.labels["image"] = self.image.image_id
        bundle = self._containers_dir / container_id / "userdata" if self._containers_dir else None
        instance.handle["bundle"] = bundle if bundle is not None and bundle.is_dir() else None

    def _start(self, instance: Instance) -> None:
        # conmon (started by this command) writes its OOM marker file "oom" into its
        # working directory, and podman < 5 looks for it only in the container's bundle
        # dir: started anywhere else, podman never reports OOMKilled (and the file litters
        # the caller's directory)
        self._checked(
            ["start", instance.handle["id"]],
            f"container {instance.name}",
            cwd=instance.handle.get("bundle"),
        )

    def _container_pid(self, instance: Instance) -> int | None:
        """The container init's host pid, from the pidfile conmon wrote (read once)."""
        handle = instance.handle or {}
        if "pid" not in handle:
            pid = read_pid_file(handle["files"].pidfile) if "files" in handle else None
            if pid is None:
                return None
            handle["pid"] = pid
        pid_value: int = handle["pid"]
        return pid_value

    def _pidfd(self, instance: Instance) -> int | None:
        """A pidfd of the container's init, opened once; None when it is gone or unknown."""
        handle = instance.handle
        if "pidfd" not in handle:
            pid = self._container_pid(instance)
            pidfd: int | None = None
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    pidfd = os.pidfd_open(pid)
            handle["pidfd"] = pidfd
        fd: int | None = handle["pidfd"]
        return fd

    def _wait_ready(self, instance: Instance, deadline: float) -> int:
        log: K8sLogReader = instance.handle["log"]
        while True:
            chunk = log.read()
            stamp = now_ns()
            if chunk:
                instance.output.extend(chunk)
                if has_marker_line(instance.output, READY_MARKER):
                    return stamp
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InstanceTimeout(
                    f"container {instance.name}: no {READY_MARKER} line before the timeout; "
                    f"last output: {instance.output_text(200)!r}"
                )
            pidfd = self._pidfd(instance)
            if pidfd is None:
                if self._container_pid(instance) is not None:
                    return self._ready_after_exit(instance, deadline)
                time.sleep(LOG_POLL_S)
                continue
            # the pidfd doubles as the poll interval: it wakes at once if the payload dies
            exited, _, _ = select.select([pidfd], [], [], min(LOG_POLL_S, remaining))
            if exited:
                return self._ready_after_exit(instance, deadline)

    def _ready_after_exit(self, instance: Instance, deadline: float) -> int:
        """The payload exited while READY was awaited: read what conmon logged, once complete."""
        self._exit_file_code(instance, min(deadline, time.monotonic() + EXIT_FILE_GRACE_S))
        instance.output.extend(instance.handle["log"].read())
        stamp = now_ns()
        if has_marker_line(instance.output, READY_MARKER):
            return stamp
        raise InstanceError(
            f"container {instance.name}: output ended before {READY_MARKER}; last output: "
            f"{instance.output_text(200)!r}"
        )

    def _wait_exit(self, instance: Instance, deadline: float) -> int:
        pidfd = self._pidfd(instance)
        if pidfd is not None:
            self._cgroup_dirs(instance)
            exited, _, _ = select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
            if not exited:
                raise InstanceTimeout(f"container {instance.name}: did not exit before the timeout")
            self._read_final_cgroup(instance)
        code = self._exit_file_code(instance, min(deadline, time.monotonic() + EXIT_FILE_GRACE_S))
        if code is None:
            code = self._podman_wait(instance, deadline)
        instance.output.extend(instance.handle["log"].read())
        return code

    def _exit_file_code(self, instance: Instance, deadline: float) -> int | None:
        """The exit code conmon wrote for the container, or None if it cannot be read.

        conmon writes ``<exit dir>/<container id>`` after draining the payload's output,
        within a few ms of the exit. The exit dir is read from conmon's command line.
        """
        exit_dir = self._conmon_exit_dir(instance)
        container_id = instance.handle.get("id")
        if exit_dir is None or not container_id:
            return None
        path = exit_dir / container_id
        while True:
            with contextlib.suppress(OSError, ValueError):
                return int(path.read_text().strip())
            if time.monotonic() >= deadline:
                return None
            time.sleep(EXIT_FILE_POLL_S)

    def _conmon_exit_dir(self, instance: Instance) -> Path | None:
        if self._exit_dir is None:
            pid = self._conmon_pid(instance)
            if pid is not None:
                self._exit_dir = conmon_exit_dir(cmdline_of(pid))
        return self._exit_dir

    def _podman_wait(self, instance: Instance, deadline: float) -> int:
        remaining = max(1.0, deadline - time.monotonic())
        result = self._run(
            ["wait", "--interval", "10ms", instance.handle["id"]], timeout_s=remaining
        )
        if result.returncode != 0:
            raise InstanceError(
                f"container {instance.name}: podman wait failed: {_tail(result.stderr)}"
            )
        try:
            return int(result.stdout.split()[-1])
        except (IndexError, ValueError):
            raise InstanceError(
                f"container {instance.name}: podman wait printed {result.stdout!r}"
            ) from None

    def _remove(self, instance: Instance) -> None:
        handle = instance.handle or {}
        log: K8sLogReader | None = handle.get("log")
        if log is not None:
            log.close()
        pidfd = handle.pop("pidfd", None)
        if pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(pidfd)
        # remember who must be gone before wait_gone is done (the pidfiles go with it)
        handle["gone_pids"] = [
            pid for pid in (self._container_pid(instance), self._conmon_pid(instance)) if pid
        ]
        target = handle.get("id") or instance.name
        try:
            result = self._run(["rm", "--force", "--time", "0", "--ignore", target])
            if result.returncode != 0 and "no such container" not in result.stderr.lower():
                raise InstanceError(
                    f"container {instance.name}: remove failed: {_tail(result.stderr)}"
                )
        finally:
            files: InstanceFiles = handle.get("files") or InstanceFiles.for_name(
                instance.name, self._run_dir
            )
            for path in files.all():
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)

    def _wait_gone(self, instance: Instance, deadline: float) -> None:
        handle = instance.handle or {}
        pids = handle.get("gone_pids", [])
        container_id = handle.get("id")
        while time.monotonic() < deadline:
            alive = [pid for pid in pids if pid_alive(pid)]
            if not alive and not (container_id and processes_mentioning(container_id)):
                return
            time.sleep(GONE_POLL_S)
        raise InstanceError(f"container {instance.name}: host processes still alive after removal")

    # -- what exists because of an instance ---------------------------------------------

    def _conmon_pid(self, instance: Instance) -> int | None:
        handle = instance.handle or {}
        if "conmon_pid" not in handle:
            pid = read_pid_file(handle["files"].conmon_pidfile) if "files" in handle else None
            if pid is None:
                return None
            handle["conmon_pid"] = pid
        conmon_pid: int = handle["conmon_pid"]
        return conmon_pid

    def main_pid(self, instance: Instance) -> int | None:
        """The container's init on the host, while it runs (from conmon's pidfile)."""
        pid = self._container_pid(instance)
        return pid if pid is not None and pid_alive(pid) else None

    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        """The container's processes (its memory cgroup) and its conmon.

        conmon is charged to podman's shared ``conmon`` cgroup, not the container's, but
        exists because of the container (like docker's containerd-shim).
        """
        pid = self.main_pid(instance)
        conmon = self._conmon_pid(instance)
        conmons = [conmon] if conmon is not None and pid_alive(conmon) else []
        if pid is None:
            return {"container": [], "conmon": conmons}
        container = [pid]
        directory = cgroup_dir_for_pid(pid, "memory", self.layout)
        if directory is not None:
            with contextlib.suppress(OSError, ValueError):
                container = (
                    sorted(int(p) for p in (directory / "cgroup.procs").read_text().split())
                    or container
                )
        return {"container": container, "conmon": conmons}

    def _cgroup_dirs(self, instance: Instance) -> dict[str, Path]:
        """The container's cgroup dirs, looked up once while its init lives."""
        handle = instance.handle
        if not handle.get("cgroup_dirs"):
            pid = self.main_pid(instance)
            handle["cgroup_dirs"] = instance_cgroup_dirs(pid, self.layout) if pid else {}
        dirs: dict[str, Path] = handle["cgroup_dirs"]
        return dirs

    def limit_readings(
        self, instance: Instance, layout: CgroupLayout
    ) -> Callable[[], dict[str, Any]]:
        """The container's own cgroups (found from its init's pid, remembered for exit)."""
        dirs = self._cgroup_dirs(instance)
        if not dirs:
            raise InstanceError(f"{instance.name}: no host pid to find its cgroup")
        return cgroup_reader(dirs, layout)

    def _read_final_cgroup(self, instance: Instance) -> None:
        """Counters of the container's memory cgroup just after the payload exited.

        The cgroup lives on until podman's cleanup (started by conmon, tens of ms later)
        removes it, so the OOM-kill counter and the peak are still the container's own.
        """
        directory = self._cgroup_dirs(instance).get("memory")
        if directory is None or not directory.is_dir():
            return
        events = read_memory_events(directory, self.layout)
        usage = read_memory_usage(directory, self.layout)
        if events.get("oom_kill") is not None or usage.get("peak_bytes") is not None:
            instance.handle["final"] = {
                "oom_kill_final": events.get("oom_kill"),
                "peak_bytes_final": usage.get("peak_bytes"),
            }

    def exit_details(self, instance: Instance) -> dict[str, Any]:
        """Podman's verdict (State.OOMKilled, ExitCode) and the cgroup's counters at exit.

        podman's OOMKilled is a verdict only when conmon ran in the container's bundle dir
        (see ``_start``); otherwise ``oom_killed`` is None (no verdict) unless it is true,
        and the kernel's oom_kill counter read at exit is the evidence.
        """
        details: dict[str, Any] = dict(instance.handle.get("final", {}))
        container_id = instance.handle.get("id")
        if not container_id:
            return details
        result = self._run(["inspect", "--type", "container", "--format", "json", container_id])
        if result.returncode != 0:
            details["inspect_error"] = _tail(result.stderr)
            return details
        state = (json.loads(result.stdout) or [{}])[0].get("State", {})
        engine_oom = bool(state.get("OOMKilled"))
        has_verdict = engine_oom or instance.handle.get("bundle") is not None
        details.update(
            {
                "oom_killed": engine_oom if has_verdict else None,
                "engine_oom_killed": engine_oom,
                "killed_by_host": state.get("ExitCode") == EXIT_SIGKILL,
                "engine_exit_code": state.get("ExitCode"),
            }
        )
        return details

    # -- finding what bench left behind -------------------------------------------------

    def _bench_containers(self) -> list[tuple[str, str]]:
        """(id, name) of every container of this backend's in podman's store."""
        self._ensure_available()
        stdout = self._checked(
            ["ps", "--all", "--filter", f"label={BENCH_LABEL}", "--format", "json"],
            "podman ps",
        )
        found = []
        for container in json.loads(stdout or "[]") or []:
            labels = container.get("Labels") or {}
            if labels.get(BENCH_BACKEND_LABEL, self.name) != self.name:
                continue
            names = container.get("Names") or [container.get("Id", "")[:12]]
            found.append((container.get("Id", ""), names[0]))
        return found

    def _force_remove(self, container_ids: Sequence[str]) -> None:
        if container_ids:
            self._run(["rm", "--force", "--time", "0", "--ignore", *container_ids])

    def sweep(self) -> list[str]:
        """Force-remove every container labelled by bench, and their files in the run dir."""
        containers = self._bench_containers()
        self._force_remove([container_id for container_id, _ in containers])
        remaining = {name for _, name in self._bench_containers()}
        with contextlib.suppress(OSError):
            for path in self._run_dir.iterdir():
                owner = path.name.split(".", 1)[0]
                if owner.startswith(NAME_PREFIX) and owner not in remaining:
                    path.unlink(missing_ok=True)
        return sorted(name for _, name in containers)

    def leftovers(self) -> list[str]:
        """Names of bench's podman containers that exist now."""
        return sorted(name for _, name in self._bench_containers())

    def _remove_named(self, names: list[str], everything: bool) -> None:
        """Force-remove these containers of bench's, and their files."""
        wanted = set(names)
        self._force_remove([cid for cid, name in self._bench_containers() if name in wanted])
        for name in wanted:
            for path in InstanceFiles.for_name(name, self._run_dir).all():
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)

    def remove_images(self) -> list[str]:
        """Remove bench's probe images from podman's store (``bench clean --images``)."""
        self._ensure_available()
        result = self._run(["images", "--filter", f"label={IMAGE_LABEL}=true", "--format", "json"])
        if result.returncode != 0:
            return []
        removed: list[str] = []
        for image in json.loads(result.stdout or "[]") or []:
            image_id = image.get("Id")
            if image_id and self._run(["rmi", "--force", image_id]).returncode == 0:
                removed.extend(image.get("Names") or [image_id])
        return removed


def _tail(text: str, limit: int = 400) -> str:
    text = text.strip()
    return text[-limit:] if text else "(no output)"
