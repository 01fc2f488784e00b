"""The host's background load during each block, and comparisons whose sides differ in it.

While it measures, the runner records one ``noise`` sample per block and per quantity
(``backend="host"``, ``case="*"``, ``labels.view`` the quantity, ``labels.window_s`` the
block's wall time): the 1-minute load average, all non-idle CPU (``host_busy_cores``),
CPU used by processes that are neither bench's nor its engines' (``foreign_cpu_cores``),
steal time, and the PSI "some" fractions of CPU, memory and I/O where the kernel has
them. These records describe the host, not a backend: summaries, comparisons,
baselines and calibrations leave them out (``without_noise``).

Two uses:

- ``busy_block_warnings``: a block during which something else kept the host busy
  (foreign CPU, steal or CPU pressure over ``BUSY_THRESHOLDS``) is worth a warning, with
  the figure: that is what a user can act on.
- ``compare_load``: a comparison whose sides differ in background load beyond
  ``DIFFERENCE_THRESHOLDS`` (the difference of the sides' block means) is flagged with
  both sides' figures, not silently trusted. ``host_busy_cores`` and the load average
  include bench's own work, which differs whenever the measured thing does, so they
  are shown but never flag.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from bench.analysis.columns import equals

NOISE_METRIC = "noise"
NOISE_VIEWS = (
    "foreign_cpu_cores",
    "steal_fraction",
    "psi_cpu_some",
    "psi_memory_some",
    "psi_io_some",
    "host_busy_cores",
    "loadavg_1m",
)
# A side-to-side difference of block means at or above these flags a comparison.
DIFFERENCE_THRESHOLDS = {
    "foreign_cpu_cores": 0.25,
    "steal_fraction": 0.05,
    "psi_cpu_some": 0.15,
    "psi_memory_some": 0.10,
    "psi_io_some": 0.15,
}
# One block at or above these is a warning about that block.
BUSY_THRESHOLDS = {
    "foreign_cpu_cores": 0.5,
    "steal_fraction": 0.05,
    "psi_memory_some": 0.10,
}

Block = tuple[str, int]


def is_noise(frame: pd.DataFrame) -> pd.Series:
    """Mask of host noise records in a samples frame."""
    if frame.empty or "metric" not in frame.columns:
        return pd.Series(False, index=frame.index, dtype=bool)
    return pd.Series(equals(frame["metric"], NOISE_METRIC), index=frame.index)


def without_noise(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without host noise records (what every summary and comparison reads)."""
    mask = is_noise(frame)
    return frame[~mask.to_numpy()] if mask.any() else frame


def noise_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per block (index ``run_id``, ``block``), one column per noise quantity.

    Several records of one quantity in a block are averaged; an empty frame when the
    runs recorded no noise (runs made before bench watched the host).
    """
    mask = is_noise(frame)
    if not mask.any() or "label.view" not in frame.columns:
        return pd.DataFrame()
    data = frame[mask.to_numpy()]
    data = data[data["ok"].to_numpy(dtype=bool)] if "ok" in data.columns else data
    block = data["block"] if "block" in data.columns else pd.Series(0, index=data.index)
    tidy = pd.DataFrame(
        {
            "run_id": data["run_id"].astype(str).to_numpy(),
            "block": block.astype(int).to_numpy(),
            "view": data["label.view"].astype(str).to_numpy(),
            "value": pd.to_numeric(data["value"], errors="coerce").to_numpy(),
        }
    )
    return tidy.pivot_table(index=["run_id", "block"], columns="view", values="value")


def _describe(view: str, value: float) -> str:
    if view.endswith("_cores"):
        return f"{value:.2f} cores"
    if view.endswith("_fraction") or view.startswith("psi_"):
        return f"{value:.0%}"
    return f"{value:.2f}"


_NAMES = {
    "foreign_cpu_cores": "CPU of other processes",
    "steal_fraction": "steal time",
    "psi_cpu_some": "CPU pressure (PSI some)",
    "psi_memory_some": "memory pressure (PSI some)",
    "psi_io_some": "I/O pressure (PSI some)",
    "host_busy_cores": "host busy CPU",
    "loadavg_1m": "load average",
}


@dataclass(frozen=True)
class LoadDifference:
    """One noise quantity on both sides of a comparison (means over each side's blocks)."""

    view: str
    baseline: float
    contender: float
    flagged: bool

    def text(self) -> str:
        """``CPU of other processes 0.02 vs 1.85 cores``."""
        base, cont = _describe(self.view, self.baseline), _describe(self.view, self.contender)
        unit = ""
        if self.view.endswith("_cores"):
            base, unit = base.removesuffix(" cores"), " cores"
            cont = cont.removesuffix(" cores")
        return f"{_NAMES.get(self.view, self.view)} {base} vs {cont}{unit}"


@dataclass(frozen=True)
class LoadComparison:
    """The background load of two sides, and whether it differs enough to distrust them."""

    differences: tuple[LoadDifference, ...]
    blocks_baseline: int
    blocks_contender: int

    @property
    def flagged(self) -> bool:
        """True when any quantity differs beyond its threshold."""
        return any(d.flagged for d in self.differences)

    def summary(self) -> str:
        """The flagged figures (or every figure, when none is flagged)."""
        shown = [d for d in self.differences if d.flagged] or list(self.differences)
        return "; ".join(d.text() for d in shown)


def compare_load(
    table: pd.DataFrame, baseline: Iterable[Block], contender: Iterable[Block]
) -> LoadComparison | None:
    """The background load of two sets of blocks; None when either side recorded none."""
    if table.empty:
        return None
    base = table[table.index.isin(list(baseline))]
    cont = table[table.index.isin(list(contender))]
    if base.empty or cont.empty:
        return None
    differences = []
    for view in NOISE_VIEWS:
        if view not in table.columns:
            continue
        base_mean, cont_mean = base[view].mean(), cont[view].mean()
        if pd.isna(base_mean) or pd.isna(cont_mean):
            continue
        threshold = DIFFERENCE_THRESHOLDS.get(view)
        flagged = threshold is not None and bool(abs(cont_mean - base_mean) >= threshold)
        differences.append(LoadDifference(view, float(base_mean), float(cont_mean), flagged))
    if not differences:
        return None
    return LoadComparison(tuple(differences), len(base), len(cont))


def busy_block_warnings(table: pd.DataFrame, *, limit: int = 3) -> list[str]:
    """Warnings about blocks that ran while something else kept the host busy.

    At most ``limit`` blocks are named (the busiest first), plus how many more there were.
    """
    if table.empty:
        return []
    found: list[tuple[float, str]] = []
    for (run_id, block), row in zip(table.index.tolist(), table.to_dict("records"), strict=True):
        reasons = []
        severity = 0.0
        for view, threshold in BUSY_THRESHOLDS.items():
            value = row.get(view)
            if value is not None and pd.notna(value) and value >= threshold:
                reasons.append(f"{_NAMES[view]} {_describe(view, float(value))}")
                severity = max(severity, float(value) / threshold)
        if reasons:
            found.append(
                (
                    severity,
                    f"run {run_id} block {block}: the host was busy with other work "
                    f"({', '.join(reasons)}); its figures may be slowed: rerun on a quiet host",
                )
            )
    found.sort(key=lambda item: -item[0])
    messages = [text for _, text in found[:limit]]
    if len(found) > limit:
        messages.append(f"{len(found) - limit} more busy block(s)")
    return messages
