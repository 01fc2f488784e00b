"""Static helper binaries (the probe, the cgroup exec helper): built once, found by source.

A static binary is looked up by what it is built from (its C source and flags) *before*
any compiler is looked for, so a host that never had gcc can use a binary built elsewhere
and shipped into its cache (a lab host gets the controller's build this way). The binary
itself is stored under its own content hash, and an index file maps the source key to it:

    <cache>/<name>-src-<source key[:16]>.json   {"binary": "<name>-<sha256[:16]>", ...}
    <cache>/<name>-<sha256[:16]>                 the static binary

The compiler's identity is recorded in the index, not keyed: an upgraded gcc does not
rebuild a binary whose source did not change, so every host of a fleet runs the very same
bytes (and says so: the artefact id recorded with a run is the binary's own sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.artifacts.cache_files import sha256_file, write_atomic
from bench.errors import ArtifactError

INDEX_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StaticBinary:
    """A built static binary: where it is, its own sha256, and the key of its source."""

    path: Path
    sha256: str
    source_key: str


def source_key(source: bytes, flags: tuple[str, ...]) -> str:
    """The key of what a binary is built from: its source and its compiler flags."""
    digest = hashlib.sha256()
    digest.update(source)
    digest.update(b"\0")
    digest.update(" ".join(flags).encode())
    return digest.hexdigest()


def index_path(cache: Path, name: str, key: str) -> Path:
    """The index file naming the binary built from source ``key``."""
    return cache / f"{name}-src-{key[:16]}.json"


def lookup(cache: Path, name: str, key: str) -> StaticBinary | None:
    """The cached binary for this source, if its index and its bytes agree; else None."""
    index = index_path(cache, name, key)
    try:
        record = json.loads(index.read_text())
        binary = cache / str(record["binary"])
        expected = str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if Path(str(record["binary"])).name != str(record["binary"]):
        return None  # an index may name a file in the cache only
    try:
        actual = sha256_file(binary)
    except OSError:
        return None
    if actual != expected:
        return None
    return StaticBinary(binary, actual, key)


def build(name: str, source: bytes, flags: tuple[str, ...], cache: Path, fix: str) -> StaticBinary:
    """Return the cached binary for ``source`` or compile it with ``gcc -static``.

    ``fix`` is what the error says to do when there is neither a cached build nor gcc.
    """
    key = source_key(source, flags)
    found = lookup(cache, name, key)
    if found is not None:
        return found
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ArtifactError(f"gcc not found and no {name} built from this source in {cache}: {fix}")
    cache.mkdir(parents=True, exist_ok=True)
    source_path = cache / f"{name}-src-{key[:16]}.c"
    source_path.write_bytes(source)
    partial = cache / f"{name}-src-{key[:16]}.partial.{os.getpid()}"
    result = subprocess.run(
        [gcc, *flags, str(source_path), "-o", str(partial)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ArtifactError(
            f"gcc -static failed building {name} (is libc6-dev installed?): "
            f"{result.stderr.strip()[-500:]}"
        )
    sha256 = sha256_file(partial)
    binary = cache / f"{name}-{sha256[:16]}"
    partial.replace(binary)
    record: dict[str, Any] = {
        "schema_version": INDEX_SCHEMA_VERSION,
        "name": name,
        "binary": binary.name,
        "sha256": sha256,
        "source_sha256": hashlib.sha256(source).hexdigest(),
        "flags": list(flags),
        "compiler": _compiler_identity(gcc),
        "built_on": socket.gethostname(),
    }
    write_atomic(index_path(cache, name, key), (json.dumps(record, indent=2) + "\n").encode())
    return StaticBinary(binary, sha256, key)


def export(binary: StaticBinary, cache: Path, name: str, destination: Path) -> list[Path]:
    """Copy a built binary and its index into ``destination`` (a cache to ship); return them."""
    destination.mkdir(parents=True, exist_ok=True)
    index = index_path(cache, name, binary.source_key)
    copied = []
    for path in (binary.path, index):
        target = destination / path.name
        shutil.copy2(path, target)
        copied.append(target)
    return copied


def _compiler_identity(gcc: str) -> str:
    result = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else "unknown"
