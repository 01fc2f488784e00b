"""Guest artefacts: newc writer, cmdline, vmlinux extraction, console stamping, a real boot."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bench.artifacts import guest, guest_elf
from bench.artifacts.guest import (
    CpioEntry,
    boot_check_ok,
    boot_cmdline,
    boot_with_qemu,
    build_initramfs,
    bzimage_payload,
    extract_vmlinux,
    guest_artifacts,
    guest_cmdline,
    has_pvh_entry,
    initramfs_bytes,
    initramfs_entries,
    newc_archive,
    qemu_command,
    read_newc,
    tsc_early_khz,
)
from bench.artifacts.guest_initramfs import S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG
from bench.artifacts.probe import ProbeBinary
from bench.errors import ArtifactError
from tests.conftest import DATA, skip_or_fail

GUEST_DATA = DATA / "guest"
APPLETS = ["ash", "busybox", "cat", "ls", "sh"]


def _entries() -> list[CpioEntry]:
    return initramfs_entries(b"\x7fELF probe", b"\x7fELF busybox!", APPLETS)


# --- newc writer ------------------------------------------------------------------


def test_newc_round_trip_keeps_every_entry_sorted() -> None:
    entries = _entries()
    parsed = read_newc(newc_archive(reversed(entries)))
    assert parsed == sorted(entries, key=lambda e: e.name.encode())
    names = [e.name for e in parsed]
    assert names.index("bin") < names.index("bin/busybox")
    assert names.index("dev") < names.index("dev/console")


def test_newc_layout_is_aligned_and_ends_with_trailer() -> None:
    archive = newc_archive([CpioEntry("a", S_IFREG | 0o644, b"xyz")])
    assert archive.startswith(b"070701")
    assert len(archive) % 4 == 0
    assert b"TRAILER!!!\0" in archive
    # name "a\0" after the 110-byte header, padded to 112; data "xyz" padded to 4
    assert archive[110:112] == b"a\0"
    assert archive[112:116] == b"xyz\0"
    header = archive[:110]
    fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
    ino, mode, uid, gid, nlink, mtime, size = fields[:7]
    assert (ino, mode, uid, gid, nlink, mtime, size) == (1, S_IFREG | 0o644, 0, 0, 1, 0, 3)


def test_newc_is_deterministic() -> None:
    first = initramfs_bytes(b"probe", b"busybox", APPLETS)
    second = initramfs_bytes(b"probe", b"busybox", list(reversed(APPLETS)))
    assert first == second
    gz_first = initramfs_bytes(b"probe", b"busybox", APPLETS, "gzip")
    assert gz_first == initramfs_bytes(b"probe", b"busybox", APPLETS, "gzip")
    assert gzip.decompress(gz_first) == first


def test_newc_rejects_duplicates_and_garbage() -> None:
    with pytest.raises(ArtifactError, match="duplicate"):
        newc_archive([CpioEntry("x", S_IFDIR | 0o755), CpioEntry("/x", S_IFDIR | 0o755)])
    with pytest.raises(ArtifactError, match="newc"):
        read_newc(b"not a cpio at all" * 10)
    with pytest.raises(ArtifactError, match="unknown initramfs compression"):
        initramfs_bytes(b"p", b"b", [], "zstd")  # type: ignore[arg-type]


def test_initramfs_layout_has_console_init_and_busybox_links() -> None:
    by_name = {e.name: e for e in _entries()}
    console = by_name["dev/console"]
    assert console.mode == S_IFCHR | 0o600
    assert (console.rdev_major, console.rdev_minor) == (5, 1)
    assert by_name["init"].mode == S_IFREG | 0o755
    assert by_name["init"].data == b"\x7fELF probe"
    assert by_name["bin/busybox"].mode == S_IFREG | 0o755  # not clobbered by its own applet
    assert by_name["bin/sh"].mode == S_IFLNK | 0o777
    assert by_name["bin/sh"].data == b"busybox"
    for directory in ("bin", "dev", "proc", "sys", "tmp"):
        assert by_name[directory].mode & 0o170000 == S_IFDIR
    assert by_name["tmp"].mode & 0o7777 == 0o1777


def test_cpio_tool_reads_what_we_wrote(tmp_path: Path) -> None:
    cpio = shutil.which("cpio")
    if cpio is None:
        skip_or_fail("cpio not installed (ansible/up.sh installs it)")
        return
    archive = newc_archive(_entries())
    listing = subprocess.run(
        [cpio, "-itv", "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    console_line = next(line for line in listing.splitlines() if line.endswith("dev/console"))
    assert console_line.startswith("crw-------")
    assert "5,   1" in console_line or "5, 1" in console_line
    assert "bin/sh -> busybox" in listing
    # Extract the regular files and links (device nodes need mknod, so leave dev/ out).
    subprocess.run(
        [cpio, "-idm", "--quiet", "--no-absolute-filenames", "init", "bin/*"],
        input=archive,
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "init").read_bytes() == b"\x7fELF probe"
    assert (tmp_path / "bin" / "sh").resolve() == (tmp_path / "bin" / "busybox").resolve()
    assert os.access(tmp_path / "init", os.X_OK)


def test_build_initramfs_caches_by_content(tmp_path: Path) -> None:
    if shutil.which("busybox") is None:
        skip_or_fail("busybox not installed (ansible/up.sh installs busybox-static)")
    probe_path = tmp_path / "probe"
    probe_path.write_bytes(b"\x7fELF fake probe")
    probe = ProbeBinary(probe_path, "0" * 64)
    first = build_initramfs(probe, tmp_path)
    mtime_ns = first.path.stat().st_mtime_ns
    second = build_initramfs(probe, tmp_path)
    assert second == first
    assert first.path.stat().st_mtime_ns == mtime_ns
    parsed = {e.name: e for e in read_newc(first.path.read_bytes())}
    assert parsed["init"].data == b"\x7fELF fake probe"
    assert "bin/busybox" in parsed and "bin/sh" in parsed
    gz = build_initramfs(probe, tmp_path, compression="gzip")
    assert gz.path.name.endswith(".cpio.gz")
    assert gzip.decompress(gz.path.read_bytes()) == first.path.read_bytes()
    probe_path.write_bytes(b"\x7fELF another probe")
    assert build_initramfs(probe, tmp_path).path != first.path


# --- kernel command line ------------------------------------------------------------


def test_tsc_early_khz_from_captured_cpuinfo() -> None:
    cpuinfo = (GUEST_DATA / "cpuinfo_debian12_xeon_2300mhz.txt").read_text()
    assert tsc_early_khz(cpuinfo) == 2_300_000
    assert tsc_early_khz("cpu MHz\t\t: 2095.076\n") == 2_095_076
    assert tsc_early_khz("processor : 0\n") is None


def test_guest_cmdline_and_mode_arguments() -> None:
    cpuinfo = (GUEST_DATA / "cpuinfo_debian12_xeon_2300mhz.txt").read_text()
    base = guest_cmdline(cpuinfo)
    params = base.split()
    assert params[0] == "console=ttyS0"
    assert {"panic=-1", "quiet", "tsc_early_khz=2300000"} <= set(params)
    assert "acpi=off" not in params  # ACPI is how the guest powers the domain off
    assert "tsc_early_khz" not in guest_cmdline("")
    assert guest_cmdline(cpuinfo, ["loglevel=7"]).endswith(" loglevel=7")
    assert boot_cmdline(base, ["alloc", "64"]) == f"{base} -- alloc 64"
    assert boot_cmdline(base, ["burn", "2", "5"]).endswith(" -- burn 2 5")
    for bad in (["alloc 64"], ["--"], [""]):
        with pytest.raises(ArtifactError):
            boot_cmdline(base, bad)


def test_qemu_command_never_uses_host_cpu() -> None:
    command = qemu_command(Path("/k"), Path("/i"), "console=ttyS0 -- ready")
    assert command[command.index("-accel") + 1] == "tcg"
    assert command[command.index("-machine") + 1] == "pc"
    assert command[command.index("-append") + 1] == "console=ttyS0 -- ready"
    assert "-no-reboot" in command
    assert "host" not in command


# --- vmlinux extraction -------------------------------------------------------------


def _fake_elf(with_pvh_note: bool) -> bytes:
    """A minimal ELF64 LE: header, one PT_NOTE program header, a Xen note, padding."""
    note_type = guest_elf.XEN_ELFNOTE_PHYS32_ENTRY if with_pvh_note else 6
    note = struct.pack("<III", 4, 8, note_type) + b"Xen\0" + struct.pack("<Q", 0x1000000)
    phoff, note_offset = 64, 64 + 56
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, phoff, 0, 0, 64, 56, 1, 64, 0, 0
    )
    phdr = struct.pack("<IIQQQQQQ", 4, 4, note_offset, 0, 0, len(note), len(note), 4)
    return header + phdr + note + bytes(range(256)) * 64


def _lz4_legacy(data: bytes) -> bytes:
    lz4 = shutil.which("lz4")
    if lz4 is None:
        skip_or_fail("lz4 not installed (ansible/up.sh installs it)")
        raise AssertionError("unreachable")
    return subprocess.run(
        [lz4, "-l", "-c", "-"], input=data, capture_output=True, check=True
    ).stdout


def _fake_bzimage(compressed: bytes, uncompressed_size: int) -> bytes:
    """Setup sectors with a boot-protocol 2.15 header pointing at an LZ4 payload."""
    setup_sects = 3
    payload = compressed + struct.pack("<I", uncompressed_size)
    payload_offset = 0x200  # relative to the protected-mode code
    image = bytearray((setup_sects + 1) * 512 + payload_offset)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x020F)
    struct.pack_into("<II", image, 0x248, payload_offset, len(payload))
    return bytes(image) + payload + b"\x00signature-ish trailer" * 4


def test_extract_vmlinux_from_header_payload() -> None:
    elf = _fake_elf(with_pvh_note=True)
    bzimage = _fake_bzimage(_lz4_legacy(elf), len(elf))
    payload = bzimage_payload(bzimage)
    assert payload is not None and payload.startswith(guest_elf.LZ4_LEGACY_MAGIC)
    assert extract_vmlinux(bzimage) == elf
    assert has_pvh_entry(elf)
    assert not has_pvh_entry(_fake_elf(with_pvh_note=False))
    assert not has_pvh_entry(b"MZ not an elf")


def test_extract_vmlinux_by_magic_scan_without_header() -> None:
    elf = _fake_elf(with_pvh_note=False)
    # A stray magic before the real stream must be skipped, as scripts/extract-vmlinux does.
    blob = b"junk" + guest_elf.LZ4_LEGACY_MAGIC + b"garbage" + _lz4_legacy(elf) + b"tail" * 10
    assert bzimage_payload(blob) is None
    assert extract_vmlinux(blob) == elf
    with pytest.raises(ArtifactError, match="no LZ4"):
        extract_vmlinux(b"no kernel here" * 100)


# --- console stamping (a stand-in process plays QEMU) ------------------------------


def test_boot_with_qemu_stamps_markers_from_a_captured_console() -> None:
    log = GUEST_DATA / "serial_ready_vmlinux.log"
    boot = boot_with_qemu(["cat", str(log)], timeout_s=10)
    assert boot.markers == ["BENCH_USERSPACE", "BENCH_UPTIME", "READY", "BENCH_EXIT"]
    assert boot.to_first_byte_s is not None and boot.to_userspace_s is not None
    assert boot.to_ready_s is not None and boot.to_exit_s is not None
    assert boot.to_userspace_s <= boot.to_ready_s <= boot.to_exit_s
    assert boot.guest_exit_code == 0
    assert boot.guest_uptime_s is not None and 0 < boot.guest_uptime_s < 30
    assert boot_check_ok(boot)


def test_boot_with_qemu_kills_a_hung_guest() -> None:
    script = (
        "import sys,time; sys.stdout.write('BENCH_USERSPACE\\n'); sys.stdout.flush(); "
        "time.sleep(60)"
    )
    boot = boot_with_qemu([sys.executable, "-c", script], timeout_s=1)
    assert boot.timed_out
    assert boot.to_userspace_s is not None and boot.to_ready_s is None
    assert boot.to_exit_s is None
    assert boot.returncode is not None and boot.returncode < 0  # killed, not left running
    assert not boot_check_ok(boot)


def test_boot_with_qemu_reports_a_missing_binary() -> None:
    with pytest.raises(ArtifactError, match="cannot start"):
        boot_with_qemu(["/nonexistent/qemu-system-x86_64"], timeout_s=1)


# --- the real guest ---------------------------------------------------------------


def test_real_guest_boots_under_tcg_and_artefacts_are_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        skip_or_fail("qemu-system-x86_64 not installed (ansible/up.sh installs qemu-system-x86)")
        return
    if shutil.which("apt-get") is None:
        skip_or_fail("apt-get not found: the guest kernel comes from Debian's archive")
    try:
        artifacts = guest_artifacts()
    except ArtifactError as exc:
        skip_or_fail(f"guest artefacts unavailable: {exc}")
        return
    assert artifacts.kernel.path.read_bytes()[:4] == b"\x7fELF" or artifacts.kernel.vmlinuz
    assert "tsc_early_khz=" in artifacts.cmdline_base or not guest.tsc_early_khz(
        Path("/proc/cpuinfo").read_text()
    )

    files = [artifacts.kernel.path, artifacts.initramfs.path]
    if artifacts.kernel.vmlinuz is not None:
        files.append(artifacts.kernel.vmlinuz)
    mtimes_ns = [f.stat().st_mtime_ns for f in files]

    def no_apt(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a cache hit must not run apt")

    from bench.artifacts import guest_kernel

    monkeypatch.setattr(guest_kernel, "resolve_kernel_package", no_apt)
    monkeypatch.setattr(guest_kernel, "download_package", no_apt)
    again = guest_artifacts()
    assert again == artifacts
    assert [f.stat().st_mtime_ns for f in files] == mtimes_ns

    ready = boot_with_qemu(
        qemu_command(
            artifacts.kernel.path,
            artifacts.initramfs.path,
            boot_cmdline(artifacts.cmdline_base, ["ready"]),
            qemu=qemu,
        ),
        timeout_s=60,
    )
    assert not ready.timed_out, ready.console[-2000:]
    assert ready.markers[:1] == ["BENCH_USERSPACE"], ready.console[-2000:]
    assert ready.markers.index("BENCH_USERSPACE") < ready.markers.index("READY")
    assert ready.to_userspace_s is not None and ready.to_ready_s is not None
    assert ready.to_userspace_s <= ready.to_ready_s
    assert ready.guest_exit_code == 0
    assert ready.returncode == 0 and ready.to_exit_s is not None  # powered itself off
    assert ready.to_exit_s < 60

    # A failing mode: PID 1 survives it, reports the code, and still powers off.
    failing = boot_with_qemu(
        qemu_command(
            artifacts.kernel.path,
            artifacts.initramfs.path,
            boot_cmdline(artifacts.cmdline_base, ["alloc", "many"]),
            qemu=qemu,
        ),
        timeout_s=60,
    )
    assert not failing.timed_out, failing.console[-2000:]
    assert "ERROR bad MiB: many" in failing.console
    assert failing.guest_exit_code == 2
    assert failing.returncode == 0
    assert "Kernel panic" not in failing.console
