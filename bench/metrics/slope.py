"""The cost of one more instance as a slope: MemAvailable against N, with its 95% CI.

One difference of MemAvailable at N=8 is one number with all the host's drift in it.
Reading MemAvailable after every instance started and fitting a line through the points
uses all of them, and the residuals say how well they agree. Several rounds are fitted
together with one intercept per round (drift between rounds shifts a line, it does not
tilt it). Pure arithmetic (no scipy on the run path): least squares, Student's t from a
table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Student's t, two-sided 95% (0.975 quantile), by degrees of freedom
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 22: 2.074, 24: 2.064, 26: 2.056, 28: 2.048,
    30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}  # fmt: skip


def t975(df: int) -> float:
    """Student's t 0.975 quantile for ``df`` degrees of freedom (conservative between rows)."""
    if df < 1:
        return math.inf
    if df in _T975:
        return _T975[df]
    smaller = [d for d in _T975 if d <= df]
    return _T975[max(smaller)] if df <= 120 else 1.960


@dataclass(frozen=True)
class SlopeFit:
    """A fitted slope with its standard error, 95% CI, points and degrees of freedom."""

    slope: float
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    points: int
    df: int

    def excludes_zero(self) -> bool:
        """True when the CI lies entirely on one side of 0 (the slope is distinguishable)."""
        return self.ci_low is not None and self.ci_high is not None and (
            self.ci_low > 0 or self.ci_high < 0
        )


def fit_slope(groups: Sequence[Sequence[tuple[float, float]]]) -> SlopeFit | None:
    """Least-squares slope of y on x, one intercept per group; None below 3 points."""
    centred: list[tuple[float, float]] = []
    for points in groups:
        if not points:
            continue
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        centred.extend((x - mean_x, y - mean_y) for x, y in points)
    used_groups = sum(1 for g in groups if g)
    sxx = sum(x * x for x, _ in centred)
    if len(centred) < 3 or sxx == 0:
        return None
    slope = sum(x * y for x, y in centred) / sxx
    df = len(centred) - used_groups - 1
    if df < 1:
        return SlopeFit(slope, None, None, None, len(centred), df)
    residual = sum((y - slope * x) ** 2 for x, y in centred)
    stderr = math.sqrt(residual / df / sxx)
    half = t975(df) * stderr
    return SlopeFit(slope, stderr, slope - half, slope + half, len(centred), df)


def difference(a: SlopeFit, b: SlopeFit) -> tuple[float, float | None, float | None]:
    """A - b with a 95% CI (Welch-style: the two fits' standard errors combined)."""
    delta = a.slope - b.slope
    if a.stderr is None or b.stderr is None:
        return delta, None, None
    stderr = math.sqrt(a.stderr**2 + b.stderr**2)
    df = min(a.df, b.df)
    half = t975(df) * stderr
    return delta, delta - half, delta + half
