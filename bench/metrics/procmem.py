"""Per-process memory from /proc: PSS from smaps_rollup, and host MemAvailable.

PSS (proportional set size) charges shared pages fractionally, so summing it over the
processes of many instances does not count a shared library once per instance.
"""

from __future__ import annotations

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
