"""What `bench run` shows in a terminal: run a scenario under a pseudo-terminal, keep a
transcript of the screen, and print the distinct progress lines it showed over time.

Usage: .venv/bin/python tests/perf/progress_transcript.py [SCENARIO] [--every-s 5]

The run's output is read from the pty (a terminal of 120 columns), escape sequences are
stripped, and the last line of the screen is sampled every few seconds: what a person
watching would have seen. The full raw transcript is written beside the results.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def main() -> None:
    """Run the scenario in a pty and print what its progress showed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", nargs="?", default="scenarios/density-vm.yaml")
    parser.add_argument("--every-s", type=float, default=5.0)
    args = parser.parse_args()
    results = Path(tempfile.mkdtemp(prefix="bench-progress-"))
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            args.scenario,
            "--results",
            str(results),
            "--no-report",
        ],
        cwd=REPO,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    raw = bytearray()
    origin = time.monotonic()
    next_sample = 0.0
    shown: list[tuple[float, str]] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            raw.extend(chunk)
        elapsed = time.monotonic() - origin
        if elapsed >= next_sample:
            next_sample = elapsed + args.every_s
            text = ESCAPES.sub(b"", bytes(raw[-4000:])).decode(errors="replace")
            lines = [line for line in text.splitlines() if line.strip()]
            if lines and (not shown or shown[-1][1] != lines[-1]):
                shown.append((elapsed, lines[-1].strip()))
        if proc.poll() is not None and not ready:
            break
    proc.wait()
    transcript = results / "terminal.txt"
    transcript.write_bytes(bytes(raw))
    print(f"exit {proc.returncode}; raw transcript {transcript}")
    for elapsed, line in shown:
        print(f"{elapsed:6.1f} s | {line[:150]}")


if __name__ == "__main__":
    main()
