"""What a guest's console says, read on the host clock: shared by every VM backend.

The guest's init (bench's probe as /init) prints ``BENCH_USERSPACE`` first, then
``BENCH_UPTIME <s>`` (the guest's own clock: informative only), READY, and at the end
``BENCH_EXIT <code>``. ``take_console_bytes`` appends what was read and stamps the first
console byte and the userspace marker at the host time they were read.
"""

from __future__ import annotations

import re

from bench.artifacts.guest import EXIT_MARKER, UPTIME_MARKER, USERSPACE_MARKER
from bench.backends.base import Instance
from bench.backends.stream import has_marker_line

GUEST_DID_NOT_REPORT = -1


def take_console_bytes(instance: Instance, data: bytes, stamp_ns: int) -> None:
    """Append console output; stamp ``first_console_byte`` and ``userspace`` when first seen."""
    if not data:
        return
    if "first_console_byte" not in instance.t_ns:
        instance.t_ns["first_console_byte"] = stamp_ns
    instance.output.extend(data)
    if "userspace" not in instance.t_ns and has_marker_line(instance.output, USERSPACE_MARKER):
        instance.t_ns["userspace"] = stamp_ns


def guest_exit_code(output: bytes | bytearray) -> int | None:
    """The payload's exit code as the guest's init reported it (None: never reported)."""
    code = re.search(rb"^" + EXIT_MARKER.encode() + rb" (-?[0-9]+)", output, re.M)
    return int(code.group(1)) if code else None


def guest_uptime_s(output: bytes | bytearray) -> float | None:
    """The guest's own uptime when its init started (its clock: a label, never a figure)."""
    uptime = re.search(rb"^" + UPTIME_MARKER.encode() + rb" ([0-9.]+)", output, re.M)
    return float(uptime.group(1)) if uptime else None
