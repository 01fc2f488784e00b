"""The static probe binary: found by its source in the cache, built only when missing.

The lookup needs no compiler (``bench.artifacts.static_build``): a lab host uses the
probe the controller built and shipped; gcc is needed only where no build of this
source exists yet. ``ProbeBinary.sha256`` is the binary's own content hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bench.artifacts import static_build

PROBE_CFLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-pthread")
PROBE_NAME = "probe"
PROBE_FIX = "run ansible/up.sh (installs gcc), or ship the controller's build (ansible/fleet.yml)"


@dataclass(frozen=True)
class ProbeBinary:
    """A built probe: where it is and the sha256 of its bytes."""

    path: Path
    sha256: str


def cache_dir() -> Path:
    """Return the artefact cache: $BENCH_CACHE_DIR, $XDG_CACHE_HOME/bench or ~/.cache/bench."""
    explicit = os.environ.get("BENCH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bench"


def probe_source() -> bytes:
    """Return the probe's C source as shipped in the package."""
    return resources.files("bench.artifacts").joinpath("probe.c").read_bytes()


def build_probe_static(cache: Path | None = None) -> static_build.StaticBinary:
    """The probe as a static-build record (with its source key, for shipping)."""
    return static_build.build(
        PROBE_NAME, probe_source(), PROBE_CFLAGS, cache or cache_dir(), PROBE_FIX
    )


def build_probe(cache: Path | None = None) -> ProbeBinary:
    """Return the cached probe built from this source, or compile it with ``gcc -static``."""
    built = build_probe_static(cache)
    return ProbeBinary(built.path, built.sha256)
