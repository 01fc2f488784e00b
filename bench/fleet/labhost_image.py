"""The lab host image: a Debian root filesystem built once from its recipe, then cached.

**The image** (``build_labhost``) is a cached artefact keyed by its recipe
(``bench.fleet.labhost_recipe``: the Debian suite and mirror, the package lists, the files
bench writes into it, the recipe version): a bookworm root filesystem made with
``debootstrap`` from the host's configured Debian mirror, with systemd as init,
openssh-server, python3 (and python3-apt, python3-venv), Debian's cloud kernel,
``apparmor`` (Debian's kernel has AppArmor on: docker needs ``apparmor_parser``) and every
package the ``bench_host`` role installs on a lab host, so provisioning it needs no
network. The daemons the role starts (docker, containerd, libvirtd, virtlogd) are
installed but left disabled: the role's systemd branch starts them. Timers that would do
background work or reach for a network (apt-daily, man-db, fstrim...) are masked. A user
``bench`` with passwordless sudo logs in with an SSH key made for this image; root has no
password and no key.

The root filesystem becomes one ext4 image (``mkfs.ext4 -d``: no loop mount) that is
never written: each boot writes to QEMU's throwaway overlay (``snapshot=on``, a
temporary qcow2 file QEMU unlinks as soon as it is open, so even ``kill -9`` leaves no
file behind). The kernel and initrd Debian built inside the image are copied beside it
and booted directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.artifacts.probe import cache_dir
from bench.fleet.labhost_recipe import SUITE, AptSource, LabHostError, recipe, recipe_key


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
