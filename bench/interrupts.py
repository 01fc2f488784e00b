"""SIGINT and SIGTERM during a run: raised as KeyboardInterrupt, except inside an engine call.

A signal can land while an engine is creating an instance: the request has left, the
engine will create the container (or domain, or process), but its id has not come back.
Raised there, the interrupt leaves bench with a name and no handle, and removal by name
races the engine: "no such container" now, a container a millisecond later. So the
lifecycle's create and start calls run ``deferred()``: a signal that lands inside waits
until the call returned (its handle recorded), then raises. The calls are short (tens to
hundreds of ms, each under its own timeout), so a stop stays prompt.

Signal handlers run only in the main thread; worker threads (a density ramp's) never
see the interrupt, and the ramp's teardown waits for their calls in flight instead.
``handling()`` installs the handlers for a run's duration, and once an interrupt was
raised it drops later ones, so the run's cleanup runs to its end; without it (a library
caller outside a run) ``deferred()`` changes nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_depth = 0
_pending: int | None = None
# set once an interrupt was raised: the run is stopping, and further signals must not cut
# its cleanup short, so they are dropped
_stopping = False


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handler(signum: int, frame: FrameType | None) -> None:
    """Raise KeyboardInterrupt now, or remember the signal while an engine call is in flight.

    Once one was raised, the run is stopping: later signals are dropped.
    """
    global _pending, _stopping
    if _stopping:
        return
    if _depth > 0:
        _pending = signum
        return
    _stopping = True
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (deferred inside ``deferred()``) meanwhile.

    Once one interrupt was raised, further signals are dropped until the block ends: a
    run's cleanup is not cut short by a second Ctrl-C. Main thread only (elsewhere it
    changes nothing); the previous handlers come back after.
    """
    global _pending, _stopping
    if not _in_main_thread():
        yield
        return
    _pending, _stopping = None, False
    previous = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def stopping() -> None:
    """The run is on its way out: from now on its signals are dropped (cleanup runs whole)."""
    global _stopping
    _stopping = True


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done; then raise KeyboardInterrupt if one came."""
    global _depth, _pending, _stopping
    if not _in_main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            _stopping = True
            raise KeyboardInterrupt(
                f"signal {signal.Signals(signum).name} (held until the engine call returned)"
            )
