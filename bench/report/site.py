"""``bench publish``: a static site over many runs, hosts and kernels, rebuilt incrementally.

Layout of SITE_DIR (every page opens from disk or from any static server; nothing is
fetched from the network)::

    index.html                         every run by host, kernel and scenario, with status
    assets/plotly.min.js               plotly.js, once per site
    runs/<host>/<run_id>/index.html    the run's report (``bench report`` of that run)
    runs/<host>/<run_id>/run.json      its raw files, offered for download
    runs/<host>/<run_id>/samples.jsonl
    trends/<host>/<scenario>.html      headline figures over time and kernels, change points
    kernels.html                       every pair of kernels on one host and scenario
    manifest.json                      what was rendered from which files (incremental builds)

A run's page is rendered again only when its files changed (size and mtime of run.json
and samples.jsonl) or its status did (a ``running`` run whose process is gone reads
``abandoned``); ``full=True`` renders everything. Trend pages are drawn from the
headline figures kept in the manifest, so they cost no reading of samples. A kernel pair
is compared again only when one of its runs changed. Change points are found by
E-Divisive (``bench.analysis.changepoint``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import __version__
from bench.errors import ResultsError
from bench.results import (
    RUN_FILE,
    SAMPLES_FILE,
    find_run_dirs,
    read_run,
    safe_component,
    write_text_atomic,
)

SITE_SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
PLOTLY_ASSET = "assets/plotly.min.js"
# The figures a trend page follows per backend, with their unit and title.
TREND_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("startup_median_s", "s", "Startup to READY: median of the run"),
    ("startup_p95_s", "s", "Startup to READY: p95 of the run"),
    ("pss_mib", "MiB", "PSS per idle instance: median of the run"),
    ("density_count", "instances", "Density: instances reached"),
    ("limits_enforced_fraction", "fraction", "Limits enforced: of those that apply"),
)

Progress = Callable[[str], None]


@dataclass
class PublishOutcome:
    """What a publish did: runs seen, pages rendered and kept, site size, time taken."""

    site: Path
    runs: int
    rendered: int
    kept: int
    removed: int
    pages: int
    size_bytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: where the site is and what this publish did."""
        return (
            f"site: {self.site / 'index.html'}  ({self.runs} runs: {self.rendered} "
            f"rendered, {self.kept} unchanged, {self.removed} removed; {self.pages} "
            f"pages, {self.size_bytes / 1e6:.1f} MB, {self.seconds:.1f} s)"
        )


def _fingerprint(directory: Path, status: str) -> str:
    """What a run page depends on: its files' sizes and mtimes, and its effective status."""
    parts = [status, __version__]
    for name in (RUN_FILE, SAMPLES_FILE):
        try:
            stat = (directory / name).stat()
        except FileNotFoundError:
            parts.append(f"{name}:absent")
            continue
        parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _read_manifest(site: Path) -> dict[str, Any]:
    path = site / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("schema_version") != SITE_SCHEMA_VERSION:
        return {}  # another layout: render everything again
    if data.get("bench_version") != __version__:
        return {}
    return data


def _relative(from_page: str, target: str) -> str:
    """The href from one site page (a path relative to the site root) to another."""
    depth = from_page.count("/")
    return "../" * depth + target


def run_page_path(host: str, run_id: str) -> str:
    """Where a run's page lives in the site (a path relative to the site root)."""
    return f"runs/{safe_component(host)}/{safe_component(run_id)}/index.html"


def trend_page_path(host: str, scenario: str) -> str:
    """Where the trend page of a host and scenario lives in the site."""
    return f"trends/{safe_component(host)}/{safe_component(scenario)}.html"


KERNELS_PAGE = "kernels.html"


def publish_site(
    sources: Sequence[str | Path],
    site: Path,
    *,
    full: bool = False,
    progress: Progress | None = None,
) -> PublishOutcome:
    """Build or update the site in ``site`` from every run under ``sources``."""
    from bench.ownership import effective_status

    started = time.perf_counter()
    say = progress or (lambda _text: None)
    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(site)
    old_runs: dict[str, Any] = manifest.get("runs", {})
    warnings: list[str] = []
    found: dict[str, tuple[Path, dict[str, Any], str]] = {}
    for directory in find_run_dirs(sources):
        try:
            record = read_run(directory)
        except ResultsError as exc:
            warnings.append(str(exc))
            continue
        run_id = str(record.get("run_id") or directory.name)
        if run_id in found:
            warnings.append(f"{directory}: run {run_id} also at {found[run_id][0]}; skipped")
            continue
        found[run_id] = (directory, record, effective_status(record))
    _install_assets(site)
    runs: dict[str, Any] = {}
    rendered = kept = 0
    for index, (run_id, (directory, record, status)) in enumerate(sorted(found.items())):
        fingerprint = _fingerprint(directory, status)
        previous = old_runs.get(run_id)
        page = run_page_path(_host_of(record), run_id)
        unchanged = previous is not None and previous.get("fingerprint") == fingerprint
        if unchanged and not full and (site / page).is_file():
            runs[run_id] = previous
            kept += 1
            continue
        say(f"[{index + 1}/{len(found)}] rendering {run_id}")
        try:
            runs[run_id] = _render_run(site, directory, record, status, fingerprint, page)
        except Exception as exc:  # one unreadable run must not stop the site
            warnings.append(f"{directory}: not rendered: {exc}")
            continue
        rendered += 1
    removed = 0
    for run_id, entry in old_runs.items():
        if run_id not in runs:
            removed += 1
            _remove_page(site, str(entry.get("page", "")))
    kernel_cache: dict[str, Any] = {} if full else manifest.get("kernel_pairs", {})
    kernel_pairs = _kernel_pairs(site, runs, found, kernel_cache, say, warnings)
    pages = _write_overview_pages(site, runs, kernel_pairs)
    manifest = {
        "schema_version": SITE_SCHEMA_VERSION,
        "kind": "bench-site",
        "bench_version": __version__,
        "updated_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": runs,
        "kernel_pairs": kernel_pairs,
    }
    write_text_atomic(site / MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    return PublishOutcome(
        site=site,
        runs=len(runs),
        rendered=rendered,
        kept=kept,
        removed=removed,
        pages=pages + len(runs),
        size_bytes=size,
        seconds=time.perf_counter() - started,
        warnings=warnings,
    )


def _host_of(record: dict[str, Any]) -> str:
    return str((record.get("host") or {}).get("hostname") or "unknown-host")


def _kernel_of(record: dict[str, Any]) -> str:
    return str(((record.get("host") or {}).get("kernel") or {}).get("release") or "?")


def _install_assets(site: Path) -> None:
    """plotly.js once per site (rewritten only when it differs)."""
    from bench.report.render import plotly_js

    target = site / PLOTLY_ASSET
    bundle = plotly_js()
    if target.is_file() and target.stat().st_size == len(bundle.encode("utf-8")):
        return
    write_text_atomic(target, bundle)


def _remove_page(site: Path, page: str) -> None:
    if not page.startswith("runs/"):
        return
    directory = (site / page).parent
    if directory.is_dir() and site.resolve() in directory.resolve().parents:
        shutil.rmtree(directory)


def _render_run(
    site: Path,
    directory: Path,
    record: dict[str, Any],
    status: str,
    fingerprint: str,
    page: str,
) -> dict[str, Any]:
    """Render one run's page, copy its raw files beside it; its manifest entry."""
    from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset
    from bench.analysis.headline import headline_rows
    from bench.report.build import build_report
    from bench.report.render import render_html

    dataset = load_dataset(directory, labels=ANALYSIS_LABELS)
    run_id = next(iter(dataset.runs))
    out_dir = (site / page).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    downloads = []
    for name in (RUN_FILE, SAMPLES_FILE):
        source = directory / name
        if source.is_file():
            shutil.copyfile(source, out_dir / name)
            downloads.append((name, name))
    model = build_report(
        dataset,
        links=[("all runs", _relative(page, "index.html"))],
        downloads=downloads,
        status_override={run_id: status},
    )
    host = _host_of(record)
    scenario = str((record.get("scenario") or {}).get("name") or "?")
    model.links.append(
        (f"trends: {host} / {scenario}", _relative(page, trend_page_path(host, scenario)))
    )
    write_text_atomic(site / page, render_html(model, plotly_src=_relative(page, PLOTLY_ASSET)))
    counts = record.get("counts") or {}
    return {
        "run_id": run_id,
        "page": page,
        "source": str(directory),
        "fingerprint": fingerprint,
        "host": host,
        "kernel": _kernel_of(record),
        "scenario": scenario,
        "scenario_sha256": str(record.get("scenario_sha256") or ""),
        "status": status,
        "started_at_utc": str(record.get("started_at_utc") or ""),
        "samples": counts.get("samples"),
        "failed": counts.get("failed"),
        "headline": [
            {
                "backend": row.backend,
                "mechanism": row.mechanism,
                "accel": row.accel,
                "figures": row.figures(),
            }
            for row in headline_rows(dataset.samples)
        ],
    }


# --- kernels ---------------------------------------------------------------------------


def _kernel_pairs(
    site: Path,
    runs: dict[str, Any],
    found: dict[str, tuple[Path, dict[str, Any], str]],
    cache: dict[str, Any],
    say: Progress,
    warnings: list[str],
) -> dict[str, Any]:
    """Every pair of kernels on one host and scenario, compared (cached per set of runs)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for run_id, entry in runs.items():
        groups.setdefault((entry["host"], entry["scenario_sha256"]), []).append(run_id)
    result: dict[str, Any] = {}
    for (host, sha), run_ids in sorted(groups.items()):
        kernels = sorted({runs[r]["kernel"] for r in run_ids})
        for first, second in itertools.combinations(kernels, 2):
            members = sorted(r for r in run_ids if runs[r]["kernel"] in {first, second})
            key = f"{host}|{sha[:16]}|{first}|{second}"
            digest = hashlib.sha256(
                "|".join(runs[r]["fingerprint"] for r in members).encode()
            ).hexdigest()[:20]
            cached = cache.get(key)
            if cached and cached.get("digest") == digest:
                result[key] = cached
                continue
            say(f"comparing kernels {first} and {second} on {host}")
            scenario = runs[members[0]]["scenario"]
            pair: dict[str, Any] = {
                "digest": digest,
                "host": host,
                "scenario": scenario,
                "baseline": first,
                "contender": second,
                "runs": members,
            }
            try:
                pair.update(_compare_kernels([found[r][0] for r in members], first))
            except Exception as exc:
                pair["error"] = str(exc)
                warnings.append(f"kernels {first} vs {second} on {host}: {exc}")
            result[key] = pair
    return result


def _compare_kernels(directories: Iterable[Path], baseline: str) -> dict[str, Any]:
    from bench.analysis.compare import (
        compare_dataset,
        condensed_warnings,
        format_difference,
        format_ratio,
        method_text,
        row_title,
    )
    from bench.analysis.dataset import ANALYSIS_LABELS, load_dataset
    from bench.analysis.units import format_quantity

    dataset = load_dataset(list(directories), labels=ANALYSIS_LABELS)
    report = compare_dataset(dataset, "kernel", baseline=baseline)
    rows = [
        {
            "what": row_title(row),
            "outcome": row.outcome.split(" ")[0],
            "cells": [
                format_quantity(row.median_baseline, row.unit),
                format_quantity(row.median_contender, row.unit),
                format_difference(row),
                format_ratio(row),
                f"{row.blocks_baseline}/{row.blocks_contender}",
                row.verdict,
            ],
        }
        for row in report.rows
    ]
    return {
        "rows": rows,
        "method": method_text(report),
        "notes": [*report.notes, *condensed_warnings(report)],
        "incomparable": {k: "; ".join(v) for k, v in report.incomparable.items()},
    }


# --- overview pages ----------------------------------------------------------------------


def _write_overview_pages(site: Path, runs: dict[str, Any], kernel_pairs: dict[str, Any]) -> int:
    from bench.report.pages import index_model, kernels_model, trend_model
    from bench.report.render import render_html

    pages = 0
    write_text_atomic(
        site / "index.html",
        render_html(index_model(runs, kernel_pairs), plotly_src=PLOTLY_ASSET),
    )
    pages += 1
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in runs.values():
        groups.setdefault((entry["host"], entry["scenario"]), []).append(entry)
    wanted = set()
    for (host, scenario), entries in sorted(groups.items()):
        page = trend_page_path(host, scenario)
        wanted.add(page)
        model = trend_model(host, scenario, entries, page)
        write_text_atomic(site / page, render_html(model, plotly_src=_relative(page, PLOTLY_ASSET)))
        pages += 1
    trends = site / "trends"
    if trends.is_dir():
        for stale in trends.rglob("*.html"):
            if str(stale.relative_to(site)) not in wanted:
                stale.unlink()
    write_text_atomic(
        site / KERNELS_PAGE,
        render_html(kernels_model(kernel_pairs, runs), plotly_src=PLOTLY_ASSET),
    )
    return pages + 1
