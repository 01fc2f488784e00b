"""Per-process memory from /proc: PSS from smaps_rollup, and host MemAvailable.

PSS (proportional set size) charges shared pages fractionally, so summing it over the
processes of many instances does not count a shared library once per instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """Parse /proc/PID/smaps_rollup text into bytes per field (``Pss``, ``Rss``, ...)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].endswith(":") and parts[2] == "kB":
            values[parts[0][:-1]] = int(parts[1]) * 1024
    return values


def pss_bytes(pid: int, proc_root: str = "/proc") -> int | None:
    """PSS of one process in bytes, None when it is gone or unreadable."""
    try:
        text = Path(proc_root, str(pid), "smaps_rollup").read_text()
    except OSError:
        return None
    return parse_smaps_rollup(text).get("Pss")


def mem_available_bytes(proc_root: str = "/proc") -> int:
    """Host MemAvailable in bytes."""
    for line in Path(proc_root, "meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable missing from /proc/meminfo")


def rss_bytes_self() -> int:
    """The harness's own RSS in bytes (density runs must stay small)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def smaps_rollup(pid: int, proc_root: str = "/proc") -> dict[str, int] | None:
    """All of /proc/PID/smaps_rollup in bytes (Pss_Anon, Pss_File, KSM ...), None if gone."""
    try:
        text = Path(proc_root, str(pid), "smaps_rollup").read_text()
    except OSError:
        return None
    return parse_smaps_rollup(text)


def page_table_bytes(pid: int, proc_root: str = "/proc") -> int | None:
    """Memory of the process's page tables (VmPTE of /proc/PID/status), None if gone."""
    try:
        text = Path(proc_root, str(pid), "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmPTE:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass(frozen=True)
class MemoryMapping:
    """One mapping of /proc/PID/smaps: its size, permissions, backing file, kB fields."""

    size: int
    perms: str
    path: str
    fields: dict[str, int]

    def get(self, name: str) -> int:
        """A field in bytes (``Rss``, ``Pss`` ...), 0 when absent."""
        return self.fields.get(name, 0)


def parse_smaps_mappings(text: str) -> list[MemoryMapping]:
    """One ``MemoryMapping`` per mapping of /proc/PID/smaps text."""
    mappings: list[MemoryMapping] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if "-" in parts[0] and not parts[0].endswith(":"):
            start, _, end = parts[0].partition("-")
            try:
                size = int(end, 16) - int(start, 16)
            except ValueError:
                continue
            mappings.append(
                MemoryMapping(
                    size=size,
                    perms=parts[1] if len(parts) > 1 else "",
                    path=parts[5] if len(parts) > 5 else "",
                    fields={},
                )
            )
        elif mappings and len(parts) == 3 and parts[2] == "kB":
            mappings[-1].fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return mappings


def guest_ram_and_jit(mappings: list[MemoryMapping], guest_ram_bytes: int) -> dict[str, int | None]:
    """Of a VMM's mappings: the guest's RAM and anonymous executable memory (a JIT).

    The guest RAM is the anonymous read-write mapping of exactly the guest's size: its RSS
    is what the guest actually touched of the RAM it was given (``guest_ram_rss``,
    ``guest_ram_pss``; None when there is no such mapping). ``jit_pss`` is the PSS of
    anonymous executable mappings (TCG's code cache under software emulation; 0 if none).
    """
    ram = [
        m for m in mappings if m.size == guest_ram_bytes and not m.path and m.perms.startswith("rw")
    ]
    found = max(ram, key=lambda m: m.get("Rss")) if ram else None
    return {
        "guest_ram_rss": found.get("Rss") if found else None,
        "guest_ram_pss": found.get("Pss") if found else None,
        "jit_pss": sum(m.get("Pss") for m in mappings if not m.path and "x" in m.perms),
    }


def smaps_mappings(pid: int, proc_root: str = "/proc") -> list[MemoryMapping] | None:
    """The mappings of a process (``parse_smaps_mappings``), None if it is gone."""
    try:
        text = Path(proc_root, str(pid), "smaps").read_text()
    except OSError:
        return None
    return parse_smaps_mappings(text)
