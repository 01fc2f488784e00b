"""A trend page built from N A/A runs: does it show a change point? (It should not.)

Usage: .venv/bin/python tests/perf/site_aa.py [--runs 30] [--scenario scenarios/aa-trend.yaml]
       [--results DIR]

Runs the scenario N times on an unchanged host (with ``--results DIR`` holding runs
already, it adds none when there are N), publishes them with ``bench publish``, and
prints, from the trend page's own code (``bench.analysis.changepoint`` on each series of
complete runs, Benjamini-Hochberg over the page), every series' strongest split with its
raw and adjusted p, and whether the published trend page says "No change point". Prints;
never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.analysis.changepoint import ALPHA, strongest_change  # noqa: E402
from bench.analysis.multiplicity import BENJAMINI_HOCHBERG, adjust  # noqa: E402
from bench.report.site import TREND_FIGURES  # noqa: E402

BENCH = [sys.executable, "-m", "bench"]


def main() -> None:
    """Run, publish, and print what the trend page found."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--scenario", default="scenarios/aa-trend.yaml")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    results = args.results or Path(tempfile.mkdtemp(prefix="bench-site-aa-"))
    have = len(list(results.glob("*/*/run.json")))
    started = time.monotonic()
    for _ in range(max(0, args.runs - have)):
        subprocess.run(
            [*BENCH, "run", args.scenario, "--results", str(results), "--no-report"],
            cwd=REPO,
            check=True,
            capture_output=True,
            env={**os.environ, "COLUMNS": "200"},
        )
    runs_s = time.monotonic() - started
    site = results.parent / f"{results.name}-site"
    subprocess.run(
        [*BENCH, "publish", str(results), "-o", str(site)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    manifest = json.loads((site / "manifest.json").read_text())
    entries = [e for e in manifest["runs"].values() if e.get("status") == "complete"]
    entries.sort(key=lambda e: (e["started_at_utc"], e["run_id"]))
    print(f"{len(entries)} complete runs ({runs_s:.0f} s of runs); site {site}")
    firsts = []
    for key, _unit, _title in TREND_FIGURES:
        for backend in sorted({r["backend"] for e in entries for r in e.get("headline", [])}):
            values = [
                r["figures"][key]
                for e in entries
                for r in e.get("headline", [])
                if r["backend"] == backend and r.get("figures", {}).get(key) is not None
            ]
            first = strongest_change(values)
            if first is not None:
                firsts.append((key, backend, len(values), first))
    adjusted = adjust([f[3].p_value for f in firsts], BENJAMINI_HOCHBERG)
    print(f"{'figure':<26} {'backend':<14} {'runs':>4} {'split':>5} {'p':>7} {'BH p':>7}")
    for (key, backend, n, first), p_bh in zip(firsts, adjusted, strict=True):
        flag = "  <- change" if p_bh < ALPHA else ""
        print(
            f"{key:<26} {backend:<14} {n:>4} {first.index:>5} {first.p_value:>7.3f} "
            f"{p_bh:>7.3f}{flag}"
        )
    pages = list((site / "trends").rglob("*.html"))
    for page in pages:
        text = page.read_text()
        said = "No change point" if "No change point." in text else "CHANGE POINTS SHOWN"
        print(f"{page.relative_to(site)}: {said}")


if __name__ == "__main__":
    main()
