"""The lab host image's recipe: everything that decides its content; its hash is its key.

The recipe (``recipe``) is the Debian suite and mirror (the Debian archives of the host's
apt configuration, ``host_apt_sources``), the package lists (``BASE_PACKAGES`` and every
package the ``bench_host`` role installs on a lab host, ``role_packages``), the units left
disabled or masked, the files bench writes into the image, and this module's
``RECIPE_VERSION``. ``recipe_key`` is the sha256 of its canonical JSON: the image built
from it (``bench.fleet.labhost_image``) is cached under that key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError

RECIPE_VERSION = 1
SUITE = "bookworm"
LABHOST_USER = "bench"
DISK_SIZE = "6G"

# Everything a lab host needs besides the role's packages.
BASE_PACKAGES = (
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "openssh-server",
    "sudo",
    "libnss-myhostname",
    "python3",
    "python3-apt",
    "python3-venv",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "iproute2",
    "iptables",
    "procps",
    "ca-certificates",
    "apparmor",
)
# The bench_host role's package lists a lab host gets (its chromium, for the report
# tests, stays off on lab hosts: bench_host_chromium_install is false there).
ROLE_PACKAGE_VARS = (
    "bench_host_packages",
    "bench_host_gvisor_packages",
    "bench_host_podman_packages",
    "bench_host_libvirt_packages",
    "bench_host_libvirt_systemd_packages",
)
# Installed, not started at boot: the role starts them (its systemd branch).
DISABLED_UNITS = (
    "docker.service",
    "docker.socket",
    "containerd.service",
    "libvirtd.service",
    "libvirtd.socket",
    "libvirtd-ro.socket",
    "libvirtd-admin.socket",
    "libvirt-guests.service",
    "virtlogd.socket",
    "virtlogd-admin.socket",
    "virtlockd.socket",
    "virtlockd-admin.socket",
    "podman.socket",
    "podman-restart.service",
    "podman-auto-update.timer",
    "e2scrub_reap.service",
)
# Background work and network waits a measuring host must not do.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "logrotate.timer",
    "podman-auto-update.service",
    "systemd-networkd-wait-online.service",
)
# Files bench writes into the image (path -> (mode, text)); part of the recipe.
IMAGE_FILES: dict[str, tuple[int, str]] = {
    "etc/hostname": (0o644, "bench-labhost\n"),
    "etc/hosts": (0o644, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    "etc/fstab": (0o644, "# the root file system comes from the kernel command line\n"),
    "etc/systemd/network/20-wired.network": (
        0o644,
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n",
    ),
    "etc/ssh/sshd_config.d/bench.conf": (
        0o644,
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n",
    ),
    "etc/sudoers.d/bench": (0o440, f"{LABHOST_USER} ALL=(ALL) NOPASSWD:ALL\n"),
    "etc/systemd/journald.conf.d/bench.conf": (0o644, "[Journal]\nStorage=volatile\n"),
}


class LabHostError(BenchError):
    """A lab host could not be built, booted or stopped (says why)."""

    exit_code = 3


@dataclass(frozen=True)
class AptSource:
    """One Debian archive of the host's apt configuration."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_apt_sources(deb822_texts: list[str], one_line_texts: list[str]) -> list[AptSource]:
    """Debian archives for SUITE from deb822 ``.sources`` texts and ``sources.list`` texts.

    Only ``deb`` entries whose suites are this release's (``bookworm``,
    ``bookworm-updates``, ``bookworm-security``) and whose URI is a Debian archive
    (``.../debian`` or ``.../debian-security``) are kept: third-party repositories never
    reach the image.
    """
    found: list[AptSource] = []
    for text in deb822_texts:
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                _keep(found, uri, fields.get("suites", "").split(), fields.get("components", ""))
    for text in one_line_texts:
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) < 3 or parts[0] != "deb":
                continue
            rest = [p for p in parts[1:] if not p.startswith("[")]
            if len(rest) >= 2:
                _keep(found, rest[0], [rest[1]], " ".join(rest[2:]))
    return found


def _keep(found: list[AptSource], uri: str, suites: list[str], components: str) -> None:
    mine = tuple(s for s in suites if s == SUITE or s.startswith(f"{SUITE}-"))
    if not mine or not re.search(r"/debian(-security)?/?$", uri):
        return
    found.append(AptSource(uri.rstrip("/"), mine, tuple(components.split() or ["main"])))


def host_apt_sources(root: str = "/") -> list[AptSource]:
    """The Debian archives this host's apt is configured with."""
    base = Path(root) / "etc/apt"
    deb822 = [p.read_text() for p in sorted((base / "sources.list.d").glob("*.sources"))]
    one_line = [p.read_text() for p in sorted((base / "sources.list.d").glob("*.list"))]
    if (base / "sources.list").is_file():
        one_line.append((base / "sources.list").read_text())
    return parse_apt_sources(deb822, one_line)


def ansible_dir() -> Path:
    """The repository's ansible/ directory (the fleet runs from a checkout of bench)."""
    found = Path(__file__).resolve().parents[2] / "ansible"
    if not (found / "fleet.yml").is_file():
        raise LabHostError(
            f"no ansible/fleet.yml beside this bench ({found}): lab hosts and fleets are "
            "driven from a checkout of the repository"
        )
    return found


def role_packages(defaults_file: Path | None = None) -> list[str]:
    """The Debian packages the bench_host role installs on a lab host."""
    path = defaults_file or ansible_dir() / "roles/bench_host/defaults/main.yml"
    defaults = yaml.safe_load(path.read_text())
    packages: list[str] = []
    for var in ROLE_PACKAGE_VARS:
        value = defaults.get(var) or []
        if not isinstance(value, list):
            raise LabHostError(f"{path}: {var} is not a list")
        packages.extend(str(p) for p in value)
    return list(dict.fromkeys(packages))


def recipe(
    sources: list[AptSource] | None = None, packages: list[str] | None = None
) -> dict[str, Any]:
    """Everything that decides the image's content; its hash is the image's key."""
    sources = host_apt_sources() if sources is None else sources
    if not any(SUITE in s.suites for s in sources):
        raise LabHostError(
            f"no Debian {SUITE} archive in this host's apt sources (/etc/apt): "
            "debootstrap needs one"
        )
    return {
        "recipe_version": RECIPE_VERSION,
        "suite": SUITE,
        "variant": "minbase",
        "sources": [asdict(s) for s in sources],
        "base_packages": list(BASE_PACKAGES),
        "role_packages": role_packages() if packages is None else packages,
        "disabled_units": list(DISABLED_UNITS),
        "masked_units": list(MASKED_UNITS),
        "files": {k: [v[0], v[1]] for k, v in sorted(IMAGE_FILES.items())},
        "user": LABHOST_USER,
        "disk_size": DISK_SIZE,
    }


def recipe_key(spec: dict[str, Any]) -> str:
    """The sha256 of a recipe's canonical JSON."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
