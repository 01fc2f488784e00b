"""Detect how this host mounts cgroups: v1 hierarchies, unified v2, or the hybrid of both.

The layout is detected at run time from /proc/self/mounts (never assumed) and recorded
with every run, because the same limit means different files on v1 and v2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESOURCE_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")


@dataclass(frozen=True)
class CgroupLayout:
    """Where the cgroup hierarchies of a host are mounted.

    ``version`` is the hierarchy that holds the resource controllers bench needs
    (memory, cpu, pids): 1 on legacy and hybrid hosts, 2 on unified hosts.
    ``mode`` is ``legacy`` (v1 only), ``hybrid`` (v1 controllers plus a cgroup2 mount,
    typically holding no resource controllers) or ``unified`` (v2 only).
    """

    version: int
    mode: str
    v1_mounts: dict[str, str] = field(default_factory=dict)
    v2_mount: str | None = None
    v2_controllers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable description for run.json."""
        return {
            "version": self.version,
            "mode": self.mode,
            "v1_mounts": dict(sorted(self.v1_mounts.items())),
            "v2_mount": self.v2_mount,
            "v2_controllers": list(self.v2_controllers),
        }

    def v1_controller_dir(self, controller: str) -> str | None:
        """Return the v1 mount point of ``controller``, or None when it is not mounted."""
        return self.v1_mounts.get(controller)


class CgroupLayoutError(RuntimeError):
    """The host has no usable cgroup hierarchy for bench's resource controllers."""


def parse_mounts(mounts_text: str, v2_controllers_text: str | None = None) -> CgroupLayout:
    """Build a layout from /proc/self/mounts text and the v2 root's cgroup.controllers text.

    v1 lines carry their controllers in the mount options (``rw,relatime,cpu,cpuacct``);
    co-mounted controllers map to the same directory. Named hierarchies
    (``name=systemd``) hold no controller and are ignored.
    """
    v1_mounts: dict[str, str] = {}
    v2_mount: str | None = None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mount_point, fs_type, options = parts[1], parts[2], parts[3].split(",")
        if fs_type == "cgroup2":
            v2_mount = mount_point
        elif fs_type == "cgroup":
            for option in options:
                if option in {"rw", "ro"} or "=" in option or option in _MOUNT_FLAGS:
                    continue
                v1_mounts[option] = mount_point
    v2_controllers = tuple((v2_controllers_text or "").split())
    has_v1 = any(c in v1_mounts for c in RESOURCE_CONTROLLERS)
    if has_v1:
        mode = "hybrid" if v2_mount else "legacy"
        return CgroupLayout(1, mode, v1_mounts, v2_mount, v2_controllers)
    if v2_mount:
        return CgroupLayout(2, "unified", {}, v2_mount, v2_controllers)
    raise CgroupLayoutError("no cgroup hierarchy with memory/cpu/pids controllers is mounted")


_MOUNT_FLAGS = frozenset(
    {
        "relatime",
        "noatime",
        "nosuid",
        "nodev",
        "noexec",
        "nsdelegate",
        "memory_recursiveprot",
        "clone_children",
        "noprefix",
        "xattr",
        "favordynmods",
        "memory_localevents",
    }
)


def detect(root: str = "/") -> CgroupLayout:
    """Detect the layout of the running host (``root`` lets tests use a fake tree)."""
    base = Path(root)
    mounts_text = (base / "proc/self/mounts").read_text()
    layout = parse_mounts(mounts_text)
    if layout.v2_mount:
        controllers_file = base / layout.v2_mount.lstrip("/") / "cgroup.controllers"
        try:
            controllers_text = controllers_file.read_text()
        except OSError:
            controllers_text = ""
        layout = parse_mounts(mounts_text, controllers_text)
    return layout
