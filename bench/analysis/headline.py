"""The headline figures of a set of runs: one row per backend, each beside the native floor.

This is what a report's first screen and a site's trend pages show: startup to READY
(median and p95), memory per idle instance (PSS, its overhead over the native baseline,
and the MemAvailable slope's overhead with its 95% CI), density reached with its stop
reason and knee, limits enforced out of those that apply (not-applicable checks listed
with their reason, never counted as failures), and the accelerator a VM ran under.
Every figure is absolute first; a multiple of the native process is given beside it
where both are positive (a multiple of a 0.1 MiB baseline is shown, but never alone).

Built from recorded samples only (measured, non-noise); nothing is estimated. A memory
overhead whose value is negative or whose CI holds 0 is reported as "not distinguishable
from 0", never as a finding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.columns import equals, text
from bench.analysis.noise import without_noise
from bench.analysis.order import BackendOrder
from bench.analysis.stats import measured

NATIVE = "native"


@dataclass(frozen=True)
class StartupFigure:
    """Startup to READY of one backend: median and p95 of measured, successful samples."""

    median_s: float
    p95_s: float
    n: int
    failed: int


@dataclass(frozen=True)
class MemoryFigure:
    """Memory per idle instance of one backend, MiB (None: not recorded)."""

    pss_mib: float | None
    pss_overhead_mib: float | None
    slope_overhead_mib: float | None = None
    slope_ci_mib: tuple[float | None, float | None] = (None, None)
    slope_finding: str = ""
    instances: int = 0

    @property
    def overhead_distinguishable(self) -> bool:
        """True when the PSS overhead is a positive figure worth stating as one."""
        return self.pss_overhead_mib is not None and self.pss_overhead_mib > 0


@dataclass(frozen=True)
class DensityFigure:
    """How far a density ramp got and why it stopped."""

    count: float
    stop_reason: str
    stop_detail: str
    knee_count: int | None
    p99_startup_s: float | None
    ramps: int = 1


@dataclass(frozen=True)
class LimitsFigure:
    """Limit checks of one backend: enforced of those that apply; n/a with reasons."""

    enforced: int
    applicable: int
    not_applicable: tuple[tuple[str, str], ...] = ()  # (check, reason)
    failed: tuple[str, ...] = ()  # check names (with the error, if the check failed to run)


@dataclass
class BackendHeadline:
    """One backend's row of the summary."""

    backend: str
    mechanism: str
    accel: str
    startup: StartupFigure | None = None
    memory: MemoryFigure | None = None
    density: DensityFigure | None = None
    limits: LimitsFigure | None = None
    multiples: dict[str, float] = field(default_factory=dict)

    @property
    def is_native(self) -> bool:
        """The native floor every other row is judged against."""
        return self.mechanism == NATIVE

    def figures(self) -> dict[str, float | None]:
        """The row's numbers by name (for trend pages and JSON)."""
        return {
            "startup_median_s": self.startup.median_s if self.startup else None,
            "startup_p95_s": self.startup.p95_s if self.startup else None,
            "pss_mib": self.memory.pss_mib if self.memory else None,
            "pss_overhead_mib": self.memory.pss_overhead_mib if self.memory else None,
            "density_count": self.density.count if self.density else None,
            "limits_enforced_fraction": (
                self.limits.enforced / self.limits.applicable
                if self.limits and self.limits.applicable
                else None
            ),
        }


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    """Measured, non-noise samples."""
    return without_noise(measured(frame))


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def headline_rows(frame: pd.DataFrame) -> list[BackendHeadline]:
    """One ``BackendHeadline`` per backend of a samples frame, in mechanism order."""
    data = _clean(frame)
    if data.empty:
        return []
    order = BackendOrder.from_frame(data)
    ok = data["ok"].to_numpy(dtype=bool)
    values = data["value"].to_numpy(np.float64)
    startup = equals(data["metric"], "startup")
    memory = equals(data["metric"], "memory")
    limits = equals(data["metric"], "limits")
    stops = equals(data["metric"], "density")
    if "label.view" in data.columns:
        stops = stops & equals(data["label.view"], "count_reached")
    else:
        stops = np.zeros(len(data), dtype=bool)
    accel = text(data["label.accel"]) if "label.accel" in data.columns else None
    rows: list[BackendHeadline] = []
    for backend in order.backends:
        mine = equals(data["backend"], backend)
        accels = sorted({a for a in accel[mine] if a and a != "n/a"}) if accel is not None else []
        row = BackendHeadline(
            backend, order.mechanism(backend), _accel_text(",".join(accels) or "n/a")
        )
        tried = mine & startup
        good = values[tried & ok]
        good = good[np.isfinite(good)]
        if good.size:
            row.startup = StartupFigure(
                float(np.median(good)),
                float(np.percentile(good, 95)),
                int(good.size),
                int((tried & ~ok).sum()),
            )
        sel = mine & ok & memory
        if sel.any():
            part = data[sel]
            row.memory = _memory(part, _labels(part, "label.view"), _labels(part, "label.role"))
        sel = mine & ok & stops
        row.density = _density(data[sel]) if sel.any() else None
        sel = mine & limits
        row.limits = _limits(data[sel]) if sel.any() else None
        rows.append(row)
    _multiples(rows)
    return rows


def _labels(frame: pd.DataFrame, name: str) -> pd.Series:
    """A label column as text with missing values as "" (a column of "" when absent)."""
    if name not in frame.columns:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    values = text(frame[name])
    return pd.Series(np.where(values == None, "", values), index=frame.index, dtype=object)  # noqa: E711


def _accel_text(accel: str) -> str:
    """``tcg`` -> TCG, ``kvm,tcg`` -> KVM+TCG, ``n/a`` -> ``-``."""
    if accel in {"", "n/a"}:
        return "-"
    return "+".join(part.upper() for part in accel.split(","))


def _ksm_off(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefer records read with KSM off (a memory.ksm: both run reads every instance twice)."""
    if "label.ksm" not in frame.columns:
        return frame
    ksm = frame["label.ksm"].astype(object).where(frame["label.ksm"].notna(), "").astype(str)
    off = frame[ksm.isin(["", "off"]).to_numpy()]
    return off if not off.empty else frame


def _memory(part: pd.DataFrame, view: pd.Series, role: pd.Series) -> MemoryFigure | None:
    if part.empty:
        return None
    total = role.isin(["total", ""]).to_numpy()
    pss = _ksm_off(part[(view == "pss").to_numpy() & total])
    overhead = _ksm_off(part[(view == "pss_overhead").to_numpy() & total])
    slope = _ksm_off(part[(view == "memavailable_slope_overhead").to_numpy()])
    if pss.empty and overhead.empty and slope.empty:
        return None
    pss_values = pss["value"].to_numpy(np.float64)
    over_values = overhead["value"].to_numpy(np.float64)
    figure = MemoryFigure(
        pss_mib=float(np.nanmedian(pss_values)) if pss_values.size else None,
        pss_overhead_mib=float(np.nanmedian(over_values)) if over_values.size else None,
        instances=int(pss["instance"].nunique()) if "instance" in pss.columns else 0,
    )
    if not slope.empty:
        last = slope.iloc[-1]
        low = _number(last.get("label.ci_low_mib"))
        high = _number(last.get("label.ci_high_mib"))
        value = _number(last["value"])
        finding = _text(last.get("label.finding"))
        holds_zero = low is not None and high is not None and low <= 0 <= high
        if not finding:
            finding = "not distinguishable from 0" if holds_zero else ""
        if value is not None and value < 0 and not holds_zero:
            finding = "below native (not an overhead)"
        figure = MemoryFigure(
            figure.pss_mib,
            figure.pss_overhead_mib,
            value,
            (low, high),
            finding,
            figure.instances,
        )
    return figure


def _density(part: pd.DataFrame) -> DensityFigure | None:
    if part.empty:
        return None
    values = part["value"].to_numpy(np.float64)
    best = part.iloc[int(np.nanargmax(values))] if np.isfinite(values).any() else part.iloc[-1]
    knee = _number(best.get("label.knee_count"))
    return DensityFigure(
        count=float(best["value"]),
        stop_reason=_text(best.get("label.stop_reason")) or "?",
        stop_detail=_text(best.get("label.stop_detail")),
        knee_count=int(knee) if knee is not None else None,
        p99_startup_s=_number(best.get("label.p99_startup_s")),
        ramps=len(part),
    )


def _limits(part: pd.DataFrame) -> LimitsFigure | None:
    if part.empty:
        return None
    enforced = applicable = 0
    not_applicable: list[tuple[str, str]] = []
    failed: list[str] = []
    for _, record in part.iterrows():
        check = _text(record.get("label.view")) or "?"
        evidence = record.get("label.evidence")
        if record.get("label.applicable") is False or (
            bool(record["ok"]) and record.get("label.enforced") is None
        ):
            reason = evidence.get("reason") if isinstance(evidence, dict) else None
            not_applicable.append((check, _text(reason) or "not applicable"))
            continue
        applicable += 1
        if bool(record["ok"]) and bool(record.get("label.enforced")):
            enforced += 1
        else:
            error = _text(record.get("error"))
            failed.append(f"{check}: {error}" if error else check)
    return LimitsFigure(enforced, applicable, tuple(not_applicable), tuple(failed))


def _multiples(rows: list[BackendHeadline]) -> None:
    """Each row's figures as multiples of the native row's (where both are positive)."""
    native = next((r for r in rows if r.is_native), None)
    if native is None:
        return
    getters: dict[str, Callable[[BackendHeadline], float | None]] = {
        "startup": lambda r: r.startup.median_s if r.startup else None,
        "memory": lambda r: r.memory.pss_mib if r.memory else None,
        "density": lambda r: r.density.count if r.density else None,
    }
    for row in rows:
        for name, get in getters.items():
            base, value = get(native), get(row)
            if base is not None and value is not None and base > 0 and value > 0:
                row.multiples[name] = value / base


def multiple_text(value: float | None) -> str:
    """``230x`` style multiple of native: 3 significant digits, ``-`` when absent."""
    if value is None or not math.isfinite(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}x"
    return f"{value:.3g}x"
