"""A second lab host with another kernel: a Debian guest bench builds, boots and stops.

**The image** (``build_labhost``) is a cached artefact keyed by its recipe (the Debian
suite and mirror, the package lists, the files bench writes into it, this module's
recipe version): a bookworm root filesystem made with ``debootstrap`` from the host's
configured Debian mirror, with systemd as init, openssh-server, python3 (and
python3-apt, python3-venv), Debian's cloud kernel, ``apparmor`` (Debian's kernel has
AppArmor on: docker needs ``apparmor_parser``) and every package the ``bench_host`` role
installs on a lab host, so provisioning it needs no network. The daemons the role
starts (docker, containerd, libvirtd, virtlogd) are installed but left disabled: the
role's systemd branch starts them. Timers that would do background work or reach for a
network (apt-daily, man-db, fstrim...) are masked. A user ``bench`` with passwordless
sudo logs in with an SSH key made for this image; root has no password and no key.

The root filesystem becomes one ext4 image (``mkfs.ext4 -d``: no loop mount) that is
never written: each boot writes to QEMU's throwaway overlay (``snapshot=on``, a
temporary qcow2 file QEMU unlinks as soon as it is open, so even ``kill -9`` leaves no
file behind). The kernel and initrd Debian built inside the image are copied beside it
and booted directly.

**A boot** (``up``) runs ``qemu-system-x86_64 -daemonize`` with the guest's sshd
forwarded to a free port of 127.0.0.1 only, and ``-netdev user,restrict=on``: the guest
reaches no address at all. KVM is used only when a real KVM boot proves it works on this
host (the qemu-microvm backend's decision, itself a real boot, cached per host boot) and
the lab host then comes up under it; otherwise TCG, and the reason is recorded. Each
running lab host has a state directory ``/run/bench/labhosts/<name>/`` (pid and its
start time, port, known_hosts, serial console log); ``down`` stops it by that pid, and
``bench clean`` stops every one bench started (also one whose state was lost: QEMU runs
with ``-name bench-labhost-<name>``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.artifacts.probe import cache_dir
from bench.errors import BenchError

RECIPE_VERSION = 1
SUITE = "bookworm"
LABHOST_USER = "bench"
STATE_ROOT = Path("/run/bench/labhosts")
QEMU_NAME_PREFIX = "bench-labhost-"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
DISK_SIZE = "6G"
DEFAULT_MEMORY_MIB = 2048
DEFAULT_CPUS = 2
SSH_TIMEOUT_TCG_S = 300.0
SSH_TIMEOUT_KVM_S = 90.0
STOP_TIMEOUT_S = 15.0

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


# -- the recipe -------------------------------------------------------------------------


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


# -- the image --------------------------------------------------------------------------


@dataclass(frozen=True)
class LabHostImage:
    """A built lab host image and what boots it."""

    directory: Path
    key: str
    manifest: dict[str, Any]

    @property
    def disk(self) -> Path:
        """The ext4 root file system image (never written: boots use an overlay)."""
        return self.directory / "disk.img"

    @property
    def kernel(self) -> Path:
        """The Debian kernel the image carries."""
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        """The initrd Debian's initramfs-tools built inside the image."""
        return self.directory / "initrd.img"

    @property
    def ssh_key(self) -> Path:
        """The private key the ``bench`` user logs in with."""
        return self.directory / "id_ed25519"

    @property
    def host_key(self) -> str:
        """The guest sshd's ed25519 public host key (for known_hosts)."""
        return str(self.manifest["ssh_host_key"])


def labhost_cache(cache: Path | None = None) -> Path:
    """Where lab host images are cached: <bench cache>/labhost/."""
    return (cache or cache_dir()) / "labhost"


def cached_image(
    cache: Path | None = None, spec: dict[str, Any] | None = None
) -> LabHostImage | None:
    """The image built from this recipe, if it is complete in the cache."""
    key = recipe_key(spec or recipe())
    directory = labhost_cache(cache) / key[:16]
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    image = LabHostImage(directory, key, manifest)
    if manifest.get("key") != key or not all(
        p.is_file() for p in (image.disk, image.kernel, image.initrd, image.ssh_key)
    ):
        return None
    return image


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_labhost(
    cache: Path | None = None,
    rebuild: bool = False,
    log: Callable[[str], None] | None = None,
) -> LabHostImage:
    """Return the cached lab host image for the current recipe, building it if needed.

    Needs root, debootstrap and the host's Debian mirror. Every step's time and the sizes
    go into the image's ``manifest.json``.
    """
    say = log or (lambda _text: None)
    spec = recipe()
    key = recipe_key(spec)
    root_dir = labhost_cache(cache)
    with _locked(root_dir / f".lock-{key[:16]}"):
        if not rebuild:
            found = cached_image(cache, spec)
            if found is not None:
                return found
        for tool in ("debootstrap", "mkfs.ext4", "ssh-keygen", "unshare", "chroot"):
            if shutil.which(tool) is None:
                raise LabHostError(f"{tool} not found: run ansible/up.sh (installs debootstrap)")
        if os.geteuid() != 0:
            raise LabHostError("building a lab host image needs root (debootstrap, chroot)")
        final = root_dir / key[:16]
        work = root_dir / f".build-{key[:16]}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            manifest = _build(spec, key, work, say)
            shutil.rmtree(final, ignore_errors=True)
            work.rename(final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return LabHostImage(final, key, manifest)


def _run(argv: list[str], log_file: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run a build step with its output appended to the build log; fail with its tail."""
    with open(log_file, "a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        raise LabHostError(f"{what} failed (exit {result.returncode}):\n" + "\n".join(tail))


# The chroot runs in a mount namespace of its own: /proc, /sys and /dev are mounted for
# the package scripts and vanish with the namespace, whatever happens to the build.
_IN_CHROOT = (
    'root="$1"; shift; '
    'mount -t proc proc "$root/proc" && mount --rbind /sys "$root/sys" && '
    'mount --rbind /dev "$root/dev" && exec chroot "$root" "$@"'
)
_CHROOT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "LC_ALL": "C",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
}


def _chroot_argv(rootfs: Path, *argv: str) -> list[str]:
    env = [f"{k}={v}" for k, v in _CHROOT_ENV.items()]
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        _IN_CHROOT,
        "sh",
        str(rootfs),
        "/usr/bin/env",
        "-i",
        *env,
        *argv,
    ]


def _build(
    spec: dict[str, Any], key: str, work: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    rootfs = work / "rootfs"
    log_file = work / "build.log"
    sources = [
        AptSource(s["uri"], tuple(s["suites"]), tuple(s["components"])) for s in spec["sources"]
    ]
    mirror = next(s.uri for s in sources if SUITE in s.suites)
    timings: dict[str, float] = {}
    started = time.monotonic()

    say(f"debootstrap {SUITE} from {mirror}")
    step = time.monotonic()
    _run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(spec["base_packages"]),
            SUITE,
            str(rootfs),
            mirror,
        ],
        log_file,
        "debootstrap",
    )
    timings["debootstrap_s"] = time.monotonic() - step

    say(f"installing the role's {len(spec['role_packages'])} packages in the chroot")
    step = time.monotonic()
    lines = [
        f"deb {s.uri} {' '.join([suite])} {' '.join(s.components)}"
        for s in sources
        for suite in s.suites
    ]
    (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# no service starts while the image is built\nexit 101\n")
    policy.chmod(0o755)
    _run(_chroot_argv(rootfs, "apt-get", "update", "-q"), log_file, "apt-get update")
    _run(
        _chroot_argv(
            rootfs,
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *spec["role_packages"],
        ),
        log_file,
        "apt-get install",
    )
    _run(_chroot_argv(rootfs, "apt-get", "clean"), log_file, "apt-get clean")
    timings["packages_s"] = time.monotonic() - step

    say("configuring: units, network, the bench user and its SSH key")
    step = time.monotonic()
    for relative, (mode, text) in spec["files"].items():
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
    _run(
        ["systemctl", f"--root={rootfs}", "enable", "systemd-networkd.service"],
        log_file,
        "enable networkd",
    )
    present = [u for u in spec["disabled_units"] if _unit_exists(rootfs, u)]
    if present:
        _run(["systemctl", f"--root={rootfs}", "disable", *present], log_file, "disable units")
    _run(["systemctl", f"--root={rootfs}", "mask", *spec["masked_units"]], log_file, "mask units")
    _run(
        _chroot_argv(rootfs, "useradd", "--create-home", "--shell", "/bin/bash", spec["user"]),
        log_file,
        "useradd",
    )
    key_file = work / "id_ed25519"
    _run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-labhost", "-f", str(key_file)],
        log_file,
        "ssh-keygen",
    )
    ssh_dir = rootfs / "home" / spec["user"] / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text((work / "id_ed25519.pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    _run(
        _chroot_argv(
            rootfs, "chown", "-R", f"{spec['user']}:{spec['user']}", f"/home/{spec['user']}/.ssh"
        ),
        log_file,
        "chown .ssh",
    )
    policy.unlink()
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise LabHostError(
            f"expected one kernel and one initrd in the image, found {kernels} {initrds}"
        )
    shutil.copyfile(kernels[0], work / "vmlinuz")
    shutil.copyfile(initrds[0], work / "initrd.img")
    host_key = (rootfs / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    versions = _package_versions(rootfs, log_file)
    timings["configure_s"] = time.monotonic() - step

    say("mkfs.ext4 -d: the root file system as one image")
    step = time.monotonic()
    rootfs_bytes = _tree_bytes(rootfs)
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "benchroot",
            "-d",
            str(rootfs),
            str(work / "disk.img"),
            spec["disk_size"],
        ],
        log_file,
        "mkfs.ext4",
    )
    timings["mkfs_s"] = time.monotonic() - step
    shutil.rmtree(rootfs)
    disk = (work / "disk.img").stat()
    timings["total_s"] = time.monotonic() - started
    manifest = {
        "schema_version": 1,
        "key": key,
        "recipe": spec,
        "kernel_release": kernels[0].name.removeprefix("vmlinuz-"),
        "packages": versions,
        "ssh_host_key": " ".join(host_key[:2]),
        "built_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "built_on": socket.gethostname(),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "rootfs_bytes": rootfs_bytes,
        "disk_size_bytes": disk.st_size,
        "disk_allocated_bytes": disk.st_blocks * 512,
        "disk_format": "raw ext4 (mkfs.ext4 -d); boots write to QEMU's snapshot=on overlay",
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _unit_exists(rootfs: Path, unit: str) -> bool:
    return any(
        (rootfs / base / unit).exists() for base in ("lib/systemd/system", "etc/systemd/system")
    )


def _package_versions(rootfs: Path, log_file: Path) -> dict[str, str]:
    names = [
        "systemd",
        "linux-image-cloud-amd64",
        "docker.io",
        "python3",
        "openssh-server",
        "runc",
        "containerd",
    ]
    result = subprocess.run(
        ["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    with open(log_file, "a") as log:
        log.write(result.stdout + result.stderr)
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, _, version = line.partition(" ")
        if version:
            found[name] = version
    return found


def _tree_bytes(root: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


# -- booting ----------------------------------------------------------------------------


@dataclass
class LabHost:
    """A running lab host: how to reach it and how to stop it."""

    name: str
    pid: int
    pid_create_time: float
    port: int
    image_key: str
    image_dir: str
    kernel_release: str
    accel: str
    accel_reason: str
    memory_mib: int
    cpus: int
    boot_to_ssh_s: float
    started_at_utc: str
    state_dir: str
    notes: list[str] = field(default_factory=list)
    # Who holds it: a process (a test session, a campaign) while it lives, or the user
    # (kept: started with `bench labhost up`, stopped by `labhost down` or `clean --all`).
    owner_pid: int | None = None
    owner_create_time: float | None = None
    kept: bool = False

    @property
    def ssh_key(self) -> Path:
        """The private key of the ``bench`` user."""
        return Path(self.image_dir) / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file holding exactly this guest's host key."""
        return Path(self.state_dir) / "known_hosts"

    @property
    def host_key_alias(self) -> str:
        """The name its host key is filed under (the port changes from boot to boot)."""
        return f"{QEMU_NAME_PREFIX}{self.name}"

    def ssh_options(self) -> list[str]:
        """``ssh`` options that reach this guest, checking its host key."""
        return [
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            f"HostKeyAlias={self.host_key_alias}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(self.ssh_key),
            "-p",
            str(self.port),
        ]

    def ssh_argv(self, *command: str, connect_timeout_s: int = 10) -> list[str]:
        """An ``ssh`` argv running ``command`` on the guest as the ``bench`` user.

        ssh hands the guest's shell one string: the words are quoted for it, so each
        stays one argument there.
        """
        return [
            "ssh",
            *self.ssh_options(),
            "-o",
            f"ConnectTimeout={connect_timeout_s}",
            f"{LABHOST_USER}@127.0.0.1",
            "--",
            shlex.join(command),
        ]

    def alive(self) -> bool:
        """True while this lab host's QEMU (not a reuser of its pid) runs."""
        return _qemu_alive(self.pid, self.pid_create_time, self.name)

    def held(self) -> bool:
        """True when the user keeps it, or the process that owns it still runs."""
        if self.kept:
            return True
        if self.owner_pid is None or self.owner_create_time is None:
            return False
        try:
            process = psutil.Process(self.owner_pid)
            return (
                abs(process.create_time() - self.owner_create_time) <= 0.05
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    def inventory_vars(self) -> dict[str, Any]:
        """The Ansible host variables that reach it over SSH and become root with sudo."""
        common = " ".join(
            [
                f"-o UserKnownHostsFile={self.known_hosts}",
                f"-o HostKeyAlias={self.host_key_alias}",
                "-o StrictHostKeyChecking=yes",
                "-o IdentitiesOnly=yes",
            ]
        )
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": LABHOST_USER,
            "ansible_become": True,
            "ansible_ssh_private_key_file": str(self.ssh_key),
            "ansible_ssh_common_args": common,
            # Ansible's default adds -C: compressing wheels and images again only costs
            # the emulated guest CPU time
            "ansible_ssh_args": "-o ControlMaster=auto -o ControlPersist=60s",
            "ansible_python_interpreter": "/usr/bin/python3",
            # the guest reaches no network: its packages are in the image already
            "bench_host_apt_update_cache": False,
            "bench_host_chromium_install": False,
            "bench_host_labhost_builder": False,
            "bench_fleet_host_note": self.note(),
        }

    def note(self) -> str:
        """What a reader of this host's figures must know (emulation, shared hardware)."""
        if self.accel == "tcg":
            return (
                f"QEMU guest of the controller under TCG (software emulation): its figures "
                f"are emulation figures, not this kernel's speed on hardware; "
                f"{self.cpus} vCPU, {self.memory_mib} MiB, mitigations=off"
            )
        return (
            f"QEMU/KVM guest of the controller; {self.cpus} vCPU, {self.memory_mib} MiB, "
            "mitigations=off"
        )


def _qemu_alive(pid: int, create_time: float, name: str) -> bool:
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.05:
            return False
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return f"{QEMU_NAME_PREFIX}{name}" in process.cmdline()
    except psutil.Error:
        return False


def state_dir(name: str) -> Path:
    """The state directory of a running lab host."""
    return STATE_ROOT / name


def read_state(name: str) -> LabHost | None:
    """The recorded state of lab host ``name`` (None when there is none)."""
    try:
        data = json.loads((state_dir(name) / "state.json").read_text())
        return LabHost(**data)
    except (OSError, ValueError, TypeError):
        return None


def running_labhosts() -> list[LabHost]:
    """Lab hosts bench started whose QEMU still runs."""
    found = []
    if STATE_ROOT.is_dir():
        for directory in sorted(STATE_ROOT.iterdir()):
            host = read_state(directory.name)
            if host is not None and host.alive():
                found.append(host)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def qemu_argv(
    image: LabHostImage,
    name: str,
    port: int,
    accel: str,
    memory_mib: int,
    cpus: int,
    directory: Path,
) -> list[str]:
    """The QEMU command line of a lab host (no shell: every value is one argument)."""
    cmdline = " ".join(
        [
            "root=/dev/vda",
            "rw",
            "console=ttyS0",
            f"systemd.hostname={name}",
            # Under TCG every page-table switch (KPTI) flushes the emulated TLB: without
            # the mitigations an Ansible task on the guest takes ~35% less (measured)
            "mitigations=off",
        ]
    )
    return [
        "qemu-system-x86_64",
        "-name",
        f"{QEMU_NAME_PREFIX}{name}",
        "-accel",
        accel,
        "-M",
        "q35",
        "-cpu",
        "host" if accel == "kvm" else "max",
        "-m",
        str(memory_mib),
        "-smp",
        str(cpus),
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{directory / 'serial.log'}",
        "-no-reboot",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        cmdline,
        "-drive",
        f"file={image.disk},if=virtio,format=raw,snapshot=on",
        "-netdev",
        f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        "virtio-net-pci,netdev=n0",
        "-device",
        "virtio-rng-pci",
        "-daemonize",
        "-pidfile",
        str(directory / "qemu.pid"),
    ]


def decide_accel(requested: str) -> tuple[str, str]:
    """KVM or TCG for a lab host, and why: KVM only where a real KVM boot worked."""
    if requested in ("tcg", "kvm"):
        return requested, f"{requested.upper()} requested"
    try:
        from bench.backends import get_backend

        backend: Any = get_backend("qemu-microvm")
        backend.check_available()
        decision = backend.accel_decision("auto")
    except BenchError as exc:
        return "tcg", f"no KVM boot could be tried ({exc})"
    reason = " ".join(str(decision.reason).split())
    if len(reason) > 240:
        reason = reason[:240] + "..."
    return str(decision.accel), f"qemu-microvm's KVM probe: {reason}"


def up(
    name: str = "lab1",
    memory_mib: int = DEFAULT_MEMORY_MIB,
    cpus: int = DEFAULT_CPUS,
    accel: str = "auto",
    cache: Path | None = None,
    log: Callable[[str], None] | None = None,
    owner_pid: int | None = None,
    kept: bool = False,
) -> LabHost:
    """Boot lab host ``name`` (building the image if needed) and wait for its sshd.

    ``owner_pid``: the process it belongs to (``bench clean`` spares it while that
    process lives); ``kept``: the user's, spared by ``bench clean`` until ``--all``.
    A lab host of that name that already runs for the same owner is returned as it is;
    one held by someone else is an error (two test sessions must not share a guest).
    """
    say = log or (lambda _text: None)
    if not NAME_PATTERN.match(name):
        raise LabHostError(f"lab host name {name!r}: use lower-case letters, digits and '-'")
    running = read_state(name)
    if running is not None and running.alive():
        if running.owner_pid == owner_pid and running.kept == kept:
            return running
        holder = "the user (bench labhost up)" if running.kept else f"pid {running.owner_pid}"
        raise LabHostError(
            f"lab host {name} already runs (pid {running.pid}), held by {holder}: choose "
            "another name, or stop it with `bench labhost down`"
        )
    image = build_labhost(cache, log=say)
    chosen, reason = decide_accel(accel)
    owner = _Owner(owner_pid, kept)
    notes: list[str] = []
    if chosen == "kvm":
        try:
            return _boot(
                image, name, "kvm", reason, memory_mib, cpus, SSH_TIMEOUT_KVM_S, notes, say, owner
            )
        except LabHostError as exc:
            if accel == "kvm":
                raise
            notes.append(f"KVM boot failed, fell back to TCG: {exc}")
            reason = f"the lab host did not come up under KVM ({str(exc)[:200]})"
    return _boot(image, name, "tcg", reason, memory_mib, cpus, SSH_TIMEOUT_TCG_S, notes, say, owner)


@dataclass(frozen=True)
class _Owner:
    pid: int | None
    kept: bool


def _boot(
    image: LabHostImage,
    name: str,
    accel: str,
    reason: str,
    memory_mib: int,
    cpus: int,
    timeout_s: float,
    notes: list[str],
    say: Callable[[str], None],
    owner: _Owner,
) -> LabHost:
    directory = state_dir(name)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    port = _free_port()
    say(f"booting {name} under {accel.upper()}, sshd on 127.0.0.1:{port}")
    started = time.monotonic()
    argv = qemu_argv(image, name, port, accel, memory_mib, cpus, directory)
    with open(directory / "qemu.log", "w") as qemu_log:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        text = (directory / "qemu.log").read_text(errors="replace").strip()
        shutil.rmtree(directory, ignore_errors=True)
        raise LabHostError(f"qemu could not start lab host {name}: {text[-500:]}")
    pid = int((directory / "qemu.pid").read_text().strip())
    host = LabHost(
        name=name,
        pid=pid,
        pid_create_time=psutil.Process(pid).create_time(),
        port=port,
        image_key=image.key,
        image_dir=str(image.directory),
        kernel_release=str(image.manifest.get("kernel_release")),
        accel=accel,
        accel_reason=reason,
        memory_mib=memory_mib,
        cpus=cpus,
        boot_to_ssh_s=0.0,
        started_at_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        state_dir=str(directory),
        notes=notes,
        owner_pid=owner.pid,
        owner_create_time=psutil.Process(owner.pid).create_time() if owner.pid else None,
        kept=owner.kept,
    )
    host.known_hosts.write_text(f"{host.host_key_alias} {image.host_key}\n")
    _write_state(host)
    try:
        _wait_for_ssh(host, started + timeout_s)
    except BaseException:
        stop(host)
        raise
    host.boot_to_ssh_s = round(time.monotonic() - started, 1)
    _write_state(host)
    say(f"{name} accepts ssh after {host.boot_to_ssh_s:.1f} s")
    return host


def _write_state(host: LabHost) -> None:
    path = Path(host.state_dir) / "state.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(host), indent=2) + "\n")
    partial.replace(path)


def _wait_for_ssh(host: LabHost, deadline: float) -> None:
    """Poll until ``ssh ... true`` succeeds (never a fixed sleep); fail with the console."""
    last = ""
    while time.monotonic() < deadline:
        if not host.alive():
            raise LabHostError(
                f"lab host {host.name}: qemu exited while booting\n{_console_tail(host)}"
            )
        try:
            with socket.create_connection(("127.0.0.1", host.port), timeout=2) as sock:
                sock.settimeout(2)
                banner = sock.recv(64)
        except OSError:
            banner = b""
        if banner.startswith(b"SSH-"):
            result = subprocess.run(
                host.ssh_argv("true", connect_timeout_s=5),
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if result.returncode == 0:
                return
            last = result.stderr.strip()[-300:]
        time.sleep(0.5)
    raise LabHostError(
        f"lab host {host.name}: no ssh login within the timeout ({last or 'sshd not answering'})\n"
        f"{_console_tail(host)}"
    )


def _console_tail(host: LabHost, lines: int = 12) -> str:
    try:
        text = (Path(host.state_dir) / "serial.log").read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "console:\n" + "\n".join(text.splitlines()[-lines:])


def stop(host: LabHost) -> bool:
    """Stop a lab host's QEMU by its pid (SIGTERM, then SIGKILL); True if it was running."""
    was_running = host.alive()
    if was_running:
        _terminate(host.pid, lambda: host.alive())
    shutil.rmtree(host.state_dir, ignore_errors=True)
    return was_running


def _terminate(pid: int, alive: Callable[[], bool]) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not alive():
                return
            time.sleep(0.05)
    if alive():
        raise LabHostError(f"qemu pid {pid} survived SIGKILL")


def down(name: str) -> bool:
    """Stop lab host ``name``; True when one was running."""
    host = read_state(name)
    if host is None:
        shutil.rmtree(state_dir(name), ignore_errors=True)
        return False
    return stop(host)


def stray_qemus() -> list[tuple[int, str]]:
    """QEMU processes of lab hosts (by their ``-name``) that no state directory accounts for."""
    known = {h.pid for h in running_labhosts()}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if not cmdline or "qemu-system" not in os.path.basename(cmdline[0]):
            continue
        for index, arg in enumerate(cmdline[:-1]):
            named = arg == "-name" and cmdline[index + 1].startswith(QEMU_NAME_PREFIX)
            if named and process.info["pid"] not in known:
                found.append((int(process.info["pid"]), cmdline[index + 1]))
    return found


def _alive_check(pid: int, create_time: float, name: str) -> Callable[[], bool]:
    return lambda: _qemu_alive(pid, create_time, name)


def leftovers(everything: bool = True) -> list[str]:
    """Names of lab hosts bench started that run now (with a state dir or stray).

    Without ``everything``, those held by the user or a live owner are left out.
    """
    names = [
        f"{QEMU_NAME_PREFIX}{h.name}" for h in running_labhosts() if everything or not h.held()
    ]
    names.extend(name for _pid, name in stray_qemus())
    return sorted(set(names))


def held_labhosts() -> list[str]:
    """Names of running lab hosts that the user or a live owner holds."""
    return sorted(f"{QEMU_NAME_PREFIX}{h.name}" for h in running_labhosts() if h.held())


def remove_all(everything: bool = True) -> list[str]:
    """Stop the lab hosts bench started (``bench clean``); return what was stopped.

    Without ``everything``, lab hosts the user keeps or a live process owns are spared.
    State directories of lab hosts that no longer run are removed.
    """
    stopped = []
    if STATE_ROOT.is_dir():
        for directory in sorted(STATE_ROOT.iterdir()):
            host = read_state(directory.name)
            if host is None:
                shutil.rmtree(directory, ignore_errors=True)
                continue
            if host.alive() and not everything and host.held():
                continue
            if stop(host):
                stopped.append(f"{QEMU_NAME_PREFIX}{host.name}")
    for pid, name in stray_qemus():
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.Error:
            continue
        short = name.removeprefix(QEMU_NAME_PREFIX)
        _terminate(pid, _alive_check(pid, create_time, short))
        stopped.append(name)
    return sorted(stopped)


def write_inventory(
    hosts: list[LabHost], path: Path, local_host: str | None = None, group: str = "lab"
) -> Path:
    """An Ansible inventory for these lab hosts (and this machine, as ``local_host``)."""
    members: dict[str, Any] = {}
    if local_host:
        members[local_host] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
    for host in hosts:
        members[host.name] = host.inventory_vars()
    inventory = {"all": {"children": {group: {"hosts": members}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by bench labhost: the lab hosts bench booted on this machine.\n"
    path.write_text(header + "---\n" + yaml.safe_dump(inventory, sort_keys=False))
    return path
