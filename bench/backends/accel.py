"""The accelerator decision for VM backends: KVM only on the evidence of a real KVM boot.

``/dev/kvm`` existing is never taken as evidence (nested KVM may exist and still fail to
boot a guest). A VM backend boots one KVM guest with a short timeout and uses KVM only if
it reaches userspace; otherwise TCG. The decision is cached per backend, host boot,
VMM version and guest artefacts (``~/.cache/bench/accel-probe``), and recorded with its
reason on every sample.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.artifacts.probe import cache_dir


@dataclass(frozen=True)
class AccelDecision:
    """Which accelerator guests use, and the evidence for it."""

    accel: str  # "kvm" | "tcg"
    requested: str  # "auto" | "kvm" | "tcg"
    reason: str
    probe_boot_s: float | None = None
    decided_at_utc: str | None = None
    cache_key: str | None = None


def boot_id() -> str:
    """The id of the current host boot: a cached decision never outlives a reboot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def requested_decision(requested: str) -> AccelDecision | None:
    """The decision for an explicit request (no probe needed), or None for ``auto``."""
    if requested == "tcg":
        return AccelDecision("tcg", requested, "TCG requested by the scenario")
    if requested == "kvm":
        return AccelDecision("kvm", requested, "KVM requested by the scenario (not probed)")
    return None


def cached_probe(key_parts: Sequence[object], probe: Callable[[], AccelDecision]) -> AccelDecision:
    """Run ``probe`` once per key (host boot included) and remember its decision."""
    key_source = json.dumps([boot_id(), *key_parts], default=str)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    path = cache_dir() / "accel-probe" / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        cached = AccelDecision(**json.loads(path.read_text()))
        return AccelDecision(
            cached.accel,
            "auto",
            f"{cached.reason} (probe cached from {cached.decided_at_utc}, same host boot)",
            cached.probe_boot_s,
            cached.decided_at_utc,
            key,
        )
    decision = probe()
    decision = AccelDecision(
        decision.accel,
        "auto",
        decision.reason,
        decision.probe_boot_s,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        key,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(decision)))
    return decision
