"""Change points in a series of run figures: E-Divisive with a permutation test.

The method is E-Divisive (D. S. Matteson and N. A. James, *A Nonparametric Approach
for Multiple Change Point Analysis of Multivariate Data*, JASA 109(505), 2014), the
one MongoDB runs over its performance-test history (D. Daly et al., *The Use of Change
Point Detection to Identify Software Performance Regressions in a Continuous
Integration System*, ICPE 2020) and that Hunter / Apache Otava build on. It suits a
benchmark history: it assumes no distribution (startup times are skewed, memory
figures are not normal), finds several changes by bisection, and judges each candidate
with a permutation test instead of a threshold tuned by hand.

For a series x_1..x_n and a split at t (left L = x_1..x_t, right R = the rest), the
divergence is the energy statistic with alpha = 1::

    Q(t) = t(n-t)/n * (2 mean|L-R| - mean|L-L'| - mean|R-R'|)

The best split of a segment maximises Q; the candidate of a stage is the best over every
current segment. It is judged as Matteson and James do: the points are permuted within
each segment (the changes already found stay), and the statistic of a permutation is
again the maximum over every segment's best split; the p value is (1 + #permuted >=
observed) / (1 + permutations). The search repeats, always taking the strongest
remaining candidate, until none is significant. Each segment keeps at least
``min_size`` points. 999 permutations give p-values down to 0.001, small enough to
survive a correction over a site's series (``bench.analysis.multiplicity``); a caller
that corrects takes each series' first stage (``strongest_change``), corrects its p
over the series, and runs ``change_points`` on those that survive. The random orders
come from a fixed seed, so the same history always gives the same change points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_SIZE = 3
PERMUTATIONS = 999
ALPHA = 0.05
SEED = 20261201
BATCH_DISTANCES = 2_000_000


@dataclass(frozen=True)
class ChangePoint:
    """A change between ``index - 1`` and ``index`` of the series, with its evidence."""

    index: int
    statistic: float
    p_value: float
    median_before: float
    median_after: float


def _split_statistics(values: FloatArray, min_size: int) -> tuple[IntArray, FloatArray]:
    """Candidate splits t and Q(t) for each row of ``values`` (rows: series of one length).

    ``values`` is (rows, n); the result is (t of shape (m,), Q of shape (rows, m)). The
    pairwise distances are summed through a 2-D prefix sum, so each row costs O(n^2).
    """
    rows, n = values.shape
    distances = np.abs(values[:, :, None] - values[:, None, :])
    # prefix[r, a, b] = sum of distances[r, :a, :b]
    prefix = np.zeros((rows, n + 1, n + 1))
    prefix[:, 1:, 1:] = distances.cumsum(1).cumsum(2)
    t = np.arange(min_size, n - min_size + 1)
    m = n - t
    left = prefix[:, t, t]  # ordered pairs within the left part
    cross = prefix[:, t, n] - left
    right = prefix[:, n, n][:, None] - left - 2 * cross
    between = 2 * cross / (t * m)
    within_left = np.where(t > 1, left / np.maximum(t * (t - 1), 1), 0.0)
    within_right = np.where(m > 1, right / np.maximum(m * (m - 1), 1), 0.0)
    return t, t * m / n * (between - within_left - within_right)


def _best_split(values: FloatArray, min_size: int) -> tuple[int, float]:
    """(split index t, Q(t)) maximising the energy divergence over one segment."""
    if values.size < 2 * min_size:
        return -1, -np.inf
    t, q = _split_statistics(values[None, :], min_size)
    best = int(np.argmax(q[0]))
    return int(t[best]), float(q[0, best])


def _permuted_maxima(
    segment: FloatArray, min_size: int, rng: np.random.Generator, permutations: int
) -> FloatArray:
    """The best split's Q of each of ``permutations`` random orders of one segment.

    Computed in batches of orders (about 2 M distances at a time), which is what makes
    999 permutations affordable in Python.
    """
    maxima = np.full(permutations, -np.inf)
    if segment.size < 2 * min_size:
        return maxima
    batch = max(1, BATCH_DISTANCES // (segment.size * segment.size))
    for first in range(0, permutations, batch):
        count = min(batch, permutations - first)
        orders = rng.permuted(np.broadcast_to(segment, (count, segment.size)), axis=1)
        maxima[first : first + count] = _split_statistics(orders, min_size)[1].max(axis=1)
    return maxima


def _significance(
    series: FloatArray,
    segments: list[tuple[int, int]],
    observed: float,
    min_size: int,
    rng: np.random.Generator,
    permutations: int,
) -> float:
    """The permutation p value of a stage's best split, permuting within every segment.

    A permutation's statistic is the maximum over every segment's best split, each
    segment permuted on its own (the changes already found stay where they are).
    """
    strongest = np.full(permutations, -np.inf)
    for start, stop in segments:
        strongest = np.maximum(
            strongest, _permuted_maxima(series[start:stop], min_size, rng, permutations)
        )
    exceed = int(np.count_nonzero(strongest >= observed))
    return (1 + exceed) / (1 + permutations)


def change_points(
    values: FloatArray | list[float],
    *,
    min_size: int = MIN_SIZE,
    permutations: int = PERMUTATIONS,
    alpha: float = ALPHA,
    seed: int = SEED,
) -> list[ChangePoint]:
    """The significant change points of a series, in order (see the module docstring).

    Non-finite values must be removed by the caller (positions refer to the array given).
    A series shorter than ``2 * min_size`` has none.
    """
    series = np.asarray(values, dtype=np.float64)
    if series.size < 2 * min_size or not np.isfinite(series).all():
        return []
    rng = np.random.default_rng(seed)
    found: list[tuple[int, float, float]] = []
    segments = [(0, series.size)]
    while True:
        candidates = []
        for start, stop in segments:
            part = series[start:stop]
            if part.size < 2 * min_size or np.ptp(part) == 0:
                continue
            t, q = _best_split(part, min_size)
            if t > 0:
                candidates.append((q, start, stop, start + t))
        if not candidates:
            break
        q, start, stop, split = max(candidates)
        p_value = _significance(series, segments, q, min_size, rng, permutations)
        if p_value > alpha:
            break
        found.append((split, q, p_value))
        segments.remove((start, stop))
        segments += [(start, split), (split, stop)]
    points = []
    bounds = sorted([0, series.size, *(s for s, _, _ in found)])
    for split, q, p_value in sorted(found):
        i = bounds.index(split)
        before = series[bounds[i - 1] : split]
        after = series[split : bounds[i + 1]]
        points.append(
            ChangePoint(split, q, p_value, float(np.median(before)), float(np.median(after)))
        )
    return points


def strongest_change(
    values: FloatArray | list[float],
    *,
    min_size: int = MIN_SIZE,
    permutations: int = PERMUTATIONS,
    seed: int = SEED,
) -> ChangePoint | None:
    """The first stage only: the strongest split of the whole series and its p value.

    Whatever its p value (None when the series is too short or flat): a caller testing
    many series corrects these p values over the family before trusting any, then runs
    ``change_points`` on the series that survive (whose first stage is this same split).
    """
    series = np.asarray(values, dtype=np.float64)
    if series.size < 2 * min_size or not np.isfinite(series).all() or np.ptp(series) == 0:
        return None
    segments = [(0, series.size)]
    split, q = _best_split(series, min_size)
    if split < 0:
        return None
    rng = np.random.default_rng(seed)
    p_value = _significance(series, segments, q, min_size, rng, permutations)
    return ChangePoint(
        split, q, p_value, float(np.median(series[:split])), float(np.median(series[split:]))
    )
