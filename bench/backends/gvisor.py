"""gVisor: the probe in the same FROM-scratch container, run by ``runsc`` through Docker.

The application runs on gVisor's user-space kernel (the Sentry, ptrace platform here:
nested hosts have no usable KVM), not on the host kernel: a *sandbox*, between a
container and a VM. Everything else is the docker backend's (Engine API, labels, attach
before start, stages), so the two differ only in the runtime.

What the host sees, and what it means for the metrics:
- the container's cgroup holds the Sentry (``runsc-sandbox``), the gofer and the ptrace
  stubs: the memory limit covers the sandbox's own kernel, so a limit check sets it as
  the sandbox's calibrated footprint plus the scenario's limit (like a VM's);
- the payload's processes are the Sentry's, not host tasks: a host pids limit caps the
  sandbox's own threads (with 20 the sandbox cannot even start), so the pids check is
  not applicable on the host side;
- runsc is registered with the engine in /etc/docker/daemon.json with
  ``--platform=ptrace --network=none`` (runsc refuses networking in the root namespace):
  ansible/up.sh does this and reloads dockerd.
"""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any

from bench.backends.base import (
    BENCH_LABEL,
    Capabilities,
    HostCheck,
    Instance,
    LimitSupport,
    Mechanism,
)
from bench.backends.docker import BENCH_BACKEND_LABEL, DOCKER_FIX, DockerBackend
from bench.errors import BackendUnavailable, BenchError

RUNSC_FIX = (
    "run ansible/up.sh (installs runsc and registers it in /etc/docker/daemon.json with "
    '"runtimeArgs": ["--platform=ptrace", "--network=none"], then reloads dockerd)'
)


class GvisorBackend(DockerBackend):
    """Containers under gVisor's runsc runtime (see the module docstring)."""

    name = "gvisor"
    description = (
        "The probe in the same FROM-scratch container, run by gVisor's runsc (ptrace "
        "platform) through the Docker Engine API: a user-space kernel between container and VM."
    )
    runtime = "runsc"
    capabilities = Capabilities(
        mechanism=Mechanism.SANDBOX,
        limits={
            "memory": LimitSupport(
                "create",
                "docker --memory at create, on the sandbox's cgroup (it also holds the "
                "Sentry and gofer)",
            ),
            "cpu": LimitSupport("create", "docker --cpus (CFS quota) at create, on the sandbox"),
            "pids": LimitSupport(
                None,
                "a sandboxed process is the Sentry's, not a host task: a host pids limit "
                "caps the sandbox's own threads instead (with 20 the sandbox cannot start)",
            ),
        },
        roles=("sandbox", "containerd-shim"),
        runtime_in_limit=True,
        footprint_estimate_mib=30.0,
        engine_processes=("dockerd", "containerd"),
    )

    def check_available(self) -> None:
        """The engine answers, and runsc is registered with it as a runtime."""
        super().check_available()
        runtimes = self.client.info().get("Runtimes") or {}
        if self.runtime not in runtimes:
            raise BackendUnavailable(
                self.name,
                f"the Docker engine has no {self.runtime!r} runtime "
                f"(it has: {', '.join(sorted(runtimes)) or 'none'})",
                RUNSC_FIX,
            )

    def _runsc_path(self) -> str:
        runtimes = self.client.info().get("Runtimes") or {}
        return str((runtimes.get(self.runtime) or {}).get("path") or "runsc")

    def versions(self) -> dict[str, Any]:
        """The engine's versions, plus runsc's own and the arguments it runs with."""
        versions = super().versions()
        runtimes = self.client.info().get("Runtimes") or {}
        versions["runsc_args"] = (runtimes.get(self.runtime) or {}).get("runtimeArgs")
        versions["runsc"] = None
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            output = subprocess.run(
                [self._runsc_path(), "--version"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
            versions["runsc"] = output.splitlines()[0].removeprefix("runsc version ").strip()
        return versions

    def metadata(self) -> dict[str, Any]:
        """Mechanism, runtime and the gVisor platform."""
        return {**super().metadata(), "platform": "ptrace"}

    def doctor_checks(self) -> list[HostCheck]:
        """Engine reachable, runsc registered, and a real sandbox runs the probe."""
        try:
            self.check_available()
            versions = self.versions()
            self.prepare([])
            container = self.client.containers.run(
                self.image.tag,
                ["ready"],
                runtime=self.runtime,
                network_mode="none",
                remove=True,
                labels={BENCH_LABEL: "true", BENCH_BACKEND_LABEL: self.name},
                name=f"bench-doctor-{self.name}",
            )
            said = container.decode(errors="replace").strip() if container else ""
        except BenchError as exc:
            fix = getattr(exc, "fix", "") or DOCKER_FIX
            return [HostCheck(self.name, "fail", str(exc), fix)]
        except Exception as exc:
            return [
                HostCheck(
                    self.name, "fail", f"a runsc sandbox did not run the probe: {exc}", RUNSC_FIX
                )
            ]
        finally:
            self.close()
        if said != "READY":
            return [HostCheck(self.name, "fail", f"the probe said {said!r}", RUNSC_FIX)]
        return [
            HostCheck(
                self.name,
                "ok",
                f"runsc {versions.get('runsc')} {' '.join(versions.get('runsc_args') or [])}, "
                f"engine {versions.get('docker_engine')}: a sandbox ran the probe",
            )
        ]

    def host_processes(self, instance: Instance) -> dict[str, list[int]]:
        """The sandbox's processes (Sentry, gofer, ptrace stubs: its cgroup) and the shim."""
        roles = super().host_processes(instance)
        return {"sandbox": roles.get("container", []), "containerd-shim": roles["containerd-shim"]}
