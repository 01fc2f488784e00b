"""The guest kernel: Debian's cloud kernel, fetched with ``apt-get download``.

The package Debian's ``linux-image-cloud-amd64`` metapackage points at is downloaded (no
install, so no initramfs hooks run) and unpacked only for ./boot, into
``cache_dir()/guest/kernel/<package>_<version>/``; the uncompressed PVH vmlinux is
extracted beside the bzImage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.artifacts.cache_files import sha256_file, write_atomic
from bench.artifacts.guest_elf import extract_vmlinux, has_pvh_entry
from bench.artifacts.probe import cache_dir
from bench.errors import ArtifactError

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"


KERNEL_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class GuestKernel:
    """A guest kernel ready for direct kernel boot.

    ``path`` is the image to boot: the uncompressed PVH vmlinux when one was extracted,
    else the bzImage; ``vmlinuz`` is always the bzImage (the fallback). ``sha256`` is the
    hash of ``path``. ``release`` is the kernel release (``uname -r`` in the guest).
    """

    path: Path
    version: str
    package: str
    sha256: str
    vmlinuz: Path | None = None
    release: str = ""


def _run(command: Sequence[str], what: str, fix: str, timeout_s: float = 300) -> str:
    try:
        result = subprocess.run(
            list(command), capture_output=True, text=True, check=False, timeout=timeout_s
        )
    except FileNotFoundError:
        raise ArtifactError(f"{what}: {command[0]} not found; {fix}") from None
    except subprocess.TimeoutExpired:
        raise ArtifactError(f"{what}: {command[0]} timed out after {timeout_s:.0f} s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-500:]
        raise ArtifactError(f"{what} failed (exit {result.returncode}): {detail}; {fix}")
    return result.stdout


def resolve_kernel_package(metapackage: str = KERNEL_METAPACKAGE) -> tuple[str, str]:
    """Return (package, candidate version) of the kernel the metapackage depends on (apt-cache)."""
    fix = "run `apt-get update` (Debian's archive must be configured), or ansible/up.sh"
    depends = _run(
        [
            "apt-cache",
            "depends",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            metapackage,
        ],
        f"apt-cache depends {metapackage}",
        fix,
        timeout_s=60,
    )
    found = re.findall(r"^\s*Depends:\s*(linux-image-\S+)", depends, re.MULTILINE)
    if not found:
        raise ArtifactError(f"{metapackage} depends on no linux-image package; {fix}")
    package = found[0]
    policy = _run(["apt-cache", "policy", package], f"apt-cache policy {package}", fix, 60)
    match = re.search(r"^\s*Candidate:\s*(\S+)", policy, re.MULTILINE)
    if match is None or match.group(1) == "(none)":
        raise ArtifactError(f"no installable version of {package} in the apt lists; {fix}")
    return package, match.group(1)


def download_package(package: str, version: str, dest_dir: Path) -> Path:
    """``apt-get download PACKAGE=VERSION`` into dest_dir (no install); return the .deb."""
    # _apt, apt's download sandbox user, cannot write into a private temp dir: stay root.
    command = ["apt-get", "download", "-o", "APT::Sandbox::User=root", f"{package}={version}"]
    fix = (
        "check that Debian's archive is reachable and run `apt-get update`; "
        "ansible/up.sh configures both"
    )
    try:
        result = subprocess.run(
            command, cwd=dest_dir, capture_output=True, text=True, check=False, timeout=600
        )
    except FileNotFoundError:
        raise ArtifactError(f"apt-get not found: a Debian host is needed; {fix}") from None
    except subprocess.TimeoutExpired:
        raise ArtifactError(f"apt-get download {package}={version} timed out; {fix}") from None
    if result.returncode != 0:
        raise ArtifactError(
            f"apt-get download {package}={version} failed: "
            f"{(result.stderr or result.stdout).strip()[-500:]}; {fix}"
        )
    debs = sorted(dest_dir.glob(f"{package}_*.deb"))
    if not debs:
        raise ArtifactError(f"apt-get download {package}={version} left no .deb in {dest_dir}")
    return debs[0]


def unpack_boot(deb: Path, dest_dir: Path) -> dict[str, Path]:
    """Unpack only ./boot's vmlinuz-* and config-* from a kernel .deb; return {kind: path}.

    Streams ``dpkg-deb --fsys-tarfile`` through tarfile and writes member bytes under their
    base names only (no path from the archive is trusted), skipping the ~80 MB of modules.
    """
    found: dict[str, Path] = {}
    try:
        proc = subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise ArtifactError(
            "dpkg-deb not found: a Debian host is needed to unpack the kernel"
        ) from None
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if not member.isfile() or not name.startswith("boot/"):
                    continue
                base = name.rsplit("/", 1)[-1]
                kind = base.split("-", 1)[0]
                if kind not in ("vmlinuz", "config"):
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                target = dest_dir / base
                with target.open("wb") as out:
                    shutil.copyfileobj(source, out)
                found[kind] = target
                if len(found) == 2:  # ./boot comes first: stop before the modules
                    break
    except tarfile.TarError as exc:
        raise ArtifactError(f"cannot read the file tree of {deb.name}: {exc}") from None
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        returncode = proc.wait()
    if returncode != 0 and "vmlinuz" not in found:
        raise ArtifactError(f"dpkg-deb --fsys-tarfile {deb.name} failed: {stderr.strip()[-300:]}")
    if "vmlinuz" not in found:
        raise ArtifactError(f"{deb.name} has no ./boot/vmlinuz-*: not a kernel image package")
    return found


def _kernel_from_record(directory: Path) -> GuestKernel | None:
    """The cached kernel in directory, or None when its record or files are missing."""
    try:
        record = json.loads((directory / "kernel.json").read_text())
        if record["schema_version"] != KERNEL_SCHEMA_VERSION:
            return None
        path = directory / str(record["boot_image"])
        vmlinuz = directory / str(record["vmlinuz"])
        if path.stat().st_size != record["boot_image_size"] or not vmlinuz.is_file():
            return None
        return GuestKernel(
            path,
            str(record["version"]),
            str(record["package"]),
            str(record["sha256"]),
            vmlinuz,
            str(record["release"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _kernel_dir(root: Path, package: str, version: str) -> Path:
    safe_version = re.sub(r"[^A-Za-z0-9.+~-]", "_", version)
    return root / "kernel" / f"{package}_{safe_version}"


def guest_kernel(cache: Path | None = None, *, refresh: bool = False) -> GuestKernel:
    """Return Debian's cloud kernel, fetching and unpacking it once per package version.

    A cache hit reads ``guest/kernel-current.json`` and runs no apt command at all. With
    ``refresh=True`` (or on a miss) the metapackage is resolved again with apt-cache and a
    new package version is downloaded; an already cached version is reused.
    """
    root = (cache or cache_dir()) / "guest"
    pointer = root / "kernel-current.json"
    if not refresh:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            current = json.loads(pointer.read_text())
            hit = _kernel_from_record(_kernel_dir(root, current["package"], current["version"]))
            if hit is not None:
                return hit
    package, version = resolve_kernel_package()
    directory = _kernel_dir(root, package, version)
    kernel = _kernel_from_record(directory) or _fetch_kernel(package, version, directory)
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(pointer, json.dumps({"package": package, "version": version}).encode())
    return kernel


def _fetch_kernel(package: str, version: str, directory: Path) -> GuestKernel:
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=".fetch-") as scratch_name:
        scratch = Path(scratch_name)
        download_dir = scratch / "download"
        download_dir.mkdir()
        deb = download_package(package, version, download_dir)
        staged = scratch / "kernel"
        staged.mkdir()
        files = unpack_boot(deb, staged)
        vmlinuz = files["vmlinuz"]
        release = vmlinuz.name.removeprefix("vmlinuz-")
        boot_image = vmlinuz
        bzimage = vmlinuz.read_bytes()
        vmlinux_note = "extracted: ELF with a PVH entry"
        try:
            elf = extract_vmlinux(bzimage)
        except ArtifactError as exc:
            elf, vmlinux_note = b"", str(exc)  # the bzImage still boots: keep it
        if elf and not has_pvh_entry(elf):
            elf, vmlinux_note = b"", "the vmlinux has no PVH entry note: QEMU cannot boot it"
        if elf:
            boot_image = staged / f"vmlinux-{release}"
            boot_image.write_bytes(elf)
        record = {
            "schema_version": KERNEL_SCHEMA_VERSION,
            "package": package,
            "version": version,
            "release": release,
            "boot_image": boot_image.name,
            "boot_image_size": boot_image.stat().st_size,
            "vmlinuz": vmlinuz.name,
            "sha256": sha256_file(boot_image),
            "vmlinuz_sha256": hashlib.sha256(bzimage).hexdigest(),
            "vmlinux": vmlinux_note,
        }
        (staged / "kernel.json").write_text(json.dumps(record, indent=2) + "\n")
        if directory.exists() and _kernel_from_record(directory) is None:
            shutil.rmtree(directory)  # a stale or half-written entry (older schema, crash)
        try:
            staged.rename(directory)
        except OSError as exc:
            if _kernel_from_record(directory) is None:  # not a concurrent fill: a real error
                raise ArtifactError(f"cannot store the guest kernel in {directory}: {exc}") from exc
    kernel = _kernel_from_record(directory)
    if kernel is None:
        raise ArtifactError(f"the unpacked kernel in {directory} is incomplete; delete it")
    return kernel
