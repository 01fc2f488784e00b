"""A memory ledger per instance: what it costs the host, part by part, each from a source.

The three memory views disagree because each counts something else; the ledger makes the
difference explicit. For one instance:

- ``pss_anon:<role>``, ``pss_file:<role>``, ``pss_shmem:<role>``: the PSS of every host
  process that exists because of it, by role, split by kind (/proc/PID/smaps_rollup);
- ``page_tables``: those processes' page tables (VmPTE of /proc/PID/status);
- ``unmapped_page_cache``: page cache charged to the instance's cgroup that no process
  maps (memory.stat cache - mapped_file on v1, file - file_mapped on v2): not in PSS;
- ``kernel_slab``: kernel objects charged to the cgroup (v2 memory.stat ``slab``); cgroup
  v1 has no per-cgroup figure, so there it is not attributable and says so;
- ``total``: the sum of the parts above;
- for a guest (``capabilities.guest_kernel``), inside the VMM's anonymous PSS:
  ``guest_ram_touched`` (the RSS of the guest-RAM mapping: what the guest touched) of
  ``guest_ram_given``, and ``jit_code`` (anonymous executable memory: TCG's code cache);
- ``ksm_merged``: pages of these processes that KSM merged (smaps_rollup ``KSM``).

The MemAvailable drop per instance minus the ledger's total is the *unexplained
remainder* (kernel memory not charged to any cgroup, per-instance engine state in
dockerd/containerd/libvirtd, page cache of files the engines read), stated beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.backends.base import Backend, Instance
from bench.cgroups.layout import CgroupLayout
from bench.cgroups.readers import cgroup_dir_for_pid, parse_flat_keyed
from bench.metrics.procmem import guest_ram_and_jit, page_table_bytes, smaps_mappings, smaps_rollup

MIB = 1024 * 1024
SLAB_NOT_ATTRIBUTABLE_V1 = (
    "cgroup v1 keeps no per-cgroup kernel slab figure (memory.kmem accounting is off): "
    "not attributable on this host"
)


@dataclass
class Ledger:
    """One instance's parts in bytes (None: not measurable, with the reason in ``notes``)."""

    parts: dict[str, int | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    # parts this host cannot attribute at all (not a failure: "not applicable", why)
    not_applicable: set[str] = field(default_factory=set)
    complete: bool = True

    def total_bytes(self) -> int | None:
        """The sum of the additive parts (PSS by kind, page tables, cache, slab)."""
        if not self.complete:
            return None
        additive = [
            v
            for k, v in self.parts.items()
            if v is not None
            and (k.startswith("pss_") or k in {"page_tables", "unmapped_page_cache", "kernel_slab"})
        ]
        return sum(additive)


def cgroup_memory_parts(stat: dict[str, int], version: int) -> dict[str, int | None]:
    """Unmapped page cache and kernel slab from a memory.stat (pure)."""
    if version == 1:
        cache = stat.get("total_cache", stat.get("cache"))
        mapped = stat.get("total_mapped_file", stat.get("mapped_file"))
        return {
            "unmapped_page_cache": max(0, cache - mapped)
            if cache is not None and mapped is not None
            else None,
            "kernel_slab": None,
        }
    file_bytes = stat.get("file")
    file_mapped = stat.get("file_mapped")
    return {
        "unmapped_page_cache": max(0, file_bytes - file_mapped)
        if file_bytes is not None and file_mapped is not None
        else None,
        "kernel_slab": stat.get("slab"),
    }


def instance_ledger(backend: Backend, instance: Instance, layout: CgroupLayout) -> Ledger:
    """Read one live instance's ledger (see the module docstring)."""
    ledger = Ledger()
    roles = backend.host_processes(instance)
    page_tables = 0
    ksm = 0
    for role, pids in sorted(roles.items()):
        sums = {"pss_anon": 0, "pss_file": 0, "pss_shmem": 0}
        for pid in pids:
            rollup = smaps_rollup(pid)
            if rollup is None:
                ledger.complete = False
                continue
            sums["pss_anon"] += rollup.get("Pss_Anon", 0)
            sums["pss_file"] += rollup.get("Pss_File", 0)
            sums["pss_shmem"] += rollup.get("Pss_Shmem", 0)
            ksm += rollup.get("KSM", 0)
            page_tables += page_table_bytes(pid) or 0
        for kind, value in sums.items():
            ledger.parts[f"{kind}:{role}"] = value
    ledger.parts["page_tables"] = page_tables
    ledger.parts["ksm_merged"] = ksm
    main = backend.main_pid(instance)
    directory = cgroup_dir_for_pid(main, "memory", layout) if main else None
    stat: dict[str, int] = {}
    if directory is not None:
        try:
            stat = parse_flat_keyed(Path(directory, "memory.stat").read_text())
        except OSError:
            stat = {}
    parts = cgroup_memory_parts(stat, layout.version)
    ledger.parts.update(parts)
    if parts["kernel_slab"] is None:
        ledger.notes["kernel_slab"] = (
            SLAB_NOT_ATTRIBUTABLE_V1 if layout.version == 1 else "memory.stat has no slab"
        )
        ledger.not_applicable.add("kernel_slab")
    if parts["unmapped_page_cache"] is None:
        ledger.notes["unmapped_page_cache"] = "the instance's memory.stat was unreadable"
    if backend.capabilities.guest_kernel and main is not None:
        given = instance.spec.guest_memory_mib * MIB
        mappings = smaps_mappings(main)
        found = guest_ram_and_jit(mappings, given) if mappings is not None else {}
        ledger.parts["guest_ram_given"] = given
        ledger.parts["guest_ram_touched"] = found.get("guest_ram_rss")
        ledger.parts["jit_code"] = found.get("jit_pss")
        if found.get("guest_ram_rss") is None:
            ledger.notes["guest_ram_touched"] = "no anonymous mapping of the guest's RAM size"
            ledger.not_applicable.add("guest_ram_touched")
    total = ledger.total_bytes()
    ledger.parts["total"] = total
    return ledger
