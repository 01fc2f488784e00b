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
