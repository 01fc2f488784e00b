"""Reading the files a user names, defensively: regular files only, and never without bound.

A scenario path mistyped as ``/dev/zero`` must not read until the kernel kills bench, and
a FIFO must not hang it: every file bench reads because a user named it (a scenario, a
run's files, a calibration or baseline) is opened without blocking, checked to be a
regular file, and read up to a cap. The caller names the error to raise, so the message
keeps the file and what it was meant to be.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bench.errors import BenchError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words (``a FIFO``, ``a character device``)."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


@contextlib.contextmanager
def open_regular(path: str | Path, error: type[BenchError], what: str) -> Iterator[BinaryIO]:
    """Open ``path`` for reading if it is a regular file; else raise ``error`` saying so.

    Opened with O_NONBLOCK, so a FIFO with no writer cannot hang the open; the check is
    made on the opened descriptor (fstat), so the file cannot be swapped in between.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: cannot read {what}: {file_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_bounded(path: str | Path, max_bytes: int, error: type[BenchError], what: str) -> bytes:
    """The bytes of regular file ``path``, refusing one over ``max_bytes`` unread.

    ``what`` names the file's kind without an article (``scenario``, ``run file``): the
    errors read "cannot read scenario: a FIFO, not a regular file", "not a scenario:
    N bytes, more than M bytes".
    """
    with open_regular(path, error, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise error(f"{path}: not a {what}: {size} bytes, more than {max_bytes} bytes")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while we read it
        raise error(f"{path}: not a {what}: more than {max_bytes} bytes")
    return data


def read_text_bounded(path: str | Path, max_bytes: int, error: type[BenchError], what: str) -> str:
    """``read_bounded`` decoded as UTF-8 (text that is not UTF-8 raises ``error``)."""
    data = read_bounded(path, max_bytes, error, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: cannot read {what}: not UTF-8 text") from None


# A bench JSON file (run.json, a calibration, a baseline) is kilobytes to a few MiB: the
# run's scenario text (at most 1 MiB) is its largest part.
MAX_JSON_FILE_BYTES = 64 * 1024 * 1024


def read_json_object(
    path: str | Path, error: type[BenchError], what: str, max_bytes: int = MAX_JSON_FILE_BYTES
) -> dict[str, Any]:
    """The JSON object in regular file ``path`` (read as ``read_bounded``), else ``error``.

    A missing file says "no such {what}"; invalid JSON "not valid JSON (...)"; JSON that is
    not an object "not a bench {what}".
    """
    if not os.path.lexists(path):
        raise error(f"{path}: no such {what}")
    data = read_bounded(path, max_bytes, error, what)
    try:
        document = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise error(f"{path}: not a bench {what}")
    return document
