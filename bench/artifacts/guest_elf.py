"""The guest kernel's image: the ELF vmlinux inside an LZ4 bzImage, and its PVH entry.

QEMU boots an uncompressed vmlinux with a PVH note directly (no real-mode setup, no
in-guest decompression), which is faster under TCG; these functions find and extract it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

from bench.errors import ArtifactError

LZ4_LEGACY_MAGIC = bytes.fromhex("02214c18")
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the ELF note that marks a PVH entry point
PROVISION_FIX = "run ansible/up.sh (it installs qemu-system-x86, lz4, busybox-static, cpio)"

ELF_MAGIC = b"\x7fELF"


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
