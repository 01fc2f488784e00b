"""Output parsing: the READY marker and Docker's multiplexed attach stream (captured bytes)."""

from __future__ import annotations

import os
import time

import pytest

from bench.backends.stream import DockerStreamDemuxer, has_marker_line, wait_for_marker
from bench.errors import InstanceError, InstanceTimeout
from tests.conftest import DATA

CAPTURED = DATA / "docker" / "attach_stream_alloc40.bin"  # real engine 20.10.24, probe alloc 40


def test_demux_captured_stream_whole() -> None:
    frames = DockerStreamDemuxer().feed(CAPTURED.read_bytes())
    assert {stream for stream, _ in frames} == {1}
    text = b"".join(payload for _, payload in frames).decode()
    assert text == "READY\nALLOC 16\nALLOC 32\nALLOCATED 40\n"


@pytest.mark.parametrize("chunk", [1, 3, 7, 8, 9, 64])
def test_demux_captured_stream_in_pieces(chunk: int) -> None:
    data = CAPTURED.read_bytes()
    demux = DockerStreamDemuxer()
    payload = b""
    for start in range(0, len(data), chunk):
        payload += b"".join(p for _, p in demux.feed(data[start : start + chunk]))
    assert payload == b"READY\nALLOC 16\nALLOC 32\nALLOCATED 40\n"


def test_demux_keeps_stderr_frames_apart() -> None:
    data = b"\x02\x00\x00\x00\x00\x00\x00\x04oops" + b"\x01\x00\x00\x00\x00\x00\x00\x06READY\n"
    assert DockerStreamDemuxer().feed(data) == [(2, b"oops"), (1, b"READY\n")]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (b"READY\n", True),
        (b"boot\nREADY\n", True),
        (b"READY\r\n", True),
        (b"READY", False),  # line not complete yet
        (b"NOT READY\n", False),
        (b"READYX\n", False),
    ],
)
def test_marker_must_be_a_whole_line(text: bytes, found: bool) -> None:
    assert has_marker_line(text, "READY") is found


def test_wait_for_marker_reads_a_real_pipe() -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"hello\nREADY\n")
        buffer = bytearray()
        stamp = wait_for_marker(
            read_fd,
            lambda: os.read(read_fd, 100) or None,
            buffer,
            "READY",
            time.monotonic() + 5,
            "test",
        )
        assert stamp <= time.monotonic_ns()
        assert buffer == b"hello\nREADY\n"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_wait_for_marker_times_out_and_reports_eof() -> None:
    read_fd, write_fd = os.pipe()
    try:
        with pytest.raises(InstanceTimeout, match="no READY line before the timeout"):
            wait_for_marker(
                read_fd,
                lambda: os.read(read_fd, 100) or None,
                bytearray(),
                "READY",
                time.monotonic() + 0.05,
                "test",
            )
        os.write(write_fd, b"partial")
        os.close(write_fd)
        write_fd = -1
        with pytest.raises(InstanceError, match="output ended before READY"):
            wait_for_marker(
                read_fd,
                lambda: os.read(read_fd, 100) or None,
                bytearray(),
                "READY",
                time.monotonic() + 5,
                "test",
            )
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
