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
        return (
            self.ci_low is not None
            and self.ci_high is not None
            and (self.ci_low > 0 or self.ci_high < 0)
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


def fit_slope_with_drift(
    groups: Sequence[Sequence[tuple[float, float, float]]],
) -> SlopeFit | None:
    """Slope of y on x with the host's drift over time t taken out: y = a_g + b*x + c*t.

    Points are (x, t, y). One intercept per group; one drift rate c shared by the groups.
    When x goes up and then down again while t only goes up (instances started, then
    removed one by one), x and t are no longer confounded and b is the cost of one
    instance, whatever the host's memory did meanwhile. None below 5 points or when x
    and t are collinear.
    """
    rows: list[tuple[float, float, float]] = []
    for points in groups:
        if not points:
            continue
        mx = sum(p[0] for p in points) / len(points)
        mt = sum(p[1] for p in points) / len(points)
        my = sum(p[2] for p in points) / len(points)
        rows.extend((x - mx, t - mt, y - my) for x, t, y in points)
    used_groups = sum(1 for g in groups if g)
    if len(rows) < 5:
        return None
    sxx = sum(x * x for x, _, _ in rows)
    stt = sum(t * t for _, t, _ in rows)
    sxt = sum(x * t for x, t, _ in rows)
    sxy = sum(x * y for x, _, y in rows)
    sty = sum(t * y for _, t, y in rows)
    det = sxx * stt - sxt * sxt
    if det <= 1e-12 * max(1.0, sxx * stt):
        return None
    slope = (stt * sxy - sxt * sty) / det
    drift = (sxx * sty - sxt * sxy) / det
    df = len(rows) - used_groups - 2
    if df < 1:
        return SlopeFit(slope, None, None, None, len(rows), df)
    residual = sum((y - slope * x - drift * t) ** 2 for x, t, y in rows)
    stderr = math.sqrt(residual / df * stt / det)
    half = t975(df) * stderr
    return SlopeFit(slope, stderr, slope - half, slope + half, len(rows), df)


def difference(a: SlopeFit, b: SlopeFit) -> tuple[float, float | None, float | None]:
    """A - b with a 95% CI (Welch-style: the two fits' standard errors combined)."""
    delta = a.slope - b.slope
    if a.stderr is None or b.stderr is None:
        return delta, None, None
    stderr = math.sqrt(a.stderr**2 + b.stderr**2)
    df = min(a.df, b.df)
    half = t975(df) * stderr
    return delta, delta - half, delta + half


def across_groups(fits: Sequence[SlopeFit]) -> SlopeFit | None:
    """The mean of per-group slopes, with a t interval over the groups.

    The groups are the independent repeats: MemAvailable's noise within one group is not
    independent from point to point, so a within-group interval is too narrow. None
    without a fit; no interval from a single group.
    """
    slopes = [fit.slope for fit in fits]
    if not slopes:
        return None
    mean = sum(slopes) / len(slopes)
    points = sum(fit.points for fit in fits)
    if len(slopes) < 2:
        return SlopeFit(mean, None, None, None, points, 0)
    variance = sum((x - mean) ** 2 for x in slopes) / (len(slopes) - 1)
    stderr = math.sqrt(variance / len(slopes))
    df = len(slopes) - 1
    half = t975(df) * stderr
    return SlopeFit(mean, stderr, mean - half, mean + half, points, df)


def fit_group(points: Sequence[tuple[float, float, float]], drift_removed: bool) -> SlopeFit | None:
    """One group's slope from its (N, seconds, MemAvailable) points.

    With ``drift_removed`` (N went up, then down, while time went on) the host's drift
    over time is fitted apart; otherwise (KSM "both": the instances were read twice,
    then removed together, no ramp down) a plain fit of MemAvailable against N.
    """
    if drift_removed:
        return fit_slope_with_drift([list(points)])
    return fit_slope([[(n, y) for n, _t, y in points]])
