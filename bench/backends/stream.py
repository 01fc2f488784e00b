"""Read an instance's output until a marker line appears, under a deadline, stamping the read.

Shared by every backend: the READY line is the end of startup, and it must be stamped
the moment the host reads it, not after any later parsing.
"""

from __future__ import annotations

import re
import select
import struct
import time
from collections.abc import Callable

from bench.backends.base import now_ns
from bench.errors import InstanceError, InstanceTimeout

READY_MARKER = "READY"


def has_marker_line(buffer: bytes | bytearray, marker: str) -> bool:
    """True when ``marker`` appears as a whole line of ``buffer``."""
    return re.search(rb"(?:^|\n)" + re.escape(marker.encode()) + rb"\r?\n", buffer) is not None


def wait_for_marker(
    fileno: int,
    read_chunk: Callable[[], bytes | None],
    buffer: bytearray,
    marker: str,
    deadline: float,
    what: str,
) -> int:
    """Append output to ``buffer`` until ``marker`` is a line; return the ns it was read.

    ``read_chunk`` returns new payload bytes (possibly empty) or None at end of stream.
    Raises InstanceTimeout at ``deadline`` (time.monotonic) and InstanceError at EOF.
    """
    if has_marker_line(buffer, marker):
        return now_ns()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InstanceTimeout(
                f"{what}: no {marker} line before the timeout; last output: "
                f"{bytes(buffer[-200:]).decode(errors='replace')!r}"
            )
        readable, _, _ = select.select([fileno], [], [], remaining)
        if not readable:
            continue
        chunk = read_chunk()
        stamp = now_ns()
        if chunk is None:
            raise InstanceError(
                f"{what}: output ended before {marker}; last output: "
                f"{bytes(buffer[-200:]).decode(errors='replace')!r}"
            )
        buffer.extend(chunk)
        if has_marker_line(buffer, marker):
            return stamp


class DockerStreamDemuxer:
    """Split Docker's multiplexed attach stream (8-byte frame headers) into payload bytes.

    Frame header: stream type (1 byte: 0 stdin, 1 stdout, 2 stderr), 3 zero bytes, then a
    big-endian uint32 payload length. Partial frames are kept until complete.
    """

    HEADER = struct.Struct(">BxxxL")

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add raw bytes; return the complete (stream, payload) frames now available."""
        self._pending.extend(data)
        frames: list[tuple[int, bytes]] = []
        while len(self._pending) >= self.HEADER.size:
            stream, length = self.HEADER.unpack_from(self._pending)
            end = self.HEADER.size + length
            if len(self._pending) < end:
                break
            frames.append((stream, bytes(self._pending[self.HEADER.size : end])))
            del self._pending[:end]
        return frames
