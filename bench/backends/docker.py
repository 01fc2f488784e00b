"""Containers through the Docker Engine API (docker SDK), timed stage by stage.

Lifecycle per instance: create the container (labelled, named ``bench-...``), attach to
its output stream before starting it (so READY cannot be missed), start, read READY
from the attach stream, wait for exit, remove. Network mode defaults to none.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from bench.artifacts.image import IMAGE_LABEL, ProbeImage, build_probe_image
from bench.artifacts.probe import build_probe
from bench.backends.base import (
    BENCH_LABEL,
    BENCH_RUN_LABEL,
    NAME_PREFIX,
    Backend,
    Capabilities,
    Instance,
    LimitSupport,
    Mechanism,
    now_ns,
)
from bench.backends.host_procs import processes_mentioning, wait_for_pid_exit
from bench.backends.stream import READY_MARKER, DockerStreamDemuxer, wait_for_marker
from bench.cgroups.events_watch import MemoryEventsWatch
from bench.cgroups.layout import CgroupLayout
from bench.cgroups.layout import detect as detect_layout
from bench.cgroups.readers import cgroup_dir_for_pid
from bench.errors import BackendUnavailable, InstanceError, InstanceTimeout
from bench.interrupts import deferred
from bench.scenario import InstanceSpec

# Which bench backend made a container (docker and gvisor share the engine).
BENCH_BACKEND_LABEL = "io.bench.backend"
DOCKER_FIX = "start the engine with ansible/up.sh (or check /var/run/docker.sock)"
MIB = 1024 * 1024


class DockerBackend(Backend):
    """Run the probe in a FROM-scratch container through the Engine API."""

    name = "docker"
    description = "The probe in a FROM-scratch container, through the Docker Engine API (runc)."
    capabilities = Capabilities(
        mechanism=Mechanism.CONTAINER,
        limits={
            "memory": LimitSupport("create", "docker --memory (= --memory-swap) at create"),
            "cpu": LimitSupport("create", "docker --cpus (CFS quota) at create"),
            "pids": LimitSupport("create", "docker --pids-limit at create"),
        },
        roles=("container", "containerd-shim"),
        footprint_estimate_mib=6.0,
        engine_processes=("dockerd", "containerd"),
    )
    # The OCI runtime the engine runs containers with; None: the engine's default (runc).
    runtime: str | None = None

    def __init__(self, base_url: str | None = None) -> None:
        self._base_url = base_url
        self._client: Any = None
        self._image: ProbeImage | None = None

    def metadata(self) -> dict[str, Any]:
        """Mechanism and the OCI runtime containers run under."""
        return {**super().metadata(), "runtime": self.runtime or "runc"}

    @property
    def client(self) -> Any:
        """The docker SDK client (connects on first use)."""
        if self._client is None:
            self.check_available()
        return self._client

    def check_available(self) -> None:
        """Import the SDK and ping the engine; explain how to fix either failing."""
        try:
            import docker
        except ImportError:
            raise BackendUnavailable(
                self.name, "the docker Python SDK is not installed", "pip install docker"
            ) from None
        unreachable = _unix_socket_problem(self._base_url or os.environ.get("DOCKER_HOST"))
        if unreachable:
            # checked with our own socket first: docker-py leaks its socket on a failed connect
            raise BackendUnavailable(self.name, unreachable, DOCKER_FIX)
        client = None
        try:
            if self._base_url:
                client = docker.DockerClient(base_url=self._base_url, version="auto", timeout=60)
            else:
                client = docker.from_env(version="auto", timeout=60)
            client.ping()
        except Exception as exc:
            if client is not None:
                client.close()
            reason = str(exc).splitlines()[0][:200]
            raise BackendUnavailable(
                self.name, f"cannot reach the Docker engine ({reason})", DOCKER_FIX
            ) from None
        self._client = client

    def close(self) -> None:
        """Close the SDK client's connection pool."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def prepare(self, specs: Sequence[InstanceSpec]) -> dict[str, str]:
        """Build the probe and the FROM-scratch image (cached by content hash)."""
        probe = build_probe()
        self._image = build_probe_image(self.client, probe)
        return {"image": self._image.image_id, "image_tag": self._image.tag}

    @property
    def image(self) -> ProbeImage:
        """The prepared image (prepare() must have run)."""
        if self._image is None:
            self.prepare([])
        assert self._image is not None
        return self._image

    def versions(self) -> dict[str, Any]:
        """Engine, API, containerd and runc versions as the engine reports them."""
        info = self.client.version()
        components = {c.get("Name"): c.get("Version") for c in info.get("Components", [])}
        return {
            "docker_engine": info.get("Version"),
            "docker_api": info.get("ApiVersion"),
            "containerd": components.get("containerd"),
            "runc": components.get("runc"),
            "docker_sdk": _sdk_version(),
            "storage_driver": self.client.info().get("Driver"),
            "cgroup_driver": self.client.info().get("CgroupDriver"),
        }

    def _create(self, instance: Instance) -> None:
        api = self.client.api
        spec = instance.spec
        host_config = api.create_host_config(
            network_mode=spec.network,
            mem_limit=spec.memory_mib * MIB if spec.memory_mib is not None else None,
            memswap_limit=spec.memory_mib * MIB if spec.memory_mib is not None else None,
            nano_cpus=round(spec.cpus * 1e9) if spec.cpus is not None else None,
            pids_limit=spec.pids_limit,
            runtime=self.runtime,
        )
        created = api.create_container(
            image=self.image.tag,
            command=spec.payload.argv(),
            name=instance.name,
            labels={
                BENCH_LABEL: "true",
                BENCH_RUN_LABEL: instance.run_id,
                BENCH_BACKEND_LABEL: self.name,
            },
            host_config=host_config,
            network_disabled=spec.network == "none",
        )
        instance.handle = {"id": created["Id"], "sock": None, "demux": DockerStreamDemuxer()}
        instance.labels["container_id"] = created["Id"][:12]
        instance.labels["image"] = self.image.image_id

    def _before_start(self, instance: Instance) -> None:
        # attach before start so no output can be missed; stamped as its own stage
        sock = self.client.api.attach_socket(
            instance.handle["id"], params={"stdout": 1, "stderr": 1, "stream": 1, "logs": 1}
        )
        instance.handle["sock"] = sock
        instance.t_ns["attached"] = now_ns()

    def _start(self, instance: Instance) -> None:
        self.client.api.start(instance.handle["id"])

    def _raw_socket(self, instance: Instance) -> socket.socket:
        sock = instance.handle["sock"]
        return getattr(sock, "_sock", sock)  # type: ignore[no-any-return]

    def _read_chunk(self, instance: Instance) -> bytes | None:
        data = self._raw_socket(instance).recv(65536)
        if not data:
            return None
        demux: DockerStreamDemuxer = instance.handle["demux"]
        return b"".join(payload for _stream, payload in demux.feed(data))

    def _wait_ready(self, instance: Instance, deadline: float) -> int:
        raw = self._raw_socket(instance)
        return wait_for_marker(
            raw.fileno(),
            lambda: self._read_chunk(instance),
            instance.output,
            READY_MARKER,
            deadline,
            f"container {instance.name}",
        )

    def _wait_exit(self, instance: Instance, deadline: float) -> int:
        # Wait on the container's init through a pidfd first: an interrupt there leaves
        # nothing half-done, while one inside the engine's long-polling wait call would
        # drop that HTTP connection unclosed. Once the init is gone, the engine's wait
        # returns at once, and runs held against interrupts (bench.interrupts).
        pid = self.main_pid(instance)
        if pid is not None and not wait_for_pid_exit(pid, deadline):
            raise InstanceTimeout(f"container {instance.name}: did not exit before the timeout")
        remaining = max(1, int(deadline - time.monotonic() + 0.999))
        try:
            with deferred():
                result = self.client.api.wait(instance.handle["id"], timeout=remaining)
        except Exception as exc:
            if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
                raise InstanceTimeout(
                    f"container {instance.name}: did not exit before the timeout"
                ) from None
            raise InstanceError(f"container {instance.name}: wait failed: {exc}") from exc
        self._drain(instance)
        return int(result.get("StatusCode", -1))

    def _drain(self, instance: Instance) -> None:
        raw = self._raw_socket(instance)
        with contextlib.suppress(OSError):
            raw.setblocking(False)
            while True:
                data = raw.recv(65536)
                if not data:
                    break
                demux: DockerStreamDemuxer = instance.handle["demux"]
                instance.output.extend(b"".join(p for _s, p in demux.feed(data)))

    def _remove(self, instance: Instance) -> None:
        handle = instance.handle or {}
        self._stop_events_watch(instance)
        sock = handle.get("sock")
        if sock is not None:
            # SocketIO.close() leaves the real socket open (and forgets it): close it first
            raw = getattr(sock, "_sock", None)
            with contextlib.suppress(Exception):
                if raw is not None:
                    raw.close()
            with contextlib.suppress(Exception):
                sock.close()
        container_id = handle.get("id")
        if container_id is None:
            # create failed before an id came back: the name still finds it
            container_id = instance.name
        try:
            self.client.api.remove_container(container_id, force=True)
        except Exception as exc:
            # gone already, or someone (bench clean) is removing it right now: both fine
            if type(exc).__name__ != "NotFound" and "already in progress" not in str(exc):
                raise InstanceError(f"container {instance.name}: remove failed: {exc}") from exc

    def main_pid(self, instance: Instance) -> int | None:
        """The container's init on the host (inspected once, after READY, never timed)."""
        handle = instance.handle or {}
        if handle.get("pid") is None and handle.get("id"):
            with deferred():  # a request cut in half leaves its connection unclosed
                state = self.client.api.inspect_container(handle["id"]).get("State", {})
            # a container that already exited reports Pid 0 (or a pid that may be reused)
            handle["pid"] = (state.get("Pid") or None) if state.get("Running") else None
        pid = handle.get("pid")
        return int(pid) if pid else None

    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        """The container's processes (its memory cgroup) and its containerd-shim."""
        pid = self.main_pid(instance)
        if pid is None:
            return {"container": [], "containerd-shim": []}
        container = [pid]
        directory = cgroup_dir_for_pid(pid, "memory", detect_layout())
        if directory is not None:
            with contextlib.suppress(OSError, ValueError):
                container = (
                    sorted(int(p) for p in (directory / "cgroup.procs").read_text().split())
                    or container
                )
        shims: list[int] = []
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid).parent()
            if parent is not None and "containerd-shim" in parent.name():
                shims.append(parent.pid)
        return {"container": container, "containerd-shim": shims}

    def limit_readings(
        self, instance: Instance, layout: CgroupLayout
    ) -> Callable[[], dict[str, Any]]:
        """The container's cgroups, sampled; on v2 also its memory.events, on every change.

        The container's cgroup vanishes moments after an OOM kill, usually before the
        next sample: an inotify watch (``MemoryEventsWatch``) reads ``memory.events``
        the moment the kernel changes it, so the kill count is read from the cgroup's own
        counter while it still exists. v1 has no such event: there, the engine's
        OOMKilled flag is the evidence.
        """
        reader = super().limit_readings(instance, layout)
        pid = self.main_pid(instance)
        if layout.version == 2 and pid is not None:
            directory = cgroup_dir_for_pid(pid, "memory", layout)
            if directory is not None:
                with contextlib.suppress(OSError):
                    instance.handle["events_watch"] = MemoryEventsWatch(directory).start()
        return reader

    def _stop_events_watch(self, instance: Instance) -> dict[str, Any]:
        watch: MemoryEventsWatch | None = (instance.handle or {}).pop("events_watch", None)
        if watch is None:
            return {}
        last = watch.stop()
        if not last:
            return {}
        return {
            "oom_kill_final": last.get("oom_kill"),
            "memory_events_final": last,
            "oom_kill_source": "memory.events of the container's cgroup, read on each "
            f"change until the cgroup was removed ({watch.reads} reads; {watch.ended})",
        }

    def exit_details(self, instance: Instance) -> dict[str, Any]:
        """The engine's verdict on the exit (OOMKilled, exit code), read before removal.

        On cgroup v2, also ``oom_kill_final``: the container cgroup's own ``oom_kill``
        counter, its last value before the cgroup vanished (see ``limit_readings``).
        """
        with deferred():  # a request cut in half leaves its connection unclosed
            state = self.client.api.inspect_container(instance.handle["id"]).get("State", {})
        return {
            "oom_killed": bool(state.get("OOMKilled")),
            "killed_by_host": state.get("ExitCode") == 128 + 9,
            "engine_exit_code": state.get("ExitCode"),
            **self._stop_events_watch(instance),
        }

    def _wait_gone(self, instance: Instance, deadline: float) -> None:
        container_id = (instance.handle or {}).get("id")
        if not container_id:
            return
        while time.monotonic() < deadline:
            if not processes_mentioning(container_id):
                return
            time.sleep(0.002)
        raise InstanceError(f"container {instance.name}: host processes still alive after removal")

    def _bench_containers(self) -> list[Any]:
        found = self.client.containers.list(all=True, filters={"label": BENCH_LABEL})
        named = self.client.containers.list(all=True, filters={"name": NAME_PREFIX})
        by_id = {
            c.id: c
            for c in [*found, *named]
            if (c.name.startswith(NAME_PREFIX) or c.labels.get(BENCH_LABEL))
            # each backend on this engine finds its own; unlabelled ones are docker's
            and c.labels.get(BENCH_BACKEND_LABEL, DockerBackend.name) == self.name
        }
        return list(by_id.values())

    def sweep(self) -> list[str]:
        """Force-remove every container labelled by bench (or named with its prefix)."""
        removed = []
        for container in self._bench_containers():
            with contextlib.suppress(Exception):
                container.remove(force=True)
            removed.append(container.name)
        return sorted(removed)

    def leftovers(self) -> list[str]:
        """Names of bench's containers that exist now."""
        return sorted(c.name for c in self._bench_containers())

    def _remove_named(self, names: list[str], everything: bool) -> None:
        """Force-remove these containers of bench's."""
        wanted = set(names)
        for container in self._bench_containers():
            if container.name in wanted:
                with contextlib.suppress(Exception):
                    container.remove(force=True)

    def remove_images(self) -> list[str]:
        """Remove bench's probe images (``bench clean --images``)."""
        removed: list[str] = []
        for image in self.client.images.list(filters={"label": f"{IMAGE_LABEL}=true"}):
            with contextlib.suppress(Exception):
                self.client.images.remove(image.id, force=True)
                removed.extend(image.tags or [image.id])
        return removed


def _unix_socket_problem(base_url: str | None) -> str | None:
    """Say why the engine's unix socket cannot be connected to, or None if it can (or is TCP)."""
    url = base_url or "unix:///var/run/docker.sock"
    if not url.startswith("unix://"):
        return None
    path = url.removeprefix("unix://")
    if not os.path.exists(path):
        return f"no engine socket at {path} (dockerd is not running?)"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(path)
        except OSError as exc:
            return f"cannot connect to {path} ({exc.strerror or exc})"
    return None


def _sdk_version() -> str | None:
    try:
        import docker

        return str(docker.__version__)
    except ImportError:
        return None
