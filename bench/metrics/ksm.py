"""KSM and THP for a memory group: the knobs it runs under, and waiting for KSM to settle.

The values are written and given back by ``bench.host_settings.changed_settings``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.host_settings import KSM_DIR, THP_ENABLED, ksm_counters
from bench.metrics.procmem import MIB, mem_available_bytes
from bench.scenario import MemoryOptions

KSM_PAGES_TO_SCAN = 2000  # pages per wake-up while bench lets KSM settle (default 100)


KSM_SLEEP_MS = 20


KSM_POLL_S = 1.0


def host_knobs(options: MemoryOptions) -> dict[Path, str]:
    """The sysfs values a memory group runs under (KSM's run switch, THP's mode)."""
    knobs: dict[Path, str] = {}
    if options.ksm == "off":
        knobs[KSM_DIR / "run"] = "0"
    elif options.ksm == "on":
        knobs.update(ksm_on_knobs())
    if options.thp != "host":
        knobs[THP_ENABLED] = options.thp
    return knobs


def ksm_on_knobs() -> dict[Path, str]:
    """KSM switched on, scanning fast enough to settle within minutes."""
    return {
        KSM_DIR / "pages_to_scan": str(KSM_PAGES_TO_SCAN),
        KSM_DIR / "sleep_millisecs": str(KSM_SLEEP_MS),
        KSM_DIR / "run": "1",
    }


def settle_ksm(options: MemoryOptions) -> dict[str, Any]:
    """Wait until KSM's pages_sharing is stable (or the timeout); return its curve.

    Stable: at least two full scans done, and pages_sharing moved less than 1% over the
    last ``ksm_stable_s``. Each point is [seconds, pages_sharing, MemAvailable MiB].
    """
    origin = time.monotonic()
    start = ksm_counters()
    series: list[list[float]] = []
    stable = False
    while True:
        elapsed = time.monotonic() - origin
        counters = ksm_counters()
        series.append(
            [round(elapsed, 2), counters.get("pages_sharing", 0), mem_available_bytes() / MIB]
        )
        window = [p for p in series if p[0] >= elapsed - options.ksm_stable_s]
        scans = counters.get("full_scans", 0) - start.get("full_scans", 0)
        if elapsed >= options.ksm_stable_s and scans >= 2 and window:
            low, high = min(p[1] for p in window), max(p[1] for p in window)
            if high == 0 or (high - low) <= 0.01 * high:
                stable = True
                break
        if elapsed >= options.ksm_timeout_s:
            break
        time.sleep(KSM_POLL_S)
    return {
        "settle_s": round(time.monotonic() - origin, 2),
        "stable": stable,
        "full_scans": ksm_counters().get("full_scans", 0) - start.get("full_scans", 0),
        "series": series,
    }
