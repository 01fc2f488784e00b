"""Read a v2 cgroup's ``memory.events`` every time the kernel changes it, until it vanishes.

A container's cgroup is removed by its runtime moments after the container dies, and an
OOM kill is exactly such a death: a sampler polling every few milliseconds usually reads
the cgroup for the last time *before* the kill, and then finds it gone. cgroup v2 makes a
file-modified event on ``memory.events`` whenever a counter in it changes, so an inotify
watch wakes this reader the moment ``oom_kill`` rises, while the cgroup still exists. The
last values it read are the cgroup's own counters, not inferred ones.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import struct
import threading
from pathlib import Path

from bench.cgroups.readers import parse_flat_keyed

IN_MODIFY = 0x00000002
IN_IGNORED = 0x00008000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT_HEADER = struct.Struct("iIII")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class MemoryEventsWatch:
    """Watch ``<directory>/memory.events``; ``last`` holds the newest counters read.

    Start it while the instance lives; ``stop()`` returns the last counters (empty when
    the file could never be read). ``reads`` counts the reads, ``ended`` says why the
    watch ended (the cgroup removed, or stopped).
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "memory.events"
        self.last: dict[str, int] = {}
        self.reads = 0
        self.ended: str | None = None
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._fd = -1
        self._thread = threading.Thread(target=self._loop, name="memory-events", daemon=True)

    def start(self) -> MemoryEventsWatch:
        """Add the inotify watch, read the file once, then follow it on a thread."""
        libc = _libc()
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd = fd
        if libc.inotify_add_watch(fd, os.fsencode(self.path), IN_MODIFY) < 0:
            errno = ctypes.get_errno()
            self._close()
            raise OSError(errno, f"cannot watch {self.path}")
        self._read()
        self._thread.start()
        return self

    def _read(self) -> bool:
        try:
            text = self.path.read_text()
        except OSError:
            return False
        values = parse_flat_keyed(text)
        if values:
            self.last = values
            self.reads += 1
        return True

    def _loop(self) -> None:
        try:
            while True:
                ready, _, _ = select.select([self._fd, self._stop_r], [], [])
                if self._stop_r in ready:
                    self.ended = "stopped"
                    return
                try:
                    data = os.read(self._fd, 4096)
                except BlockingIOError:
                    continue
                offset = 0
                ignored = False
                while offset + _EVENT_HEADER.size <= len(data):
                    _wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
                    offset += _EVENT_HEADER.size + length
                    ignored = ignored or bool(mask & IN_IGNORED)
                if not self._read() or ignored:
                    self.ended = "cgroup removed"
                    return
        finally:
            self._close()

    def stop(self) -> dict[str, int]:
        """Stop following the file and return the last counters read."""
        if self._thread.is_alive():
            with contextlib.suppress(OSError):
                os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
        else:
            self._close()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_r = self._stop_w = -1
        return dict(self.last)

    def _close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
