"""Build the static probe binary once per content hash, outside any timed interval."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bench.errors import ArtifactError

PROBE_CFLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-pthread")


@dataclass(frozen=True)
class ProbeBinary:
    """A built probe: where it is and the hash of what it was built from."""

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


def _compiler_identity(gcc: str) -> bytes:
    result = subprocess.run([gcc, "--version"], capture_output=True, check=False)
    return result.stdout


def build_probe(cache: Path | None = None) -> ProbeBinary:
    """Compile probe.c with ``gcc -static`` into the cache, or return the cached build."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ArtifactError("gcc not found: cannot build the static probe; run ansible/up.sh")
    source = probe_source()
    digest = hashlib.sha256()
    digest.update(source)
    digest.update(" ".join(PROBE_CFLAGS).encode())
    digest.update(_compiler_identity(gcc))
    key = digest.hexdigest()
    target_dir = cache or cache_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"probe-{key[:16]}"
    if target.exists():
        return ProbeBinary(target, key)
    source_path = target_dir / f"probe-{key[:16]}.c"
    source_path.write_bytes(source)
    partial = target.with_suffix(".partial")
    result = subprocess.run(
        [gcc, *PROBE_CFLAGS, str(source_path), "-o", str(partial)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ArtifactError(
            f"gcc -static failed building the probe (is libc6-dev installed?): "
            f"{result.stderr.strip()[-500:]}"
        )
    partial.replace(target)
    return ProbeBinary(target, key)
