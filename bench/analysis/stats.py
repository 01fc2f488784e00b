"""Statistics of samples, the way MEASURE.md defines them, with pyperf-style stability warnings.

Per group of values: n, median, quartiles and IQR, p95, p99, min, max, mean, standard
deviation, coefficient of variation, and a 95% bootstrap confidence interval of the
median. Up to ``SCIPY_BOOTSTRAP_MAX_N`` values the CI comes from
``scipy.stats.bootstrap`` (percentile method, ``BOOTSTRAP_RESAMPLES`` resamples, a fixed
seed, so the same data always gives the same interval). Above that, resampling is both
slow and needless: the percentile bootstrap's limit for the median, the interval it
converges to with infinitely many resamples, is computed exactly from the order
statistics (the resampled median is below x_(j) exactly when at least half the draws
are, a binomial event), in O(n) with no randomness at all.

Warnings are carried with every result, and only the ones a user can act on: fewer
than ``MIN_SAMPLES`` values where the scenario asked for replicates (one value by
design, like a density ramp's ``count_reached`` or a limit check, is not "too few"),
and at least ``OUTLIER_WARN_MIN`` outliers beyond 1.5 IQR making up more than
``OUTLIER_WARN_FRACTION`` of the values (one outlier in ten samples is not a warning).
A CV >= 10% marks a row ``unstable`` (shown, not a warning: some quantities are
spread by nature, and the comparison's block statistics account for it); a series
(a density ramp's steps, whose values rise with N by design) is never unstable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.analysis.columns import text
from bench.analysis.noise import without_noise

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261130
SCIPY_BOOTSTRAP_MAX_N = 1000
CV_UNSTABLE = 0.10
MIN_SAMPLES = 5
OUTLIER_IQR_FACTOR = 1.5
OUTLIER_WARN_FRACTION = 0.10
OUTLIER_WARN_MIN = 2

# The sample's own value is reported as this stage; stage.* columns under their names.
VALUE_STAGE = "value"

FloatArray = npt.NDArray[np.float64]


@functools.cache
def scipy_stats() -> Any:
    """Return scipy.stats, imported on first use.

    The import costs ~0.5 s, which a CLI start should not pay before it has work for it
    (the compare command imports it on a thread while the runs load).
    """
    import scipy.stats

    return scipy.stats


@functools.cache
def scipy_special() -> Any:
    """Return scipy.special, imported on first use.

    Student's t and binomial tail functions live here; importing it costs ~0.2 s where
    scipy.stats costs ~0.8 s, which matters to a command meant to answer in a second.
    """
    import scipy.special

    return scipy.special


@dataclass(frozen=True)
class Stats:
    """Descriptive statistics of one group of values (n >= 1), in the values' unit."""

    n: int
    median: float
    q1: float
    q3: float
    iqr: float
    p95: float
    p99: float
    minimum: float
    maximum: float
    mean: float
    stdev: float
    cv: float  # stdev / |mean|; NaN when the mean is 0
    ci_low: float
    ci_high: float
    ci_method: str
    outliers: int
    warnings: tuple[str, ...]
    replicated: bool = True  # several values per block were asked for
    series: bool = False  # values of a ramp (they change with N by design)

    @property
    def unstable(self) -> bool:
        """CV >= ``CV_UNSTABLE`` (or undefined) for replicates; never for a series."""
        if self.series or self.n < 2:
            return False
        return not math.isfinite(self.cv) or self.cv >= CV_UNSTABLE

    def as_dict(self) -> dict[str, Any]:
        """Plain dict with non-finite floats as None (JSON-safe)."""
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class StatRow:
    """Statistics of one (run, backend, case, metric, stage), with failures counted apart."""

    run_id: str
    metric: str
    backend: str
    case: str
    view: str
    stage: str
    unit: str
    failed: int
    accel: str
    stats: Stats
    blocks: int = 1

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON-safe dict: the key fields, then every statistic."""
        names = ("run_id", "metric", "backend", "case", "view", "stage")
        head = {k: getattr(self, k) for k in names}
        head.update(unit=self.unit, failed=self.failed, accel=self.accel, blocks=self.blocks)
        head.update(self.stats.as_dict())
        head["warnings"] = list(self.stats.warnings)
        head["unstable"] = self.stats.unstable
        return head


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple):
        return list(value)
    return value


def as_sorted_array(values: Iterable[float] | npt.ArrayLike) -> FloatArray:
    """Finite values as a sorted float64 array (NaN and inf dropped)."""
    if isinstance(values, np.ndarray | pd.Series | list | tuple):
        array = np.array(values, dtype=np.float64)
    else:
        array = np.fromiter(values, dtype=np.float64)  # type: ignore[arg-type]
    array = array[np.isfinite(array)]
    array.sort()
    return array


def describe(
    values: Iterable[float] | npt.ArrayLike,
    *,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
    presorted: bool = False,
    ci: bool = True,
    replicated: bool = True,
    series: bool = False,
) -> Stats:
    """Describe finite values (at least one) with a bootstrap CI of the median and warnings.

    ``ci=False`` skips the interval (NaN bounds) when only the warnings are wanted.
    ``replicated=False``: one value per block by design (no "too few samples");
    ``series=True``: the values of a ramp (neither unstable nor outliers).
    """
    data = np.asarray(values, np.float64) if presorted else as_sorted_array(values)
    n = int(data.size)
    if n == 0:
        raise ValueError("describe() needs at least one finite value")
    q1, median, q3, p95, p99 = np.quantile(data, [0.25, 0.5, 0.75, 0.95, 0.99])
    iqr = float(q3 - q1)
    mean = float(data.mean())
    stdev = float(data.std(ddof=1)) if n > 1 else 0.0
    cv = stdev / abs(mean) if mean != 0 else (0.0 if stdev == 0 else math.nan)
    if ci:
        ci_low, ci_high, method = median_ci(data, seed=seed, confidence=confidence, presorted=True)
    else:
        ci_low, ci_high, method = math.nan, math.nan, "not computed"
    low_fence = q1 - OUTLIER_IQR_FACTOR * iqr
    high_fence = q3 + OUTLIER_IQR_FACTOR * iqr
    outliers = int(np.searchsorted(data, low_fence, "left")) + int(
        n - np.searchsorted(data, high_fence, "right")
    )
    stats = Stats(
        n=n,
        median=float(median),
        q1=float(q1),
        q3=float(q3),
        iqr=iqr,
        p95=float(p95),
        p99=float(p99),
        minimum=float(data[0]),
        maximum=float(data[-1]),
        mean=mean,
        stdev=stdev,
        cv=cv,
        ci_low=ci_low,
        ci_high=ci_high,
        ci_method=method,
        outliers=outliers,
        warnings=(),
        replicated=replicated,
        series=series,
    )
    return Stats(**{**asdict(stats), "warnings": stability_warnings(stats)})


def stability_warnings(stats: Stats) -> tuple[str, ...]:
    """Actionable warnings: too few replicates, many outliers (see the module docstring)."""
    found: list[str] = []
    if stats.replicated and not stats.series and stats.n < MIN_SAMPLES:
        found.append(
            f"too few samples: n={stats.n} < {MIN_SAMPLES} "
            "(raise samples, or memory instances x rounds)"
        )
    share = stats.outliers / stats.n
    if not stats.series and stats.outliers >= OUTLIER_WARN_MIN and share > OUTLIER_WARN_FRACTION:
        found.append(
            f"{stats.outliers} outliers beyond {OUTLIER_IQR_FACTOR} IQR ({share:.0%} of "
            "samples): something disturbed the run"
        )
    return tuple(found)


def median_ci(
    values: Sequence[float] | FloatArray,
    *,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
    presorted: bool = False,
) -> tuple[float, float, str]:
    """Bootstrap CI of the median as (low, high, method); always contains the sample median."""
    data = np.asarray(values, np.float64) if presorted else as_sorted_array(values)
    n = int(data.size)
    median = float(np.median(data))
    if n == 1 or data[0] == data[-1]:
        return median, median, "degenerate (all values equal)"
    if n <= SCIPY_BOOTSTRAP_MAX_N:
        low, high = percentile_bootstrap((data,), np.median, seed=seed, confidence=confidence)
        method = f"bootstrap percentile ({BOOTSTRAP_RESAMPLES} resamples, seed {seed})"
    else:
        alpha = (1 - confidence) / 2
        low_index, high_index = _cdf_index(n, np.array([alpha, 1 - alpha]))
        low, high = float(data[low_index]), float(data[high_index])
        method = "bootstrap percentile, exact (order statistics)"
    # A percentile interval can exclude the median for tiny, lumpy samples (or leave the
    # data's range by a rounding error); never report either.
    low = min(max(low, float(data[0])), median)
    high = max(min(high, float(data[-1])), median)
    return low, high, method


def percentile_bootstrap(
    samples: tuple[FloatArray, ...],
    statistic: Callable[..., Any],
    *,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """``scipy.stats.bootstrap`` percentile CI of a vectorized statistic, as (low, high).

    ``BOOTSTRAP_RESAMPLES`` resamples from a generator seeded with ``seed``; the samples
    are resampled independently (not paired).
    """
    result = scipy_stats().bootstrap(
        samples,
        statistic,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        confidence_level=confidence,
        vectorized=True,
        paired=False,
        axis=-1,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def exact_median_bootstrap_cdf(n: int) -> FloatArray:
    """P(resampled median <= x_(j)) for j = 1..n, with the median taken as x_(ceil(n/2)).

    The resampled median is <= x_(j) exactly when at least k = ceil(n/2) of n draws with
    replacement land at or below x_(j), which happens with probability
    P(Binomial(n, j/n) >= k).
    """
    offset, window = _median_cdf_window(n)
    cdf = np.zeros(n, dtype=np.float64)
    cdf[offset : offset + window.size] = window
    cdf[offset + window.size :] = 1.0
    return cdf


@functools.cache
def _median_cdf_window(n: int) -> tuple[int, FloatArray]:
    """The CDF of ``exact_median_bootstrap_cdf`` where it is neither ~0 nor ~1.

    The resampled median's rank has a standard deviation of about sqrt(n)/2, so outside
    k +- 6 sqrt(n) (12 standard deviations) the CDF is 0 or 1 to double precision.
    """
    k = (n + 1) // 2
    half = int(6 * math.sqrt(n)) + 16
    first, last = max(1, k - half), min(n, k + half)
    fractions = np.arange(first, last + 1, dtype=np.float64) / n
    # P(Binomial(n, p) >= k) = bdtrc(k - 1, n, p): scipy.special, not the heavier scipy.stats
    window = np.asarray(scipy_special().bdtrc(k - 1, n, fractions), dtype=np.float64)
    if last == n:
        window[-1] = 1.0
    window.flags.writeable = False
    return first - 1, window


def _cdf_index(n: int, probabilities: FloatArray) -> npt.NDArray[np.intp]:
    """0-based order-statistic index of the first CDF value >= each probability."""
    offset, window = _median_cdf_window(n)
    positions = offset + np.searchsorted(window, probabilities, "left")
    return np.minimum(positions, n - 1)


def sample_medians(
    data: FloatArray, draws: int, rng: np.random.Generator, *, presorted: bool = True
) -> FloatArray:
    """Draw bootstrap medians of sorted ``data`` from their exact distribution (inverse CDF)."""
    sorted_data = data if presorted else np.sort(data)
    result: FloatArray = sorted_data[_cdf_index(int(sorted_data.size), rng.random(draws))]
    return result


def stage_columns(frame: pd.DataFrame) -> list[str]:
    """The ``stage.*`` columns of a samples frame, in order."""
    return [c for c in frame.columns if isinstance(c, str) and c.startswith("stage.")]


def stage_unit(stage: str, value_unit: str) -> str:
    """A stage's unit from its name's suffix (``to_ready_s`` -> s), else the sample's unit."""
    for suffix, unit in (("_s", "s"), ("_ms", "ms"), ("_bytes", "bytes"), ("_mib", "MiB")):
        if stage.endswith(suffix):
            return unit
    return value_unit


def stage_values(
    frame: pd.DataFrame, stage_names: Sequence[str], unit: str
) -> Iterator[tuple[str, str, FloatArray]]:
    """(stage, unit, sorted finite values) of a frame's value and each stage column.

    The sample value comes first as ``VALUE_STAGE`` in ``unit`` (the samples' unit),
    each stage in its own (``stage_unit``); stages with no finite value are skipped.
    """
    columns = [(VALUE_STAGE, "value"), *((c.removeprefix("stage."), c) for c in stage_names)]
    for stage, column in columns:
        values = as_sorted_array(frame[column].to_numpy(dtype=np.float64, na_value=np.nan))
        if values.size:
            yield stage, unit if stage == VALUE_STAGE else stage_unit(stage, unit), values


def view_labels(frame: pd.DataFrame) -> pd.Series:
    """What a sample measures within its metric: ``label.view``, with a non-total role appended.

    Memory records one sample per view and per process role (``pss:qemu``), density one
    per step and view (``startup_s``, ``total_pss``), limits one per check (``cpu``);
    startup samples have no view (""). The same rule as ``bench.analysis.summary``.
    """
    if "label.view" not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    view = text(frame["label.view"])
    view = np.where(view == None, "", view)  # noqa: E711 - elementwise on an object array
    if "label.role" not in frame.columns:
        return pd.Series(view, index=frame.index, dtype=object)
    role = text(frame["label.role"])
    role = np.where(role == None, "", role)  # noqa: E711
    plain = np.isin(role, ["", "total", "cgroup", "host"]) | (view == "")
    combined = view.astype(object)
    joined = ~plain
    if joined.any():
        combined[joined] = [f"{v}:{r}" for v, r in zip(view[joined], role[joined], strict=True)]
    return pd.Series(combined, index=frame.index, dtype=object)


def measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Measured samples only: warmups dropped (failed ones kept, to be counted)."""
    if frame.empty or "warmup" not in frame:
        return frame
    warmup = frame["warmup"].to_numpy(dtype=bool)
    return frame[~warmup] if warmup.any() else frame


def accel_of(frame: pd.DataFrame) -> str:
    """The accelerator(s) of a group's samples: ``tcg``, ``kvm``, ``kvm,tcg`` or ``n/a``."""
    if "label.accel" not in frame.columns:
        return "n/a"
    values = sorted({str(v) for v in frame["label.accel"].dropna().unique()} - {"n/a"})
    return ",".join(values) or "n/a"


def summarize_stats(
    frame: pd.DataFrame, *, stages: bool = True, seed: int = BOOTSTRAP_SEED
) -> list[StatRow]:
    """Statistics per (run, metric, backend, case, view, stage) over measured, successful samples.

    Groups whose samples all failed are left out of the statistics (their failures are
    counted on the rows that exist); ``stages=False`` describes the sample value only.
    """
    data = without_noise(measured(frame))
    if data.empty:
        return []
    rows: list[StatRow] = []
    data = data.assign(_view=view_labels(data))
    if "block" not in data.columns:
        data = data.assign(block=0)
    keys = ["run_id", "metric", "backend", "case", "_view"]
    stage_names = stage_columns(data) if stages else []
    # grouping reorders every column it carries: carry only those read below
    wanted = [*keys, "ok", "unit", "block", "value", *stage_names]
    wanted += [c for c in ("label.accel", "label.step") if c in data.columns]
    data = data[wanted]
    groups = data.groupby(keys, sort=True, observed=True)
    for (run_id, metric, backend, case, view), group in groups:
        ok = group["ok"].to_numpy(dtype=bool)
        failed = int((~ok).sum())
        unit = str(group["unit"].iloc[0])
        accel = accel_of(group)
        good = group[ok]
        blocks = int(good["block"].nunique()) if len(good) else 0
        series = "label.step" in good.columns and bool(good["label.step"].notna().any())
        for stage, stage_u, values in stage_values(good, stage_names, unit):
            rows.append(
                StatRow(
                    run_id=str(run_id),
                    metric=str(metric),
                    backend=str(backend),
                    case=str(case),
                    view=str(view),
                    stage=stage,
                    unit=stage_u,
                    failed=failed,
                    accel=accel,
                    stats=describe(
                        values,
                        seed=seed,
                        presorted=True,
                        replicated=values.size > blocks,
                        series=series,
                    ),
                    blocks=blocks,
                )
            )
    return rows
