"""``bench publish``: the static site over runs, hosts and kernels, rebuilt incrementally."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.analysis.changepoint import change_points, strongest_change
from bench.analysis.multiplicity import BENJAMINI_HOCHBERG, adjust
from bench.report.render import plotly_js
from bench.report.site import PLOTLY_ASSET, publish_site, run_page_path, trend_page_path
from tests.browser import check_pages, find_chromium
from tests.conftest import DATA, REPO, skip_or_fail
from tests.synthetic_runs import blocks, write_run

RUNS = DATA / "runs"
QUICK_RUN = next(p.parent for p in (RUNS / "current").rglob("run.json") if "-quick-" in str(p))
XSS_RUN = next(p.parent for p in (RUNS / "xss").rglob("run.json"))
ARTIFACTS = REPO / "tests" / "artifacts"
XSS_NAME = "<script>alert(1)</script>"
SHIFT_AT = 4


def _results(root: Path) -> Path:
    """A results tree: 8 synthetic runs on lab-01 (two kernels; docker slows down from the
    fifth run on), a real quick run, the hostile run, and an abandoned run."""
    rng = np.random.default_rng(7)
    results = root / "results"
    for index in range(8):
        shift = 1.5 if index >= SHIFT_AT else 1.0
        run = write_run(
            results,
            f"20261201T{10 + index:02d}0000Z-synthetic-{index:06x}",
            {
                "process": blocks(rng, 2, centre=0.008),
                "docker": blocks(rng, 2, centre=0.1, shift=shift),
            },
        )
        record = json.loads((run / "run.json").read_text())
        record["started_at_utc"] = f"2026-12-01T{10 + index:02d}:00:00+00:00"
        record["host"]["kernel"]["release"] = "6.1.0-a" if index < SHIFT_AT else "6.6.0-b"
        (run / "run.json").write_text(json.dumps(record))
    for source in (QUICK_RUN, XSS_RUN):
        shutil.copytree(source, results / "vm" / source.name)
    abandoned = results / "vm" / (QUICK_RUN.name[:-6] + "dead00")
    shutil.copytree(QUICK_RUN, abandoned)
    record = json.loads((abandoned / "run.json").read_text())
    record["run_id"] = abandoned.name
    record["status"] = "running"
    record["process"] = {"pid": 2**22 - 3, "start_ticks": 1, "boot_id": "gone"}
    (abandoned / "run.json").write_text(json.dumps(record))
    for cache in results.rglob("samples.parquet"):
        cache.unlink()
    return results


def test_change_points_by_e_divisive() -> None:
    rng = np.random.default_rng(3)
    shifted = np.r_[rng.normal(1.0, 0.03, 12), rng.normal(1.3, 0.03, 10)]
    (found,) = change_points(shifted)
    assert found.index == 12 and found.p_value <= 0.05
    assert found.median_before < 1.1 < found.median_after
    assert change_points([1.0, 2.0, 3.0]) == [], "too short to split"
    assert change_points(shifted) == change_points(shifted), "a fixed seed: the same answer"
    assert strongest_change(shifted) == found, "the first stage is the same split"
    # twenty series of pure noise: about one in twenty has a raw p under 5%, which is why
    # a site corrects over its series; after Benjamini-Hochberg none is left
    nulls = [strongest_change(rng.normal(1.0, 0.03, 30)) for _ in range(20)]
    raw = [c.p_value for c in nulls if c is not None]
    assert len(raw) == 20 and min(raw) < 0.05
    assert min(adjust(raw, BENJAMINI_HOCHBERG)) >= 0.05


def test_publish_builds_the_site_and_renders_only_what_changed(tmp_path: Path) -> None:
    results = _results(tmp_path)
    site = tmp_path / "site"
    first = publish_site([results], site)
    assert first.runs == first.rendered == 11 and first.kept == 0 and first.warnings == []
    index = (site / "index.html").read_text()
    assert (site / PLOTLY_ASSET).stat().st_size == len(plotly_js().encode())
    bundle_head = plotly_js()[:200]
    pages = list(site.rglob("*.html"))
    assert len(pages) == first.pages
    for page in pages:
        html = page.read_text()
        assert bundle_head not in html, f"{page}: plotly.js is shipped once per site"
        assert 'assets/plotly.min.js"></script>' in html
    assert "abandoned" in index, "a running run whose process is gone"
    assert "6.1.0-a" in index and "6.6.0-b" in index
    assert XSS_NAME not in index
    run_page = site / run_page_path("lab-01", "20261201T100000Z-synthetic-000000")
    for raw in ("run.json", "samples.jsonl"):
        assert (run_page.parent / raw).is_file()
        assert f'href="{raw}" download' in run_page.read_text()
    trend = (site / trend_page_path("lab-01", "synthetic")).read_text()
    assert "E-Divisive" in trend
    shifted_run = f"20261201T{10 + SHIFT_AT:02d}0000Z-synthetic-{SHIFT_AT:06x}"
    assert shifted_run in trend, "the change point names the first run after it"
    kernels = (site / "kernels.html").read_text()
    assert "6.6.0-b against 6.1.0-a" in kernels
    assert "slower" in kernels, "docker's 1.5x under the second kernel"
    manifest = json.loads((site / "manifest.json").read_text())
    assert len(manifest["kernel_pairs"]) == 1

    mtime = run_page.stat().st_mtime_ns
    second = publish_site([results], site)
    assert (second.rendered, second.kept) == (0, 11)
    assert run_page.stat().st_mtime_ns == mtime, "an unchanged run is not rendered again"
    assert second.seconds < first.seconds

    write_run(
        results,
        "20261201T200000Z-synthetic-0000ff",
        {"process": blocks(np.random.default_rng(9), 2, centre=0.008)},
    )
    third = publish_site([results], site)
    assert (third.rendered, third.kept) == (1, 11)
    shutil.rmtree(results / "lab-01" / "20261201T200000Z-synthetic-0000ff")
    fourth = publish_site([results], site, full=True)
    assert (fourth.rendered, fourth.removed) == (11, 1)


def test_publish_cli(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(XSS_RUN, results / "vm" / XSS_RUN.name)
    command = [sys.executable, "-m", "bench", "publish", str(results), "-o", str(tmp_path / "s")]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "1 rendered" in done.stdout and (tmp_path / "s" / "index.html").is_file()
    again = subprocess.run([*command, "--full"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "1 rendered" in again.stdout
    missing = subprocess.run(
        [*command[:4], str(tmp_path / "nope"), "-o", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no such run directory" in missing.stderr


def test_site_in_real_headless_chromium(tmp_path: Path) -> None:
    """Every kind of page at 1400 and 800 px: no errors, no network, no overflow, plots drawn."""
    if find_chromium() is None:
        skip_or_fail("chromium is not installed (ansible/up.sh installs Debian's chromium)")
    results = _results(tmp_path)
    site = tmp_path / "site"
    publish_site([results], site)
    pages = [
        site / "index.html",
        site / "kernels.html",
        site / trend_page_path("lab-01", "synthetic"),
        site / run_page_path("vm", QUICK_RUN.name),
        site / run_page_path("vm", XSS_RUN.name),
    ]
    wanted: list[tuple[Path, tuple[int, int], Path | None]] = [
        (page, viewport, None) for page in pages for viewport in ((1400, 900), (800, 900))
    ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    checks = check_pages(
        wanted, full_page=False, allowed_root=site, log_path=ARTIFACTS / "chromium-site.log"
    )
    for check in checks:
        where = f"{check.url} at {check.viewport}"
        assert check.exceptions == [] and check.console_errors == [], where
        assert check.foreign_requests == [], f"{where}: {check.foreign_requests}"
        assert any(r.endswith(PLOTLY_ASSET) for r in check.requests), where
        assert check.dialogs == [], f"{where}: an injected script ran"
        assert check.plot_errors == [] and check.plots_without_svg == [], where
        assert not check.overflows, f"{where}: {check.layout}"
        assert check.layout["tallCells"] == [], f"{where}: rows taller than 3 lines"
    trend = checks[4]
    assert len(trend.plots) >= 2
    quick = checks[6]
    assert quick.layout["summaryBottom"] <= quick.viewport[1], quick.layout
    hostile = checks[8]
    assert XSS_NAME in hostile.text_content, "hostile text shown as text, never run"
