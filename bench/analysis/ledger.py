"""The memory ledger table: per backend, what an idle instance costs, part by part.

One row per backend (and KSM state): the median over instances of each ledger part, the
parts' total, and beside it the two other views (MemAvailable drop per instance, and its
slope against N with a 95% CI; the cgroup's usage), with the unexplained remainder
(MemAvailable drop - ledger total). Built from recorded samples only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

PART_GROUPS = {
    "pss_anon": "PSS anon",
    "pss_file": "PSS file",
    "pss_shmem": "PSS shmem",
    "page_tables": "page tables",
    "unmapped_page_cache": "unmapped cache",
    "kernel_slab": "kernel slab",
}


@dataclass
class LedgerRow:
    """One backend's ledger, MiB per instance (None: not measured or not applicable)."""

    backend: str
    ksm: str
    instances: int
    parts: dict[str, float | None] = field(default_factory=dict)
    total: float | None = None
    guest_ram_touched: float | None = None
    guest_ram_given: float | None = None
    jit_code: float | None = None
    ksm_merged: float | None = None
    cgroup_usage: float | None = None
    memavailable_drop: float | None = None
    slope: float | None = None
    slope_ci: tuple[float | None, float | None] = (None, None)
    slope_finding: str = ""
    unexplained: float | None = None
    notes: dict[str, str] = field(default_factory=dict)


def _median(values: pd.Series) -> float | None:
    clean = pd.to_numeric(values, errors="coerce").dropna()
    return float(clean.median()) if len(clean) else None


def ledger_rows(frame: pd.DataFrame) -> list[LedgerRow]:
    """The ledger rows of every backend (and KSM state) in the frame's memory records."""
    if frame.empty or "label.view" not in frame:
        return []
    memory = frame[(frame["metric"] == "memory") & ~frame["warmup"].astype(bool)]
    if memory.empty:
        return []
    ksm = memory["label.ksm"].astype(object).fillna("").astype(str) if "label.ksm" in memory else ""
    memory = memory.assign(_ksm=ksm)
    rows: list[LedgerRow] = []
    for (backend, ksm_state), group in memory.groupby(["backend", "_ksm"], sort=False):
        ledger = group[group["label.view"] == "ledger"]
        if ledger.empty:
            continue
        row = LedgerRow(
            backend=str(backend), ksm=str(ksm_state), instances=ledger["instance"].nunique()
        )
        roles = ledger["label.role"].astype(str)
        per_instance: dict[str, Any] = {}
        for prefix, name in PART_GROUPS.items():
            selected = ledger[roles.str.startswith(prefix)]
            if selected.empty:
                row.parts[name] = None
                continue
            values = pd.to_numeric(selected["value"], errors="coerce")
            if values.isna().all():
                row.parts[name] = None
                if "label.reason" in selected:
                    reasons = selected["label.reason"].dropna()
                    if len(reasons):
                        row.notes[name] = str(reasons.iloc[0])
                continue
            per_instance[name] = values.groupby(selected["instance"]).sum()
            row.parts[name] = float(per_instance[name].median())
        row.total = _median(ledger[roles == "total"]["value"])
        row.guest_ram_touched = _median(ledger[roles == "guest_ram_touched"]["value"])
        row.guest_ram_given = _median(ledger[roles == "guest_ram_given"]["value"])
        row.jit_code = _median(ledger[roles == "jit_code"]["value"])
        row.ksm_merged = _median(ledger[roles == "ksm_merged"]["value"])
        row.cgroup_usage = _median(group[group["label.view"] == "cgroup_usage"]["value"])
        row.memavailable_drop = _median(group[group["label.view"] == "memavailable_drop"]["value"])
        pooled = group[group["label.view"] == "memavailable_slope_pooled"]
        if not pooled.empty:
            last = pooled.iloc[-1]
            row.slope = float(last["value"])
            row.slope_ci = (last.get("label.ci_low_mib"), last.get("label.ci_high_mib"))
            finding = last.get("label.finding")
            row.slope_finding = finding if isinstance(finding, str) else ""
        if row.memavailable_drop is not None and row.total is not None:
            row.unexplained = row.memavailable_drop - row.total
        rows.append(row)
    return rows
