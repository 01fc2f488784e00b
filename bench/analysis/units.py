"""Human-readable quantities: seconds as ms or s, MiB and bytes as MiB, counts as they are."""

from __future__ import annotations

import math

_TIME_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_SIZE_UNITS_MIB = {"MiB": 1.0, "bytes": 1 / 1048576, "KiB": 1 / 1024, "GiB": 1024.0}


def unit_kind(unit: str) -> str:
    """``time``, ``size`` or ``other``: decides the words a comparison uses."""
    if unit in _TIME_UNITS_S:
        return "time"
    if unit in _SIZE_UNITS_MIB:
        return "size"
    return "other"


def format_quantity(value: float | None, unit: str, *, digits: int = 3) -> str:
    """``0.0968, "s"`` -> ``96.8 ms``; ``12.34, "MiB"`` -> ``12.3 MiB``; None/NaN -> ``-``."""
    if value is None or not math.isfinite(value):
        return "-"
    if unit in _TIME_UNITS_S:
        seconds = value * _TIME_UNITS_S[unit]
        magnitude = abs(seconds)
        if magnitude >= 1 or magnitude == 0:
            return f"{seconds:.{digits}g} s"
        if magnitude >= 1e-3:
            return f"{seconds * 1e3:.{digits}g} ms"
        return f"{seconds * 1e6:.{digits}g} µs"
    if unit in _SIZE_UNITS_MIB:
        mib = value * _SIZE_UNITS_MIB[unit]
        if abs(mib) >= 1024:
            return f"{mib / 1024:.2f} GiB"
        return f"{mib:.{0 if abs(mib) >= 100 else 1 if abs(mib) >= 10 else 2}f} MiB"
    return f"{value:.{digits}g} {unit}".rstrip()


def to_display(value: float, unit: str) -> tuple[float, str]:
    """A value in the unit plots use: seconds as ms, sizes as MiB, others unchanged."""
    if unit in _TIME_UNITS_S:
        return value * _TIME_UNITS_S[unit] * 1e3, "ms"
    if unit in _SIZE_UNITS_MIB:
        return value * _SIZE_UNITS_MIB[unit], "MiB"
    return value, unit


def display_scale(unit: str) -> tuple[float, str]:
    """Factor and unit that ``to_display`` applies (for scaling whole arrays)."""
    scaled, shown = to_display(1.0, unit)
    return scaled, shown


def mib_in_unit(mib: float, unit: str) -> float | None:
    """``mib`` MiB expressed in a size unit (``1.0, "bytes"`` -> 1048576); None otherwise."""
    factor = _SIZE_UNITS_MIB.get(unit)
    return None if factor is None else mib / factor
