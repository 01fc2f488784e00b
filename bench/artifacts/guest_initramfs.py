"""The guest's initramfs: a reproducible newc cpio written in pure Python.

No root, no mknod, fixed mtimes and owners, sorted entries, so the same inputs give the
same bytes: /init (the probe), /bin/busybox with its applets as symlinks, /proc /sys /dev
/tmp and a /dev/console node (5, 1), so init has a console before devtmpfs is mounted.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.artifacts.cache_files import write_atomic
from bench.artifacts.image import busybox_applets, busybox_path
from bench.artifacts.probe import ProbeBinary, cache_dir
from bench.errors import ArtifactError

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
class Initramfs:
    """A built initramfs: where it is, the hash of its bytes, and its compression."""

    path: Path
    sha256: str
    compression: InitramfsCompression = "none"


@dataclass(frozen=True)
class CpioEntry:
    """One newc cpio member: a directory, regular file, symlink (data = target) or device."""

    name: str
    mode: int
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0


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
    write_atomic(target, data)
    write_atomic(digest_file, f"{sha256}\n".encode())
    return Initramfs(target, sha256, compression)
