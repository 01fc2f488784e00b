"""Per-backend, per-case summaries of a run's samples (what ``bench run`` prints at the end).

Host noise records (``metric="noise"``: the background load of each block) describe the
host, not a backend, and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.analysis.noise import without_noise


@dataclass(frozen=True)
class SummaryRow:
    """Median/min/max of one (metric, backend, case), measured samples only."""

    metric: str
    backend: str
    case: str
    unit: str
    n: int
    failed: int
    median: float | None
    minimum: float | None
    maximum: float | None
    accel: str = "n/a"
    view: str = ""


def summarize(frame: pd.DataFrame) -> list[SummaryRow]:
    """Summarise measured (non-warmup) samples; failures are counted, never averaged in."""
    frame = without_noise(frame)
    if frame.empty:
        return []
    measured = frame[~frame["warmup"].astype(bool)].copy()
    view = (
        measured["label.view"].astype(object).fillna("").astype(str)
        if "label.view" in measured
        else None
    )
    role = (
        measured["label.role"].astype(object).fillna("").astype(str)
        if "label.role" in measured
        else None
    )
    measured["_view"] = view if view is not None else ""
    if view is not None and role is not None:
        plain = role.isin(["", "total", "cgroup", "host"])
        measured["_view"] = [
            v if p else f"{v}:{r}" for v, r, p in zip(view, role, plain, strict=True)
        ]
    rows = []
    for (metric, backend, case, view_name), group in measured.groupby(
        ["metric", "backend", "case", "_view"], sort=True
    ):
        good = group[group["ok"].astype(bool)]["value"].dropna().astype(float)
        rows.append(
            SummaryRow(
                metric=str(metric),
                backend=str(backend),
                case=str(case),
                unit=str(group["unit"].iloc[0]),
                n=int(good.size),
                failed=int((~group["ok"].astype(bool)).sum()),
                median=float(good.median()) if good.size else None,
                minimum=float(good.min()) if good.size else None,
                maximum=float(good.max()) if good.size else None,
                accel=_accel(group),
                view=str(view_name),
            )
        )
    return rows


def _accel(group: pd.DataFrame) -> str:
    """The accelerator(s) the group's samples ran under (``n/a`` for containers, processes)."""
    if "label.accel" not in group:
        return "n/a"
    values = sorted({str(v) for v in group["label.accel"].dropna()})
    return ",".join(values) or "n/a"
