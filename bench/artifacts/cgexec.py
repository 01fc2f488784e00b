"""The cgroup exec helper (``cgexec.c``): a process joins its cgroup, then execs the probe.

Built and cached like the probe (``bench.artifacts.static_build``): found by its source
first, compiled with ``gcc -static`` only where no build exists, shippable to lab hosts.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bench.artifacts import static_build
from bench.artifacts.probe import PROBE_FIX, cache_dir

CGEXEC_CFLAGS = ("-static", "-O2", "-Wall", "-Wextra")
CGEXEC_NAME = "cgexec"


def cgexec_source() -> bytes:
    """Return the helper's C source as shipped in the package."""
    return resources.files("bench.artifacts").joinpath("cgexec.c").read_bytes()


def build_cgexec(cache: Path | None = None) -> static_build.StaticBinary:
    """Return the cached helper built from this source, or compile it."""
    return static_build.build(
        CGEXEC_NAME, cgexec_source(), CGEXEC_CFLAGS, cache or cache_dir(), PROBE_FIX
    )
