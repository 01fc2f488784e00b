"""What the controller builds once and ships to every host of a fleet.

- **The wheelhouse**: bench's own wheel and one wheel per runtime dependency (the ``vm``
  extra included), pinned to the versions of the controller's environment, so every
  host runs the same code and installs it with ``pip install --no-index``: no host
  ever needs PyPI. It ships as one tar file named by its content (one copy, one
  checksum, however many wheels). The dependency wheels are cached by the pinned set;
  bench's wheel by the hash of its source tree, so an unchanged checkout ships the very
  same bytes (a second install changes nothing).
- **The artefacts**: the static probe and the cgroup exec helper with their index files
  (a host finds them by source before it looks for gcc), and the probe image as a
  ``docker save`` archive, loaded where the engine does not have that tag yet.

Everything lands in one bundle directory with a ``bundle.json`` the playbook reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.artifacts import static_build
from bench.artifacts.cache_files import sha256_file
from bench.artifacts.cgexec import CGEXEC_NAME, build_cgexec
from bench.artifacts.probe import PROBE_NAME, build_probe_static, cache_dir
from bench.errors import BenchError

BUNDLE_SCHEMA_VERSION = 1
HOST_EXTRAS = ("vm",)
# Source files of bench's own wheel: their hash names the wheel.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "bench")


class ShippingError(BenchError):
    """The wheelhouse or an artefact could not be built on the controller."""

    exit_code = 3


@dataclass(frozen=True)
class Bundle:
    """A built bundle: its directory and its description (``bundle.json``)."""

    directory: Path
    description: dict[str, Any]


def dependency_pins(root: str = "bench", extras: tuple[str, ...] = HOST_EXTRAS) -> list[str]:
    """``name==version`` for every runtime dependency of bench (and ``extras``), recursively.

    Read from the installed distributions of the running environment, markers evaluated
    for this interpreter: the lab hosts run the same Python (Debian 12's 3.11).
    """
    environment: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    pins: dict[str, str] = {}
    pending: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while pending:
        name, wanted = pending.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ShippingError(
                f"{name} is not installed in this environment: run ansible/up.sh"
            ) from None
        if canonicalize_name(name) != canonicalize_name(root):
            pins[canonicalize_name(name)] = distribution.version
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({**environment, "extra": extra})
                for extra in ("", *wanted)
            ):
                continue
            pending.append((requirement.name, tuple(sorted(requirement.extras))))
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def tree_sha256(repo: Path, entries: tuple[str, ...] = WHEEL_SOURCES) -> str:
    """The sha256 of bench's source files (path and content), caches left out."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for entry in entries:
        path = repo / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            )
    for path in sorted(files):
        digest.update(str(path.relative_to(repo)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def pip_pin() -> str:
    """The pip of this environment, shipped as a wheel: hosts run pip from it.

    A virtualenv made ``--without-pip`` is ready at once; ``ensurepip`` would install
    pip and setuptools first, ~30 s on an emulated host.
    """
    return f"pip=={metadata.version('pip')}"


def build_dependency_wheels(pins: list[str], cache: Path) -> Path:
    """One wheel per pinned dependency (and pip's), cached by the pinned set."""
    pins_and_pip = [*pins, pip_pin()]
    key = hashlib.sha256(
        json.dumps([sys.implementation.cache_tag, sys.platform, *pins_and_pip]).encode()
    ).hexdigest()
    directory = cache / f"deps-{key[:16]}"
    if (directory / ".complete").is_file():
        return directory
    partial = cache / f".deps-{key[:16]}.{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # pip wheel takes a wheel from the configured index as it is and builds the rest
    # (libvirt-python has no wheels) against this host's headers.
    result = _pip("wheel", "--no-deps", "--wheel-dir", str(partial), *pins_and_pip)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ShippingError(
            f"pip wheel failed for the dependencies: {result.stderr.strip()[-800:]}"
        )
    (partial / "requirements.txt").write_text("\n".join(pins) + "\n")
    (partial / ".complete").write_text("")
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory


def build_bench_wheel(repo: Path, cache: Path) -> Path:
    """Bench's own wheel, cached by its source tree's hash; return the wheel file."""
    key = tree_sha256(repo)
    directory = cache / f"bench-{key[:16]}"
    found = sorted(directory.glob("bench-*.whl")) if directory.is_dir() else []
    if found:
        return found[0]
    partial = cache / f".bench-{key[:16]}.{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # an isolated build: the build backend pyproject.toml asks for, not this venv's
    result = _pip("wheel", "--no-deps", "--wheel-dir", str(partial), str(repo))
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ShippingError(f"building bench's wheel failed: {result.stderr.strip()[-800:]}")
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return sorted(directory.glob("bench-*.whl"))[0]


def _deterministic_tar(files: list[Path], target: Path) -> None:
    """A tar of ``files`` (flat) whose bytes depend only on their names and contents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files, key=lambda p: p.name):
            info = tarfile.TarInfo(path.name)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    target.write_bytes(buffer.getvalue())


def repo_root() -> Path:
    """The checkout bench runs from (its wheel is built from here)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise ShippingError(f"{root}: not a checkout of bench (no pyproject.toml)")
    return root


def build_bundle(output: Path, cache: Path | None = None, with_image: bool = True) -> Bundle:
    """Build (or reuse) everything hosts get, into ``output``; return its description."""
    base = cache or cache_dir()
    wheel_cache = base / "wheelhouse"
    wheel_cache.mkdir(parents=True, exist_ok=True)
    repo = repo_root()
    pins = dependency_pins()
    deps = build_dependency_wheels(pins, wheel_cache)
    bench_wheel = build_bench_wheel(repo, wheel_cache)
    wheels = [*sorted(deps.glob("*.whl")), bench_wheel]
    output.mkdir(parents=True, exist_ok=True)
    staging = output / f".wheelhouse.{os.getpid()}.tar"
    _deterministic_tar([*wheels, deps / "requirements.txt"], staging)
    wheelhouse_sha = sha256_file(staging)
    wheelhouse = output / f"wheelhouse-{wheelhouse_sha[:16]}.tar"
    for old in output.glob("wheelhouse-*.tar"):
        if old != wheelhouse:
            old.unlink()
    staging.replace(wheelhouse)

    shutil.rmtree(output / "artefacts", ignore_errors=True)  # an older bundle's layout
    probe = build_probe_static(base)
    cgexec = build_cgexec(base)
    image = _save_probe_image(output) if with_image else None
    members = [probe.path, _index(base, PROBE_NAME, probe), cgexec.path]
    members.append(_index(base, CGEXEC_NAME, cgexec))
    if image is not None:
        members.append(output / image["archive"])
    artefacts = _artefacts_tar(members, output)
    description: dict[str, Any] = {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "wheelhouse": wheelhouse.name,
        "wheelhouse_sha256": wheelhouse_sha,
        "bench_wheel": bench_wheel.name,
        "bench_wheel_sha256": sha256_file(bench_wheel),
        "requirements": pins,
        "pip_wheel": next(p.name for p in wheels if p.name.startswith("pip-")),
        "extras": list(HOST_EXTRAS),
        "python": sys.implementation.cache_tag,
        "artefacts": artefacts.name,
        "artefacts_marker": artefacts.stem.replace("artefacts-", "shipped-"),
        "probe": probe.path.name,
        "probe_sha256": probe.sha256,
        "cgexec": cgexec.path.name,
        "cgexec_sha256": cgexec.sha256,
        "image": image,
    }
    (output / "bundle.json").write_text(json.dumps(description, indent=2) + "\n")
    return Bundle(output, description)


def _index(cache: Path, name: str, binary: static_build.StaticBinary) -> Path:
    return static_build.index_path(cache, name, binary.source_key)


def _artefacts_tar(members: list[Path], output: Path) -> Path:
    """One tar of the artefacts a host's bench cache gets, named by their content.

    Its ``shipped-<key>`` member is the marker the install's extraction is keyed on;
    image archives go under ``images/``.
    """
    digest = hashlib.sha256()
    for path in sorted(members, key=lambda p: p.name):
        digest.update(f"{path.name}\0{sha256_file(path)}\0".encode())
    key = digest.hexdigest()[:16]
    target = output / f"artefacts-{key}.tar"
    for old in output.glob("artefacts-*.tar"):
        if old != target:
            old.unlink()
    if target.is_file():
        return target
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(members, key=lambda p: p.name):
            info = tarfile.TarInfo(
                f"images/{path.name}" if path.name.startswith("image-") else path.name
            )
            info.size = path.stat().st_size
            info.mode = 0o755 if os.access(path, os.X_OK) and path.suffix != ".json" else 0o644
            info.mtime = 0
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
        marker = tarfile.TarInfo(f"shipped-{key}")
        marker.mode = 0o644
        tar.addfile(marker, io.BytesIO(b""))
    partial = output / f".artefacts.{os.getpid()}.tar"
    partial.write_bytes(buffer.getvalue())
    partial.replace(target)
    return target


def _save_probe_image(output: Path) -> dict[str, str] | None:
    """Save the probe image (built here if needed) as a tar; None without an engine."""
    from bench.backends import get_backend

    backend: Any = get_backend("docker")
    try:
        backend.check_available()
        backend.prepare([])
        tag = str(backend.image.tag)
        image_id = str(backend.image.image_id)
        safe = re.sub(r"[^A-Za-z0-9._-]", "-", tag)
        target = output / f"image-{safe}.tar"
        for old in output.glob("image-*.tar"):
            if old != target:
                old.unlink()
        if not target.is_file():
            partial = output / f".image.{os.getpid()}.tar"
            try:
                with open(partial, "wb") as handle:
                    for chunk in backend.client.images.get(tag).save(named=True):
                        handle.write(chunk)
            except Exception as exc:
                partial.unlink(missing_ok=True)
                raise ShippingError(f"saving image {tag} failed: {exc}") from exc
            partial.replace(target)
    except ShippingError:
        raise
    except BenchError:
        return None
    finally:
        backend.close()
    return {"tag": tag, "id": image_id, "archive": target.name}
