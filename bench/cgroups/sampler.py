"""Sample cgroup files at a fixed interval while an instance lives.

An instance's cgroup vanishes when it exits, so values are taken while it runs and kept
as a time series; a read that fails ends the series (the cgroup is gone) instead of
inventing a value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Series:
    """Samples of a reader: (monotonic ns, values) in the order taken."""

    points: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    ended_reason: str | None = None

    def values(self, key: str) -> list[tuple[int, Any]]:
        """The (ns, value) points where ``key`` was readable."""
        return [(t, v[key]) for t, v in self.points if v.get(key) is not None]

    def last(self, key: str) -> Any:
        """The last readable value of ``key`` (None if never read)."""
        found = self.values(key)
        return found[-1][1] if found else None

    def maximum(self, key: str) -> Any:
        """The largest readable value of ``key`` (None if never read)."""
        found = [v for _t, v in self.values(key)]
        return max(found) if found else None


class CgroupSampler:
    """Run ``read()`` every ``interval_s`` on a thread until stopped or a read fails."""

    def __init__(self, read: Callable[[], dict[str, Any]], interval_s: float) -> None:
        self._read = read
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.series = Series()
        self._thread = threading.Thread(target=self._loop, name="cgroup-sampler", daemon=True)

    def start(self) -> CgroupSampler:
        """Take the first sample now, then keep sampling in the background."""
        self._sample_once()
        self._thread.start()
        return self

    def _sample_once(self) -> bool:
        try:
            values = self._read()
        except OSError as exc:
            self.series.ended_reason = f"cgroup unreadable ({exc.strerror}): instance gone"
            return False
        if all(value is None for value in values.values()):
            self.series.ended_reason = "cgroup files gone: instance exited"
            return False
        self.series.points.append((time.monotonic_ns(), values))
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            if not self._sample_once():
                return

    def stop(self) -> Series:
        """Stop sampling and return the series."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return self.series
