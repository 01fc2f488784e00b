"""Guest artefacts for VM backends: Debian's cloud kernel and an initramfs whose /init is the probe.

Both are built locally, before any timed interval, and cached by content: the kernel under
``cache_dir()/guest/kernel/<package>_<version>/``, the initramfs under
``cache_dir()/guest/initramfs-<hash of its inputs>.cpio[.gz]``.

The kernel is the package Debian's ``linux-image-cloud-amd64`` metapackage points at,
fetched with ``apt-get download`` (no install, so no initramfs hooks run) and unpacked
only for ./boot. Its vmlinuz is an LZ4 bzImage; the uncompressed vmlinux inside it is an
ELF with a PVH entry point, which QEMU boots directly (no real-mode setup, no in-guest
decompression) and is preferred when it proves to boot; the vmlinuz is the fallback.

The initramfs is a newc cpio written here in pure Python (no root, no mknod, fixed
mtimes and owners, sorted entries, so the same inputs give the same bytes): /init (the
probe), /bin/busybox with its applets as symlinks, /proc /sys /dev /tmp and a
/dev/console node (5, 1), so init has a console before devtmpfs is mounted.

``boot_with_qemu`` boots a kernel and initramfs with plain QEMU (no libvirt) and stamps
when the serial console's marker lines arrive on the host's monotonic clock; it proves the
artefacts boot and gives the reference figures in tests/perf/guest_boot_qemu.py.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import select
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench.artifacts.image import busybox_applets, busybox_path
from bench.artifacts.probe import ProbeBinary, build_probe, cache_dir
from bench.errors import ArtifactError

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
KERNEL_SCHEMA_VERSION = 1
BOOT_CHECK_SCHEMA_VERSION = 1
LZ4_LEGACY_MAGIC = bytes.fromhex("02214c18")
ELF_MAGIC = b"\x7fELF"
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the ELF note that marks a PVH entry point
PROVISION_FIX = "run ansible/up.sh (it installs qemu-system-x86, lz4, busybox-static, cpio)"

# The guest's console markers (printed by the probe's init mode) and READY.
USERSPACE_MARKER = "BENCH_USERSPACE"
UPTIME_MARKER = "BENCH_UPTIME"
EXIT_MARKER = "BENCH_EXIT"
READY_MARKER = "READY"

# Kernel parameters every guest boot gets, each measured under TCG on the dev machines
# (tests/perf/guest_boot_qemu.py); tsc_early_khz is added per host by guest_cmdline().
# - console=ttyS0: the serial console is where the host reads the markers.
# - panic=-1: a panicking guest reboots at once; with -no-reboot / on_reboot=destroy the
#   domain ends instead of hanging until the host's timeout.
# - quiet: each kernel line on the 8250 UART is emulated byte by byte under TCG.
# - loglevel=6 (after quiet): notice-level lines still print, ~20 of them, the first being
#   "Linux version ..." from start_kernel: the host stamps its arrival as the kernel's
#   start, which splits a boot into VMM + firmware (create -> first console byte), kernel
#   (-> BENCH_USERSPACE) and userspace (-> READY). Without it the guest is silent until
#   userspace, and "to first byte" equals the whole boot.
# - cryptomgr.notests: skips the crypto self-tests (~0.35 s of a ~1.8 s TCG boot).
# Measured and left out: mitigations=off, audit=0, no_timer_check, lsm=capability,
# 8250.nr_uarts=1, i8042.noaux/nokbd, tsc=reliable (each within noise, <= 0.05 s;
# mitigations=off would also make the guest's syscalls cheaper than the host's, skewing the
# comparison). Never acpi=off: ACPI is how reboot(RB_POWER_OFF) ends the domain.
GUEST_CMDLINE_BASE: tuple[str, ...] = (
    "console=ttyS0",
    "panic=-1",
    "quiet",
    "loglevel=6",
    "cryptomgr.notests",
)

DEV_CONSOLE_MAJOR = 5
DEV_CONSOLE_MINOR = 1
NEWC_MAGIC = b"070701"
NEWC_HEADER_SIZE = 110
NEWC_TRAILER = "TRAILER!!!"
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFLNK = 0o120000
S_IFCHR = 0o020000
INITRAMFS_LAYOUT_VERSION = 1  # bump when the entry list below changes

InitramfsCompression = Literal["none", "gzip"]
DEFAULT_INITRAMFS_COMPRESSION: InitramfsCompression = "none"


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


@dataclass(frozen=True)
class Initramfs:
    """A built initramfs: where it is, the hash of its bytes, and its compression."""

    path: Path
    sha256: str
    compression: InitramfsCompression = "none"


@dataclass(frozen=True)
class GuestArtifacts:
    """Everything a VM backend boots: kernel, initramfs, and the cmdline before ``--``."""

    kernel: GuestKernel
    initramfs: Initramfs
    cmdline_base: str


@dataclass(frozen=True)
class CpioEntry:
    """One newc cpio member: a directory, regular file, symlink (data = target) or device."""

    name: str
    mode: int
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0


@dataclass
class QemuBoot:
    """One QEMU boot, stamped on the host's monotonic clock (seconds from spawn).

    ``to_userspace_s``/``to_ready_s`` are None when the marker never arrived, ``to_exit_s``
    when QEMU was killed at the timeout; ``guest_exit_code`` is the probe's BENCH_EXIT code
    and ``guest_uptime_s`` the guest kernel's own (untrusted, informative) view of its boot.
    """

    command: list[str]
    to_first_byte_s: float | None = None
    to_userspace_s: float | None = None
    to_ready_s: float | None = None
    to_exit_s: float | None = None
    returncode: int | None = None
    timed_out: bool = False
    guest_exit_code: int | None = None
    guest_uptime_s: float | None = None
    console: str = ""
    markers: list[str] = field(default_factory=list)


# --- kernel -------------------------------------------------------------------------


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


def bzimage_payload(bzimage: bytes) -> bytes | None:
    """Return the compressed kernel inside a bzImage, from its setup header, or None.

    Boot protocol >= 2.08 records payload_offset/payload_length (relative to the
    protected-mode code after the setup sectors); the last 4 payload bytes are the
    uncompressed size the kernel build appends.
    """
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        return None
    (protocol,) = struct.unpack_from("<H", bzimage, 0x206)
    if protocol < 0x0208:
        return None
    setup_sects = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    end = start + payload_length
    if payload_length <= 4 or end > len(bzimage):
        return None
    return bzimage[start:end]


def _lz4_decompress(data: bytes, lz4: str) -> bytes:
    # lz4 exits non-zero on trailing bytes after the legacy frame (the magic-scan path feeds
    # the rest of the bzImage); the caller judges the output, as scripts/extract-vmlinux does.
    try:
        result = subprocess.run(
            [lz4, "-d", "-c", "-"], input=data, capture_output=True, check=False, timeout=120
        )
    except subprocess.TimeoutExpired:
        return b""
    return result.stdout


def extract_vmlinux(bzimage: bytes, lz4: str | None = None) -> bytes:
    """Return the uncompressed ELF vmlinux inside an LZ4 bzImage (scripts/extract-vmlinux).

    Uses the setup header's payload when it holds an LZ4 legacy frame, checking the
    decompressed size against the size appended by the build; else tries every LZ4 legacy
    magic (02 21 4c 18) in the file. Raises ArtifactError when no ELF comes out.
    """
    lz4_cli = lz4 or shutil.which("lz4")
    if lz4_cli is None:
        raise ArtifactError(f"lz4 not found: cannot extract the guest vmlinux; {PROVISION_FIX}")
    payload = bzimage_payload(bzimage)
    if payload is not None and payload.startswith(LZ4_LEGACY_MAGIC):
        (expected_size,) = struct.unpack("<I", payload[-4:])
        elf = _lz4_decompress(payload[:-4], lz4_cli)
        if elf.startswith(ELF_MAGIC) and len(elf) == expected_size:
            return elf
    offset = bzimage.find(LZ4_LEGACY_MAGIC)
    while offset >= 0:
        elf = _lz4_decompress(bzimage[offset:], lz4_cli)
        if elf.startswith(ELF_MAGIC):
            return elf
        offset = bzimage.find(LZ4_LEGACY_MAGIC, offset + 1)
    raise ArtifactError("no LZ4-compressed ELF kernel found in the bzImage (not an LZ4 kernel?)")


def elf_notes(elf: bytes) -> list[tuple[str, int, bytes]]:
    """Return (name, type, desc) of every note in a 64-bit little-endian ELF's PT_NOTE segments."""
    if not elf.startswith(ELF_MAGIC) or len(elf) < 64 or elf[4] != 2 or elf[5] != 1:
        return []
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    notes: list[tuple[str, int, bytes]] = []
    for index in range(phnum):
        base = phoff + index * phentsize
        if base + 56 > len(elf):
            break
        (p_type,) = struct.unpack_from("<I", elf, base)
        if p_type != 4:  # PT_NOTE
            continue
        (offset,) = struct.unpack_from("<Q", elf, base + 8)
        (size,) = struct.unpack_from("<Q", elf, base + 32)
        pos, end = offset, min(offset + size, len(elf))
        while pos + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, pos)
            name_start = pos + 12
            desc_start = name_start + _align4(namesz)
            name = elf[name_start : name_start + namesz].rstrip(b"\0").decode(errors="replace")
            notes.append((name, note_type, elf[desc_start : desc_start + descsz]))
            pos = desc_start + _align4(descsz)
    return notes


def has_pvh_entry(elf: bytes) -> bool:
    """True when the ELF carries a Xen PHYS32_ENTRY note: QEMU can boot it through PVH."""
    return any(
        name == "Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY for name, kind, _ in elf_notes(elf)
    )


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    _write_atomic(pointer, json.dumps({"package": package, "version": version}).encode())
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
            "sha256": _sha256_file(boot_image),
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


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


# --- initramfs ----------------------------------------------------------------------


def _newc_header(ino: int, entry: CpioEntry, nlink: int, namesize: int) -> bytes:
    fields = (
        ino,
        entry.mode,
        0,
        0,
        nlink,
        0,
        len(entry.data),
        0,
        0,
        entry.rdev_major,
        entry.rdev_minor,
        namesize,
        0,
    )
    return NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def newc_archive(entries: Iterable[CpioEntry]) -> bytes:
    """Return a newc ("070701") cpio of the entries, sorted by name, plus the trailer.

    Deterministic: uid/gid 0, mtime 0, inodes numbered in order, no hard links. Names
    are stored without a leading "/"; parents must be listed (sorting puts them first).
    """
    ordered = sorted(entries, key=lambda e: e.name.lstrip("/").encode())
    names = [e.name.lstrip("/") for e in ordered]
    if len(set(names)) != len(names):
        raise ArtifactError("duplicate names in the initramfs entry list")
    parts: list[bytes] = []
    for ino, (entry, name) in enumerate(zip(ordered, names, strict=True), start=1):
        if not name or name == NEWC_TRAILER:
            raise ArtifactError(f"invalid cpio member name {entry.name!r}")
        encoded = name.encode() + b"\0"
        nlink = 2 if entry.mode & 0o170000 == S_IFDIR else 1
        header = _newc_header(ino, entry, nlink, len(encoded))
        parts += [
            header,
            encoded,
            _pad4(NEWC_HEADER_SIZE + len(encoded)),
            entry.data,
            _pad4(len(entry.data)),
        ]
    trailer = NEWC_TRAILER.encode() + b"\0"
    parts += [
        _newc_header(0, CpioEntry(NEWC_TRAILER, 0), 1, len(trailer)),
        trailer,
        _pad4(NEWC_HEADER_SIZE + len(trailer)),
    ]
    return b"".join(parts)


def read_newc(archive: bytes) -> list[CpioEntry]:
    """Parse a newc cpio back into entries (up to the trailer); ArtifactError if malformed."""
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        header = archive[pos : pos + NEWC_HEADER_SIZE]
        if len(header) < NEWC_HEADER_SIZE or header[:6] != NEWC_MAGIC:
            raise ArtifactError(f"not a newc cpio header at offset {pos}")
        values = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rdev_major, rdev_minor, namesize = (
            values[1],
            values[6],
            values[9],
            values[10],
            values[11],
        )
        name_start = pos + NEWC_HEADER_SIZE
        name = archive[name_start : name_start + namesize].rstrip(b"\0").decode()
        data_start = name_start + namesize + (-(NEWC_HEADER_SIZE + namesize) % 4)
        if name == NEWC_TRAILER:
            return entries
        data = archive[data_start : data_start + filesize]
        if len(data) != filesize:
            raise ArtifactError(f"cpio member {name!r} is truncated")
        entries.append(CpioEntry(name, mode, data, rdev_major, rdev_minor))
        pos = data_start + filesize + (-filesize % 4)


def initramfs_entries(probe: bytes, busybox: bytes, applets: Iterable[str]) -> list[CpioEntry]:
    """The guest's root: /init (probe), /bin/busybox + applet links, /proc /sys /dev /tmp."""
    entries = [
        CpioEntry("bin", S_IFDIR | 0o755),
        CpioEntry("dev", S_IFDIR | 0o755),
        CpioEntry("dev/console", S_IFCHR | 0o600, b"", DEV_CONSOLE_MAJOR, DEV_CONSOLE_MINOR),
        CpioEntry("proc", S_IFDIR | 0o555),
        CpioEntry("sys", S_IFDIR | 0o555),
        CpioEntry("tmp", S_IFDIR | 0o1777),
        CpioEntry("init", S_IFREG | 0o755, probe),
        CpioEntry("bin/busybox", S_IFREG | 0o755, busybox),
    ]
    # busybox --list names busybox itself: a link over the binary would replace it.
    for applet in sorted(set(applets) - {"busybox"}):
        if not applet or "/" in applet:
            continue
        entries.append(CpioEntry(f"bin/{applet}", S_IFLNK | 0o777, b"busybox"))
    return entries


def initramfs_bytes(
    probe: bytes,
    busybox: bytes,
    applets: Iterable[str],
    compression: InitramfsCompression = DEFAULT_INITRAMFS_COMPRESSION,
) -> bytes:
    """The initramfs file's bytes: the newc archive, gzip-compressed (mtime 0) if asked."""
    archive = newc_archive(initramfs_entries(probe, busybox, applets))
    if compression == "gzip":
        return gzip.compress(archive, compresslevel=9, mtime=0)
    if compression == "none":
        return archive
    raise ArtifactError(f"unknown initramfs compression {compression!r} (none, gzip)")


def build_initramfs(
    probe: ProbeBinary,
    cache: Path | None = None,
    *,
    compression: InitramfsCompression = DEFAULT_INITRAMFS_COMPRESSION,
) -> Initramfs:
    """Build (or reuse) the guest initramfs for this probe and the host's static busybox.

    Cached as ``guest/initramfs-<key>.cpio[.gz]``, the key hashing every input: the probe
    and busybox bytes, the applet list, the layout version and the compression.
    """
    busybox = busybox_path()
    applets = busybox_applets(busybox)
    probe_data = probe.path.read_bytes()
    busybox_data = busybox.read_bytes()
    key = hashlib.sha256()
    for part in (
        f"layout {INITRAMFS_LAYOUT_VERSION} {compression}".encode(),
        hashlib.sha256(probe_data).digest(),
        hashlib.sha256(busybox_data).digest(),
        " ".join(applets).encode(),
    ):
        key.update(part)
    root = (cache or cache_dir()) / "guest"
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".cpio.gz" if compression == "gzip" else ".cpio"
    target = root / f"initramfs-{key.hexdigest()[:16]}{suffix}"
    digest_file = target.with_name(target.name + ".sha256")
    if target.is_file() and digest_file.is_file():
        return Initramfs(target, digest_file.read_text().strip(), compression)
    data = initramfs_bytes(probe_data, busybox_data, applets, compression)
    sha256 = hashlib.sha256(data).hexdigest()
    _write_atomic(target, data)
    _write_atomic(digest_file, f"{sha256}\n".encode())
    return Initramfs(target, sha256, compression)


# --- kernel command line ------------------------------------------------------------


def tsc_early_khz(cpuinfo: str) -> int | None:
    """The first ``cpu MHz`` of /proc/cpuinfo text, in kHz (None when absent)."""
    match = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo, re.MULTILINE)
    if match is None:
        return None
    khz = round(float(match.group(1)) * 1000)
    return khz if khz > 0 else None


def guest_cmdline(cpuinfo: str | None = None, extra: Sequence[str] = ()) -> str:
    """The kernel command line before ``--``: GUEST_CMDLINE_BASE, tsc_early_khz, extra.

    tsc_early_khz (the host's TSC rate) spares the guest its TSC calibration, which hangs
    when several TCG guests boot at once. ``cpuinfo`` defaults to /proc/cpuinfo.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    params = list(GUEST_CMDLINE_BASE)
    khz = tsc_early_khz(cpuinfo)
    if khz is not None:
        params.append(f"tsc_early_khz={khz}")
    params.extend(extra)
    return " ".join(params)


def boot_cmdline(cmdline_base: str, mode_args: Sequence[str]) -> str:
    """Append the probe's mode after ``--`` (e.g. ``["alloc", "64"]``): init reads it there."""
    for arg in mode_args:
        if not arg or any(c.isspace() for c in arg) or arg == "--":
            raise ArtifactError(f"probe argument {arg!r} cannot travel on a kernel cmdline")
    return f"{cmdline_base} -- {' '.join(mode_args)}".rstrip()


# --- booting with plain QEMU --------------------------------------------------------


def qemu_command(
    kernel: Path,
    initramfs: Path,
    cmdline: str,
    *,
    accel: str = "tcg",
    memory_mib: int = 128,
    qemu: str = "qemu-system-x86_64",
) -> list[str]:
    """QEMU argv for a direct kernel boot like the libvirt backend's domain.

    pc machine with ACPI (guest poweroff ends QEMU), -nodefaults as libvirt passes (no
    VGA or NIC to probe), serial on stdio, -no-reboot so a panic (panic=-1) ends QEMU too.
    Never ``-cpu host``: it aborts under the nested KVM of the dev machines.
    """
    return [
        qemu,
        "-accel",
        accel,
        "-machine",
        "pc",
        "-m",
        str(memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initramfs),
        "-append",
        cmdline,
    ]


def boot_with_qemu(command: Sequence[str], timeout_s: float = 60) -> QemuBoot:
    """Run QEMU, stamp the console markers (host monotonic clock), wait for it to exit.

    QEMU is killed at the timeout (a failed guest hangs rather than exits); it is never
    left running. Raises ArtifactError only when QEMU cannot be started.
    """
    boot = QemuBoot(list(command))
    t0 = time.monotonic_ns()
    try:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        raise ArtifactError(f"cannot start {command[0]}: {exc}; {PROVISION_FIX}") from None
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = t0 + int(timeout_s * 1e9)
    buffer = b""
    console = bytearray()
    closed = False  # QEMU closed its stdout: it is exiting by itself
    try:
        while True:
            left_s = (deadline - time.monotonic_ns()) / 1e9
            if left_s <= 0:
                boot.timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], left_s)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            now = time.monotonic_ns()
            if not chunk:
                closed = True
                break
            if boot.to_first_byte_s is None:
                boot.to_first_byte_s = (now - t0) / 1e9
            console += chunk
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                _note_console_line(boot, raw.decode(errors="replace").strip("\r"), now - t0)
    finally:
        # On a timeout or any exception (KeyboardInterrupt too) QEMU is killed, never left.
        if not closed:
            proc.kill()
        try:
            boot.returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            boot.returncode = proc.wait()
        if closed:
            boot.to_exit_s = (time.monotonic_ns() - t0) / 1e9
        proc.stdout.close()
    boot.console = console.decode(errors="replace")
    return boot


def _note_console_line(boot: QemuBoot, line: str, elapsed_ns: int) -> None:
    word, _, rest = line.strip().partition(" ")
    if word == USERSPACE_MARKER and boot.to_userspace_s is None:
        boot.to_userspace_s = elapsed_ns / 1e9
    elif word == READY_MARKER and rest == "" and boot.to_ready_s is None:
        boot.to_ready_s = elapsed_ns / 1e9
    elif word == UPTIME_MARKER:
        with contextlib.suppress(ValueError):
            boot.guest_uptime_s = float(rest)
    elif word == EXIT_MARKER:
        with contextlib.suppress(ValueError):
            boot.guest_exit_code = int(rest)
    else:
        return
    boot.markers.append(word)


# --- everything together --------------------------------------------------------------


def boot_check_ok(boot: QemuBoot) -> bool:
    """True when a `-- ready` boot reached userspace, then READY, and powered off cleanly."""
    return (
        boot.to_userspace_s is not None
        and boot.to_ready_s is not None
        and boot.to_userspace_s <= boot.to_ready_s
        and boot.guest_exit_code == 0
        and not boot.timed_out
        and boot.returncode == 0
    )


def verify_guest_boot(
    kernel: GuestKernel,
    initramfs: Initramfs,
    cmdline_base: str,
    cache: Path | None = None,
    timeout_s: float = 60,
) -> GuestKernel:
    """Boot the pair once under TCG (cached verdict) and return the kernel that boots.

    The PVH vmlinux is tried first; if it does not reach READY and power off, the bzImage
    is tried and returned instead. Raises ArtifactError when neither boots (the console
    tail says why). Without qemu-system-x86_64 nothing can be proven: the kernel is
    returned unchanged.
    """
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return kernel
    root = (cache or cache_dir()) / "guest"
    verdict_path = root / f"boot-check-{kernel.sha256[:16]}-{initramfs.sha256[:16]}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        verdict = json.loads(verdict_path.read_text())
        if verdict["schema_version"] == BOOT_CHECK_SCHEMA_VERSION:
            return _kernel_booting(kernel, str(verdict["boot_image"]))
    candidates = [kernel.path]
    if kernel.vmlinuz is not None and kernel.vmlinuz != kernel.path:
        candidates.append(kernel.vmlinuz)
    failures: list[str] = []
    for image in candidates:
        command = qemu_command(
            image, initramfs.path, boot_cmdline(cmdline_base, ["ready"]), qemu=qemu
        )
        boot = boot_with_qemu(command, timeout_s)
        if boot_check_ok(boot):
            root.mkdir(parents=True, exist_ok=True)
            _write_atomic(
                verdict_path,
                json.dumps(
                    {
                        "schema_version": BOOT_CHECK_SCHEMA_VERSION,
                        "boot_image": image.name,
                        "to_ready_s": boot.to_ready_s,
                        "to_exit_s": boot.to_exit_s,
                        "candidates": [c.name for c in candidates],
                    }
                ).encode(),
            )
            return _kernel_booting(kernel, image.name)
        failures.append(
            f"{image.name}: markers {boot.markers}, exit {boot.returncode}, "
            f"timed out {boot.timed_out}, console tail {boot.console[-300:]!r}"
        )
    raise ArtifactError(
        "the guest boots with no kernel image under QEMU TCG: " + "; ".join(failures)
    )


def _kernel_booting(kernel: GuestKernel, image_name: str) -> GuestKernel:
    if image_name == kernel.path.name:
        return kernel
    if kernel.vmlinuz is not None and image_name == kernel.vmlinuz.name:
        return GuestKernel(
            kernel.vmlinuz,
            kernel.version,
            kernel.package,
            _sha256_file(kernel.vmlinuz),
            kernel.vmlinuz,
            kernel.release,
        )
    raise KeyError(image_name)  # a stale verdict: boot again


def guest_artifacts(cache: Path | None = None, *, verify_boot: bool = True) -> GuestArtifacts:
    """Kernel, initramfs (for the current probe) and base cmdline, all cached.

    With ``verify_boot`` (the default) the pair is booted once under TCG, before any timing,
    and the vmlinux is swapped for the vmlinuz if only the latter boots (verdict cached).
    """
    cmdline_base = guest_cmdline()
    kernel = guest_kernel(cache)
    initramfs = build_initramfs(build_probe(cache), cache)
    if verify_boot:
        kernel = verify_guest_boot(kernel, initramfs, cmdline_base, cache)
    return GuestArtifacts(kernel, initramfs, cmdline_base)
