"""Which bench runs are alive on this host, and which instances are whose.

A run registers itself in ``/run/bench/active/<run_id>.json`` (its pid, the pid's start
time and the host's boot id: a pid alone may be reused) for as long as its process
lives, and records the same identity in run.json. From that:

- ``bench ls`` shows a run whose status is still ``running`` but whose process is gone
  as ``abandoned``;
- two runs on one host work side by side, and each records that the other was running
  (they disturb each other's figures: the run says so rather than refusing);
- ``bench clean`` removes only instances of runs that are not alive (``--all``: every
  one). Every instance name carries its run's suffix: ``bench-<last 6 of run id>-<n>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.backends.accel import boot_id
from bench.backends.host_procs import pid_alive

ACTIVE_DIR = Path("/run/bench/active")
INSTANCE_NAME = re.compile(r"^bench-([0-9a-f]{6})-\d+(?:\.|$)")
# the one guest a KVM probe boots, named for the process that probes (no run owns it)
PROBE_NAME = re.compile(r"^bench-kvmprobe-(\d+)(?:\.|$)")


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as it can be told apart from a later one that reuses its pid."""

    pid: int
    start_ticks: int | None
    boot_id: str

    def alive(self) -> bool:
        """True while this very process (not a pid reuser) runs on this host boot."""
        if self.boot_id != boot_id():
            return False
        return _start_ticks(self.pid) == self.start_ticks and self.start_ticks is not None


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields and fields[0] == "Z":
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def this_process() -> ProcessIdentity:
    """The identity of the calling process."""
    return ProcessIdentity(os.getpid(), _start_ticks(os.getpid()), boot_id())


def identity_from(record: dict[str, Any] | None) -> ProcessIdentity | None:
    """The identity stored in a run.json (``process``), or None for runs that have none."""
    if not isinstance(record, dict):
        return None
    try:
        return ProcessIdentity(
            int(record["pid"]), record.get("start_ticks"), str(record.get("boot_id"))
        )
    except (KeyError, TypeError, ValueError):
        return None


def register(run_id: str, directory: Path, active_dir: Path = ACTIVE_DIR) -> ProcessIdentity:
    """Mark the calling process as running ``run_id``; return its identity."""
    identity = this_process()
    active_dir.mkdir(parents=True, exist_ok=True)
    entry = {"run_id": run_id, "directory": str(directory), **asdict(identity)}
    (active_dir / f"{run_id}.json").write_text(json.dumps(entry))
    return identity


def unregister(run_id: str, active_dir: Path = ACTIVE_DIR) -> None:
    """Forget ``run_id`` (the run ended)."""
    for suffix in (".json", ".seen"):
        with contextlib.suppress(OSError):
            (active_dir / f"{run_id}{suffix}").unlink()


def announce(run_id: str, others: list[str], active_dir: Path = ACTIVE_DIR) -> None:
    """Tell each of ``others`` (alive now) that ``run_id`` started beside it.

    A run that starts and ends inside another's is then still known to the other one,
    which reads ``seen_by`` at its end.
    """
    for other in others:
        with contextlib.suppress(OSError), open(active_dir / f"{other}.seen", "a") as handle:
            handle.write(run_id + "\n")


def seen_by(run_id: str, active_dir: Path = ACTIVE_DIR) -> list[str]:
    """The runs that announced themselves to ``run_id`` while it ran."""
    try:
        text = (active_dir / f"{run_id}.seen").read_text()
    except OSError:
        return []
    return [line for line in dict.fromkeys(text.split()) if line]


def active_runs(active_dir: Path = ACTIVE_DIR) -> list[dict[str, Any]]:
    """Runs whose process is alive now; stale entries (killed runs) are removed."""
    found: list[dict[str, Any]] = []
    if not active_dir.is_dir():
        return found
    for path in sorted(active_dir.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        identity = identity_from(entry)
        if identity is not None and identity.alive():
            found.append(entry)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return found


def run_suffix(run_id: str) -> str:
    """The part of a run id every instance name of the run carries."""
    return run_id[-6:]


def instance_run_suffix(name: str) -> str | None:
    """The run suffix in an instance name (None for names bench did not give a run)."""
    match = INSTANCE_NAME.match(name)
    return match.group(1) if match else None


def owned_by_live_run(name: str, live_suffixes: set[str]) -> bool:
    """True when the instance belongs to a run that is still alive (``clean`` leaves it).

    A KVM probe's guest belongs to the process probing (its pid is in the name): it is
    spared while that process lives.
    """
    suffix = instance_run_suffix(name)
    if suffix is not None:
        return suffix in live_suffixes
    probe = PROBE_NAME.match(name)
    return probe is not None and pid_alive(int(probe.group(1)))


def effective_status(run: dict[str, Any]) -> str:
    """A run's status as a reader should see it: ``abandoned`` for a dead ``running`` run."""
    status = str(run.get("status") or "?")
    if status != "running":
        return status
    identity = identity_from(run.get("process"))
    if identity is None or not identity.alive():
        return "abandoned"
    return status
