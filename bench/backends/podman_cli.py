"""How bench speaks to podman: argv lists, per-instance files, and the k8s-file log.

Pure functions of the instance spec and the host's limits (tested on fixed inputs), plus
the reader of the log file conmon writes. The podman backend (``bench.backends.podman``)
runs these argv lists; nothing here starts a process. Why each flag is there is told in
that module's docstring.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.backends.base import BENCH_LABEL, BENCH_RUN_LABEL
from bench.scenario import InstanceSpec

# Which bench backend made a container (the same label the docker backends use).
BENCH_BACKEND_LABEL = "io.bench.backend"
# Per-instance files: the k8s-file log conmon writes, the container's and conmon's pids.
RUN_DIR = Path("/run/bench/podman")


@dataclass(frozen=True)
class InstanceFiles:
    """Where one instance's log and pidfiles live (all removed with the instance)."""

    log: Path
    pidfile: Path
    conmon_pidfile: Path

    @classmethod
    def for_name(cls, name: str, run_dir: Path = RUN_DIR) -> InstanceFiles:
        """The files of the instance called ``name``."""
        return cls(run_dir / f"{name}.log", run_dir / f"{name}.pid", run_dir / f"{name}.conmon.pid")

    def all(self) -> tuple[Path, ...]:
        """Every file, for removal."""
        return (self.log, self.pidfile, self.conmon_pidfile)


def _rlimit_text(value: int) -> str:
    return "-1" if value == resource.RLIM_INFINITY else str(value)


def ulimit_args(nofile: tuple[int, int], nproc: tuple[int, int], pid_max: int | None) -> list[str]:
    """``--ulimit`` flags for nofile and nproc, from the harness's own limits (see above).

    ``nproc`` is capped at ``pid_max`` because podman lowers its own RLIMIT_NPROC to it.
    """

    def capped(value: int) -> int:
        if pid_max is None:
            return value
        return pid_max if value == resource.RLIM_INFINITY else min(value, pid_max)

    nproc_soft, nproc_hard = capped(nproc[0]), capped(nproc[1])
    return [
        "--ulimit",
        f"nofile={_rlimit_text(nofile[0])}:{_rlimit_text(nofile[1])}",
        "--ulimit",
        f"nproc={_rlimit_text(nproc_soft)}:{_rlimit_text(nproc_hard)}",
    ]


def harness_ulimit_args() -> list[str]:
    """``ulimit_args`` for this process's limits and this host's kernel.pid_max."""
    pid_max: int | None
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        pid_max = None
    return ulimit_args(
        resource.getrlimit(resource.RLIMIT_NOFILE),
        resource.getrlimit(resource.RLIMIT_NPROC),
        pid_max,
    )


def limit_args(spec: InstanceSpec) -> list[str]:
    """``--memory`` (= ``--memory-swap``), ``--cpus`` and ``--pids-limit`` from the spec."""
    args: list[str] = []
    if spec.memory_mib is not None:
        args += ["--memory", f"{spec.memory_mib}m", "--memory-swap", f"{spec.memory_mib}m"]
    if spec.cpus is not None:
        args += ["--cpus", f"{spec.cpus:g}"]
    # podman's own default is 2048; an unset limit means unlimited, as for docker
    args += ["--pids-limit", str(spec.pids_limit if spec.pids_limit is not None else -1)]
    return args


def create_argv(
    spec: InstanceSpec,
    name: str,
    run_id: str,
    backend: str,
    image: str,
    files: InstanceFiles,
    ulimits: Sequence[str],
) -> list[str]:
    """The ``podman create`` arguments (after the global flags) for one instance."""
    return [
        "create",
        "--name",
        name,
        "--label",
        f"{BENCH_LABEL}=true",
        "--label",
        f"{BENCH_RUN_LABEL}={run_id}",
        "--label",
        f"{BENCH_BACKEND_LABEL}={backend}",
        "--network",
        spec.network,
        "--pull",
        "never",
        "--log-driver",
        "k8s-file",
        "--log-opt",
        f"path={files.log}",
        "--pidfile",
        str(files.pidfile),
        "--conmon-pidfile",
        str(files.conmon_pidfile),
        *ulimits,
        *limit_args(spec),
        image,
        *spec.payload.argv(),
    ]


class K8sLogReader:
    """Payload bytes from a k8s-file log: ``<time> <stream> <F|P> <text>`` per line.

    ``F`` ends a line of the payload's output; ``P`` is a part of a longer line, continued
    by the next record. Reads only what was appended since the last call.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pending = bytearray()

    def read(self) -> bytes:
        """The payload's output appended since the last call (complete records only)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return b""
        chunks = []
        while chunk := os.read(self._fd, 65536):
            chunks.append(chunk)
        if not chunks:
            return b""
        self._pending.extend(b"".join(chunks))
        out = bytearray()
        while (end := self._pending.find(b"\n")) >= 0:
            out.extend(parse_k8s_record(bytes(self._pending[:end])))
            del self._pending[: end + 1]
        return bytes(out)

    def close(self) -> None:
        """Close the log file (safe to call twice)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def parse_k8s_record(record: bytes) -> bytes:
    """The payload bytes one k8s-file record stands for (a full line ends with newline)."""
    parts = record.split(b" ", 3)
    if len(parts) < 3:
        return b""
    text = parts[3] if len(parts) == 4 else b""
    return text if parts[2] == b"P" else text + b"\n"


def conmon_exit_dir(cmdline: list[str]) -> Path | None:
    """The ``--exit-dir`` conmon was started with (from its argv), or None."""
    for index, arg in enumerate(cmdline):
        if arg == "--exit-dir" and index + 1 < len(cmdline):
            return Path(cmdline[index + 1])
        if arg.startswith("--exit-dir="):
            return Path(arg.split("=", 1)[1])
    return None


def version_word(line: str) -> str | None:
    """The version number in a ``... version X.Y.Z ...`` line, or None."""
    match = re.search(r"version ([0-9][^\s]*)", line)
    return match.group(1) if match else None


def run_fix(output: str) -> str:
    """How to fix a failed ``podman run``, from what podman said."""
    if "rlimit" in output:
        return (
            "root lacks CAP_SYS_RESOURCE and a container rlimit is above the caller's hard "
            "limit: bench passes --ulimit nofile/nproc from its own limits; check "
            "`ulimit -Hn` / `ulimit -Hu` and kernel.pid_max"
        )
    if "hybrid" in output or "crun" in output:
        return "crun cannot run on a hybrid cgroup layout: install runc (apt-get install runc)"
    if "runtime" in output and "not found" in output:
        return "install runc (apt-get install runc; ansible/up.sh does)"
    if "image not known" in output or "pull" in output:
        return "the probe image is missing from podman's store: run bench doctor again"
    return "see the podman error above; ansible/up.sh installs podman and runc"
