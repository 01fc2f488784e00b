"""Many comparisons at once: p-values adjusted so that one of many is not a false alarm.

A compare or a check tests every quantity of a scenario (each backend, case, view and
stage), and a site tests every trend series for a change point: at 5% each, twenty
unchanged quantities give a false "slower" two times in three. bench adjusts across a
family with statsmodels' ``multipletests``:

- **Holm** (step-down Bonferroni) across the rows of one compare or check: it controls
  the family-wise error rate (the chance of any false directional verdict) at 5%, under
  any dependence between rows, and never rejects less than Bonferroni;
- **Benjamini-Hochberg** across the series of a trend page: it controls the expected
  share of false change points among those shown (the false discovery rate), which is
  what a reader of many trend plots needs.

Raw and adjusted p-values are both kept and shown.
"""

from __future__ import annotations

from collections.abc import Sequence

HOLM = "holm"
BENJAMINI_HOCHBERG = "fdr_bh"
METHOD_NAMES = {HOLM: "Holm", BENJAMINI_HOCHBERG: "Benjamini-Hochberg"}
ALPHA = 0.05


def adjust(p_values: Sequence[float], method: str = HOLM) -> list[float]:
    """The p-values adjusted for the family they form (same order); [] for none."""
    if not p_values:
        return []
    if len(p_values) == 1:
        return [float(p_values[0])]
    from statsmodels.stats.multitest import multipletests

    _reject, corrected, _sidak, _bonferroni = multipletests(
        list(p_values), alpha=ALPHA, method=method
    )
    return [float(p) for p in corrected]


def adjust_family(p_values: Sequence[float | None], method: str = HOLM) -> list[float | None]:
    """Adjust the members of a family; a None p-value is not a member and stays None.

    The callers' rule for rows that decide nothing (no p-value, or run-to-run noise
    unknown): they pass None, so a correction over a compare or a check is one rule.
    """
    members = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    for index, p_adjusted in zip(
        members, adjust([float(p_values[i] or 0.0) for i in members], method), strict=True
    ):
        adjusted[index] = p_adjusted
    return adjusted
