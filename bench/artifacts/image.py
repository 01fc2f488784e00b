"""Build the probe container image FROM scratch, locally (no registry exists on lab hosts).

The image holds busybox (applets as symlinks, built in Python: busybox's own
``--install`` list includes busybox itself and would clobber the binary) and the static
probe. Its tag carries the content hash, so an unchanged image is never rebuilt, and the
build is never inside a timed interval.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.artifacts.probe import ProbeBinary
from bench.errors import ArtifactError

IMAGE_REPOSITORY = "bench-probe"
IMAGE_LABEL = "io.bench.managed"
DOCKERFILE = f"""FROM scratch
COPY rootfs/ /
LABEL {IMAGE_LABEL}="true"
ENTRYPOINT ["/probe"]
CMD ["ready"]
"""


@dataclass(frozen=True)
class ProbeImage:
    """A built image: its tag, engine id, and the hash of its build context."""

    tag: str
    image_id: str
    content_sha256: str


def busybox_path() -> Path:
    """Find a static busybox on the host (Debian's busybox-static)."""
    found = shutil.which("busybox")
    if found is None:
        raise ArtifactError("busybox not found: install busybox-static (ansible/up.sh does)")
    return Path(found)


def busybox_applets(busybox: Path) -> list[str]:
    """Return busybox's applet names, without busybox itself."""
    result = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    return sorted({a for a in result.stdout.split() if a and a != "busybox" and "/" not in a})


def build_context(probe: Path, busybox: Path, applets: list[str]) -> bytes:
    """Return the docker build context as an in-memory tar (Dockerfile + rootfs)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", DOCKERFILE.encode(), 0o644)
        _add_bytes(tar, "rootfs/bin/busybox", busybox.read_bytes(), 0o755)
        _add_bytes(tar, "rootfs/probe", probe.read_bytes(), 0o755)
        for applet in applets:
            link = tarfile.TarInfo(f"rootfs/bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        tmp = tarfile.TarInfo("rootfs/tmp")
        tmp.type = tarfile.DIRTYPE
        tmp.mode = 0o1777
        tar.addfile(tmp)
    return buffer.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def build_probe_image(client: Any, probe: ProbeBinary) -> ProbeImage:
    """Build (or reuse) the probe image through the Docker SDK's legacy builder."""
    busybox = busybox_path()
    context = build_context(probe.path, busybox, busybox_applets(busybox))
    content = hashlib.sha256(context).hexdigest()
    tag = f"{IMAGE_REPOSITORY}:{content[:16]}"
    try:
        existing = client.images.get(tag)
        return ProbeImage(tag, existing.id, content)
    except Exception as exc:  # docker.errors.ImageNotFound, without importing docker here
        if type(exc).__name__ != "ImageNotFound":
            raise
    try:
        image, _logs = client.images.build(
            fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True, forcerm=True
        )
    except Exception as exc:
        raise ArtifactError(f"building image {tag} failed: {exc}") from exc
    return ProbeImage(tag, image.id, content)
