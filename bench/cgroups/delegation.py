"""Where bench may make cgroups on a cgroup v2 host: its own subtree, delegated by systemd.

On a host whose PID 1 is systemd, systemd owns the v2 hierarchy: a program must not
create cgroups at the root nor write the root's ``cgroup.subtree_control``. It asks for
a *delegated* subtree instead. bench does that for itself, once per process, the first
time it needs one:

1. If bench already runs in a unit with ``Delegate=yes`` (for example under
   ``systemd-run --scope -p Delegate=yes bench ...``, or a service with ``Delegate=yes``)
   whose cgroup holds nothing but bench, that unit's cgroup is used.
2. Otherwise bench moves itself into a new transient scope, ``bench-<pid>-<hex>.scope``
   with ``Delegate=yes``, through systemd's D-Bus API (``busctl call ...
   StartTransientUnit``, the call ``systemd-run --scope`` makes).

Inside the delegated cgroup ``D`` bench moves itself into the leaf ``D/harness`` (cgroup
v2 allows processes only in leaves of a subtree with controllers), enables
``+memory +cpu +pids`` in ``D/cgroup.subtree_control``, and makes its instances' cgroups
under ``D/bench/``. When bench exits and its instances are gone, systemd removes the
scope with everything in it. Each delegated parent is also noted in
``/run/bench/cgroup-parents/`` so ``bench clean`` finds the instances of a killed run.

Hosts without systemd (v1, hybrid, or a v2 host whose hierarchy nobody else manages)
keep bench's parent at the root of each hierarchy, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.cgroups.layout import CgroupLayout
from bench.errors import BenchError

DELEGATED_CONTROLLERS = ("memory", "cpu", "pids")
HARNESS_LEAF = "harness"
INSTANCES_PARENT = "bench"
SCOPE_PREFIX = "bench-"
REGISTRY_DIR = Path("/run/bench/cgroup-parents")
DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")
SCOPE_WAIT_S = 10.0

_LOCK = threading.Lock()
_CACHED: dict[int, DelegatedSubtree] = {}


class CgroupDelegationError(BenchError):
    """systemd did not give bench a delegated cgroup subtree (says why and what to do)."""

    exit_code = 3


@dataclass(frozen=True)
class DelegatedSubtree:
    """The delegated cgroup bench works in on a systemd host.

    ``root``: the delegated unit's cgroup directory; ``unit``: its systemd unit;
    ``created``: True when bench made the scope itself (False: it was given one).
    """

    root: Path
    unit: str
    created: bool

    @property
    def instances_parent(self) -> Path:
        """The directory under which bench makes its instances' cgroups."""
        return self.root / INSTANCES_PARENT

    def describe(self) -> str:
        """One line for run.json and doctor: where bench's cgroups are, and who made it."""
        how = "transient scope bench made" if self.created else "unit bench runs in"
        return f"{self.instances_parent} (delegated by systemd: {how}, {self.unit})"


def systemd_manages_cgroups(root: str = "/") -> bool:
    """True when systemd is PID 1 (sd_booted's test: /run/systemd/system exists)."""
    return (Path(root) / "run/systemd/system").is_dir()


def needs_delegation(layout: CgroupLayout, root: str = "/") -> bool:
    """True on a unified v2 host run by systemd: bench must not touch the root."""
    return layout.version == 2 and systemd_manages_cgroups(root)


def own_cgroup_path(proc_self_cgroup: str) -> str:
    """The v2 path ("0::/...") of a process from its /proc/PID/cgroup text."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    raise CgroupDelegationError("this process has no cgroup v2 path in /proc/self/cgroup")


def is_delegated(directory: Path) -> bool:
    """True when systemd delegated this cgroup.

    Its ``trusted.delegate`` xattr says so (systemd >= 251), or else the unit's
    ``Delegate`` property.
    """
    for name in DELEGATE_XATTRS:
        with contextlib.suppress(OSError):
            if os.getxattr(directory, name).strip(b"\0\n ") == b"1":
                return True
    if not directory.name.endswith((".scope", ".service")):
        return False
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    result = subprocess.run(
        [systemctl, "show", "--property=Delegate", "--value", directory.name],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return result.returncode == 0 and result.stdout.strip() == "yes"


def unit_of(directory: Path) -> str:
    """The unit a cgroup directory belongs to: its name, or its nearest unit ancestor's."""
    for part in (directory, *directory.parents):
        if part.name.endswith((".scope", ".service", ".slice")):
            return part.name
    return directory.name


def delegated_subtree(layout: CgroupLayout) -> DelegatedSubtree:
    """The delegated subtree of this process, set up on first use (see the module doc)."""
    pid = os.getpid()
    with _LOCK:
        cached = _CACHED.get(pid)
        if cached is not None and cached.root.is_dir():
            return cached
        subtree = _set_up(layout)
        _CACHED.clear()
        _CACHED[pid] = subtree
        return subtree


def cached_subtree() -> DelegatedSubtree | None:
    """The subtree this process already set up, or None (never creates one)."""
    with _LOCK:
        return _CACHED.get(os.getpid())


def _mount(layout: CgroupLayout) -> Path:
    if layout.v2_mount is None:
        raise CgroupDelegationError("no cgroup2 mount")
    return Path(layout.v2_mount)


def _own_dir(mount: Path) -> Path:
    path = own_cgroup_path(Path("/proc/self/cgroup").read_text())
    return mount / path.lstrip("/")


def _set_up(layout: CgroupLayout) -> DelegatedSubtree:
    mount = _mount(layout)
    own = _own_dir(mount)
    # Already in a delegated unit's leaf bench made (a child of a bench process that set
    # it up, or this process earlier): reuse that unit.
    if own.name == HARNESS_LEAF and is_delegated(own.parent):
        subtree = DelegatedSubtree(own.parent, unit_of(own.parent), created=False)
        _enable_controllers(subtree.root)
        _register(subtree)
        return subtree
    if is_delegated(own):
        given = DelegatedSubtree(own, unit_of(own), created=False)
        if _move_into_leaf(given.root):
            _enable_controllers(given.root)
            _register(given)
            return given
        # other processes share that cgroup: it cannot get controllers; make our own
    subtree = _create_scope(mount)
    if not _move_into_leaf(subtree.root):
        raise CgroupDelegationError(
            f"{subtree.root}: other processes joined bench's own scope; cannot enable "
            "controllers there"
        )
    _enable_controllers(subtree.root)
    _register(subtree)
    return subtree


def _create_scope(mount: Path) -> DelegatedSubtree:
    """Move this process into a new transient scope with Delegate=yes (systemd D-Bus)."""
    busctl = shutil.which("busctl")
    if busctl is None:
        raise CgroupDelegationError(
            "busctl not found: cannot ask systemd for a delegated cgroup; run bench under "
            "`systemd-run --scope -p Delegate=yes`"
        )
    pid = os.getpid()
    unit = f"{SCOPE_PREFIX}{pid}-{secrets.token_hex(3)}.scope"
    description = f"bench (pid {pid}): delegated cgroup subtree for bench's instances"
    argv = [
        busctl,
        "call",
        "--quiet",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        unit,
        "fail",
        "3",
        "PIDs",
        "au",
        "1",
        str(pid),
        "Delegate",
        "b",
        "true",
        "Description",
        "s",
        description,
        "0",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise CgroupDelegationError(
            f"systemd refused a delegated scope for bench ({result.stderr.strip()[:300]}); "
            "run bench under `systemd-run --scope -p Delegate=yes`"
        )
    deadline = time.monotonic() + SCOPE_WAIT_S
    while time.monotonic() < deadline:
        own = _own_dir(mount)
        if own.name == unit:
            return DelegatedSubtree(own, unit, created=True)
        time.sleep(0.01)
    raise CgroupDelegationError(
        f"systemd started {unit} but did not move bench (pid {pid}) into it within "
        f"{SCOPE_WAIT_S:.0f} s"
    )


def _move_into_leaf(root: Path) -> bool:
    """Move this process into ``root/harness``; True when ``root`` is then empty."""
    leaf = root / HARNESS_LEAF
    leaf.mkdir(exist_ok=True)
    (leaf / "cgroup.procs").write_text("0")
    try:
        remaining = (root / "cgroup.procs").read_text().split()
    except OSError:
        return False
    return not remaining


def _enable_controllers(root: Path) -> None:
    available = set((root / "cgroup.controllers").read_text().split())
    missing = [c for c in DELEGATED_CONTROLLERS if c not in available]
    if missing:
        raise CgroupDelegationError(
            f"{root}: systemd delegated no {', '.join(missing)} controller "
            f"(has: {', '.join(sorted(available)) or 'none'})"
        )
    enabled = set((root / "cgroup.subtree_control").read_text().split())
    wanted = [c for c in DELEGATED_CONTROLLERS if c not in enabled]
    if wanted:
        (root / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))


def _register(subtree: DelegatedSubtree) -> None:
    """Note the parent in /run/bench/cgroup-parents/ for ``bench clean``."""
    with contextlib.suppress(OSError):
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        path = str(subtree.instances_parent)
        name = hashlib.sha256(path.encode()).hexdigest()[:16]
        (REGISTRY_DIR / f"{name}.path").write_text(path + "\n")


def registered_parents(layout: CgroupLayout) -> list[Path]:
    """Every delegated instances parent bench used on this host that still exists.

    From the registry, plus any ``bench-*.scope/bench`` under a slice (a registry lost
    with /run still leaves the scopes findable). Entries whose directory is gone are
    dropped from the registry.
    """
    found: list[Path] = []
    if REGISTRY_DIR.is_dir():
        for entry in sorted(REGISTRY_DIR.glob("*.path")):
            with contextlib.suppress(OSError):
                parent = Path(entry.read_text().strip())
                if parent.is_dir():
                    found.append(parent)
                elif not parent.parent.is_dir():
                    entry.unlink(missing_ok=True)
    if layout.v2_mount:
        mount = Path(layout.v2_mount)
        for pattern in (
            f"*.slice/{SCOPE_PREFIX}*.scope/{INSTANCES_PARENT}",
            f"*.slice/*.slice/{SCOPE_PREFIX}*.scope/{INSTANCES_PARENT}",
        ):
            found.extend(p for p in mount.glob(pattern) if p.is_dir())
    return list(dict.fromkeys(found))
