"""HTML reports: content per section, self-contained, escaped, and opened in real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis.dataset import Dataset, load_dataset
from bench.report import write_report, write_run_report
from bench.report.build import NOT_MEASURED, Cell, Table, build_report
from bench.report.render import plotly_js, render_html
from tests.browser import check_pages, find_chromium
from tests.conftest import DATA, REPO, skip_or_fail

RUNS = DATA / "runs"
FIXTURE_RUNS = sorted(p.parent for p in (RUNS / "fixture").rglob("run.json"))
XSS_RUN = next(p.parent for p in (RUNS / "xss").rglob("run.json"))
TCG_RUN = next(p.parent for p in (RUNS / "tcg").rglob("run.json"))
QUICK_RUN = next(p.parent for p in (RUNS / "current").rglob("run.json") if "-quick-" in str(p))
MINI_RUN = next(p.parent for p in (RUNS / "current").rglob("run.json") if "-mini-all-" in str(p))
VIEWPORTS = ((1400, 900), (800, 900))


def _text(cell: object) -> str:
    return cell.text if isinstance(cell, Cell) else str(cell)


ARTIFACTS = REPO / "tests" / "artifacts"
XSS_NAME = "<script>alert(1)</script>"
XSS_DESCRIPTION = "<img src=x onerror=alert(2)>"
_JSON_BLOCK = re.compile(r'<script type="application/json" id="[^"]+">(.*?)</script>', re.S)


def test_every_metric_section_renders_from_real_runs() -> None:
    model = build_report(load_dataset(FIXTURE_RUNS))
    sections = {s.id: s for s in model.sections}
    assert [s.id for s in model.sections] == [
        "startup",
        "memory",
        "density",
        "limits",
        "backends",
        "comparison",
        "stability",
        "facts",
        "scenario",
    ]
    assert {s.id for s in model.sections if s.collapsed} == {"stability", "facts", "scenario"}
    for name in ("startup", "backends", "memory", "density", "limits", "comparison"):
        assert sections[name].measured, name
    kinds = {name: [i.kind for i in sections[name].items] for name in sections}
    assert kinds["startup"].count("plot") == 4
    assert "plot" in kinds["memory"] and "plot" in kinds["density"] and "plot" in kinds["limits"]
    limits_table = sections["limits"].items[0]
    assert isinstance(limits_table, Table)
    assert {_text(row[4]) for row in limits_table.rows} <= {"yes", "NO", "n/a", "NO (check failed)"}
    (comparison,) = [i for i in sections["comparison"].items if isinstance(i, Table)]
    assert {"ratio [95% CI]", "difference", "margin", "MDE", "verdict"} <= set(comparison.columns)
    verdict = comparison.columns.index("verdict")
    assert {_text(r[verdict]) for r in comparison.rows} == {
        "inconclusive: run-to-run noise unknown"
    }
    notes = [i.text for i in sections["comparison"].items if i.kind == "note"]  # type: ignore[union-attr]
    assert any("no calibration for this host" in n for n in notes), "the margin's source is said"
    warnings = [i for i in sections["stability"].items if i.kind == "note" and i.level == "warn"]  # type: ignore[union-attr]
    assert 0 < len(warnings) <= 5, "at most a few warnings per report"


def test_order_and_colours_come_from_the_mechanism(tmp_path: Path) -> None:
    from tests.synthetic_runs import blocks, write_run

    rng = np.random.default_rng(1)
    run = write_run(
        tmp_path,
        "mechanisms",
        {
            "zz-microvm": blocks(rng, 2, centre=0.2),
            "aa-sandbox": blocks(rng, 2, centre=0.3),
            "docker": blocks(rng, 2),
            "process": blocks(rng, 2, centre=0.008),
        },
    )
    samples = run / "samples.jsonl"
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    for line in lines:
        line["labels"]["mechanism"] = {"zz-microvm": "vm", "aa-sandbox": "sandbox"}.get(
            line["backend"], line["labels"]["mechanism"]
        )
    samples.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    model = build_report(load_dataset(run))
    startup = next(s for s in model.sections if s.id == "startup")
    plots = [json.loads(i.figure_json) for i in startup.items if i.kind == "plot"]  # type: ignore[union-attr]
    box = next(p for p in plots if p["data"][0]["type"] == "box")
    names = [trace["name"] for trace in box["data"]]
    assert names == ["process", "docker", "aa-sandbox", "zz-microvm"], "native first, VMs last"
    colours = [trace["marker"]["color"] for trace in box["data"]]
    assert len(set(colours)) == 4
    backends = next(s for s in model.sections if s.id == "backends")
    (table,) = [i for i in backends.items if isinstance(i, Table)]
    contenders = [_text(row[0]).split(" ")[1] for row in table.rows]
    assert contenders == ["docker", "aa-sandbox", "zz-microvm"]


def test_absent_metrics_say_not_measured() -> None:
    sections = build_report(load_dataset(XSS_RUN)).sections
    absent = {s.id: s for s in sections if not s.measured}
    assert set(absent) == {"backends", "memory", "density", "limits", "comparison"}
    for name in ("memory", "density", "limits"):
        (note,) = absent[name].items
        assert NOT_MEASURED in note.text  # type: ignore[union-attr]


def test_tcg_is_said_loudly() -> None:
    model = build_report(load_dataset(TCG_RUN))
    alert = model.banners[0]
    assert alert.level == "alert" and "TCG" in alert.text and "NOT KVM" in alert.text
    assert ("VMs", "TCG") in model.summary
    assert model.headline is not None
    accel = {r[0].sub for r in model.headline.rows if isinstance(r[0], Cell)}
    assert "vm · TCG" in accel and "native" in accel


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    outcome = write_report([XSS_RUN, TCG_RUN], tmp_path / "r.html")
    html = outcome.path.read_text()
    bundle = plotly_js()
    assert html.count(bundle[:200]) == 1, "plotly.js inlined exactly once"
    assert outcome.size_bytes < len(bundle) + 400_000
    page = html.replace(bundle, "")  # plotly.js names CDNs for plot types never used here
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=", page, re.I), "nothing loaded by URL"
    assert "<link" not in page and "http" not in page.replace("http-equiv", "")
    assert XSS_NAME not in html and XSS_DESCRIPTION not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    blocks = _JSON_BLOCK.findall(html)
    assert len(blocks) == outcome.plots > 0
    for block in blocks:
        assert "<" not in block and ">" not in block
        assert json.loads(block)["data"]


def test_large_series_are_aggregated(tmp_path: Path) -> None:
    base = load_dataset(TCG_RUN)
    rng = np.random.default_rng(3)
    size = 300_000
    backends = np.array(["process", "docker", "libvirt"])[rng.integers(0, 3, size)]
    scale = np.where(backends == "process", 0.008, np.where(backends == "docker", 0.1, 2.0))
    value = rng.lognormal(0, 0.2, size) * scale
    run_id = next(iter(base.runs))
    frame = pd.DataFrame(
        {
            "run_id": run_id,
            "metric": "startup",
            "backend": backends,
            "case": "startup",
            "value": value,
            "unit": "s",
            "ok": True,
            "warmup": False,
            "stage.create_s": value * 0.1,
            "stage.start_s": value * 0.5,
            "stage.to_ready_s": value,
            "label.accel": np.where(backends == "libvirt", "tcg", "n/a"),
        }
    )
    started = time.perf_counter()
    outcome = write_report(Dataset(frame, base.runs), tmp_path / "big.html")
    elapsed = time.perf_counter() - started
    assert outcome.size_bytes < len(plotly_js()) + 600_000, "plots carry aggregates, not samples"
    assert elapsed < 30


def test_cli_report_default_path_and_run_report(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "report", str(XSS_RUN)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    expected = tmp_path / "reports" / f"{XSS_RUN.name}.html"
    assert expected.is_file() and str(expected.relative_to(tmp_path)) in result.stdout
    outcome = write_run_report(TCG_RUN, tmp_path / "out")
    assert outcome.path == tmp_path / "out" / f"{TCG_RUN.name}.html"
    missing = subprocess.run(
        [sys.executable, "-m", "bench", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no such run directory" in missing.stderr


def test_report_in_real_headless_chromium(tmp_path: Path) -> None:
    """At 1400 and 800 px: no errors, no network, no overflow, summary in the first screen."""
    if find_chromium() is None:
        skip_or_fail("chromium is not installed (ansible/up.sh installs Debian's chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    quick = tmp_path / "quick.html"
    write_report(QUICK_RUN, quick)
    everything = tmp_path / "all.html"
    outcome = write_report(
        [*FIXTURE_RUNS, MINI_RUN, TCG_RUN, XSS_RUN], everything, title=f"all runs {XSS_NAME}"
    )
    pages: list[tuple[Path, tuple[int, int], Path | None]] = [
        (quick, viewport, ARTIFACTS / f"quick-{viewport[0]}.png") for viewport in VIEWPORTS
    ] + [(everything, viewport, None) for viewport in VIEWPORTS]
    checks = check_pages(pages, full_page=False, log_path=ARTIFACTS / "chromium.log")
    for check in checks:
        where = f"{check.url} at {check.viewport}"
        assert check.exceptions == [], where
        assert check.console_errors == [], where
        assert check.foreign_requests == [], f"{where}: the report must not touch the network"
        assert check.dialogs == [], f"{where}: an injected script ran"
        assert check.plot_errors == [] and check.plots_without_svg == [], where
        assert all(p["traces"] > 0 and p["width"] > 300 for p in check.plots), where
        assert not check.overflows, f"{where}: horizontal overflow {check.layout}"
        assert check.layout["tallCells"] == [], f"{where}: rows taller than 3 lines"
    for check in checks[:2]:  # the quick report: its whole summary in the first screen
        assert check.layout["summaryBottom"] <= check.viewport[1], check.layout
        assert "startup to READY" in check.body_text and "qemu-microvm" in check.body_text
    assert len(checks[2].plots) == outcome.plots > 10
    body = checks[2].text_content
    assert XSS_NAME in body and XSS_DESCRIPTION in body, "hostile text shown as text"
    assert "NOT KVM" in body
    assert checks[2].layout["headlineBottom"] <= checks[2].viewport[1], "summary table first"
    assert (ARTIFACTS / "quick-1400.png").stat().st_size > 20_000
    (ARTIFACTS / "report.html").write_bytes(everything.read_bytes())


def test_summary_rows_answer_per_backend() -> None:
    """One row per backend with absolute figures and multiples of native; n/a is not a failure."""
    model = build_report(load_dataset(MINI_RUN))
    assert model.headline is not None
    columns = model.headline.columns
    assert columns[0] == "backend · accel"
    memory = next(i for i, c in enumerate(columns) if c.startswith("memory per idle instance"))
    density_at = next(i for i, c in enumerate(columns) if c.startswith("density"))
    limits = next(i for i, c in enumerate(columns) if c.startswith("limits enforced"))
    rows = {_text(row[0]): row for row in model.headline.rows}
    assert list(rows) == ["process", "docker", "qemu-microvm"], "native first, VMs last"
    docker_memory = rows["docker"][memory]
    assert isinstance(docker_memory, Cell) and docker_memory.text.endswith("MiB")
    assert docker_memory.sub.startswith("+") and docker_memory.sub.endswith("x")
    assert "MemAvailable slope over native" in docker_memory.detail
    vm_limits = rows["qemu-microvm"][limits]
    assert isinstance(vm_limits, Cell)
    assert "n/a" in vm_limits.sub and "not applicable" in vm_limits.detail
    density = rows["docker"][density_at]
    assert isinstance(density, Cell) and density.sub.startswith("max_count")
    for row in model.headline.rows:
        for cell in row:
            assert "-" not in _text(cell)[:1] or _text(cell) == "-", "no negative headline figure"


def test_startup_split_sums_to_the_median_and_post_ready_is_apart() -> None:
    from bench.report import figures

    model = build_report(load_dataset(QUICK_RUN))
    startup = next(s for s in model.sections if s.id == "startup")
    plots = [json.loads(i.figure_json) for i in startup.items if i.kind == "plot"]  # type: ignore[union-attr]
    split = plots[0]
    assert "% of the median to READY" in split["layout"]["xaxis"]["title"]["text"]
    names = [t["name"] for t in split["data"]]
    assert not any("exit" in n or "remove" in n or "teardown" in n for n in names)
    assert any("kernel" in n for n in names) and any("VMM" in n for n in names)
    for index, backend in enumerate(split["data"][0]["y"]):
        total = sum(t["x"][index] or 0 for t in split["data"])
        assert abs(total - 100) < 0.1, backend
    after = next(p for p in plots if "After READY" in p["layout"]["title"]["text"])
    assert {t["name"] for t in after["data"]} <= {n for _, n in figures.AFTER_READY_SEGMENTS}
    frame = load_dataset(QUICK_RUN).samples
    vm = frame[(frame["backend"] == "qemu-microvm") & ~frame["warmup"]]
    median, parts = figures.startup_split(vm)
    assert abs(sum(parts.values()) - median) < 1e-9
    assert median == vm["value"].median()
    boot = next(i for i in startup.items if isinstance(i, Table) and "kernel" in i.columns)
    assert [_text(r[0]) for r in boot.rows] == ["libvirt", "qemu-microvm"]


def test_every_axis_has_a_unit_and_memory_is_on_a_log_axis() -> None:
    model = build_report(load_dataset(MINI_RUN))
    for plot in model.plots:
        figure = json.loads(plot.figure_json)
        for axis in ("xaxis", "yaxis"):
            title = figure["layout"][axis]["title"]["text"]
            assert title, (figure["layout"]["title"]["text"], axis)
    memory = next(s for s in model.sections if s.id == "memory")
    log = json.loads(next(i for i in memory.items if i.kind == "plot").figure_json)  # type: ignore[union-attr]
    assert log["layout"]["xaxis"]["type"] == "log" and log["layout"]["xaxis"]["tickvals"]
    density = next(s for s in model.sections if s.id == "density")
    ramps = [json.loads(i.figure_json) for i in density.items if i.kind == "plot"]  # type: ignore[union-attr]
    startup = ramps[0]
    assert any("p99 so far" in t["name"] for t in startup["data"])
    assert startup["layout"]["shapes"], "the SLO stop rule is drawn"
    assert any("stop:" in a["text"] for a in startup["layout"]["annotations"])
    limits = next(s for s in model.sections if s.id == "limits")
    table = limits.items[0]
    assert isinstance(table, Table)
    derived = [c for row in table.rows for c in row if isinstance(c, Cell) and "runtime" in c.sub]
    assert derived and all("calibrated" in c.detail for c in derived), "the VM limit's derivation"


def test_render_is_deterministic_apart_from_the_timestamp() -> None:
    dataset = load_dataset(XSS_RUN)
    first, second = build_report(dataset), build_report(dataset)
    second.generated_at_utc = first.generated_at_utc
    assert render_html(first) == render_html(second)


def test_the_labels_analysis_reads_are_all_the_report_needs() -> None:
    """write_report loads only ANALYSIS_LABELS: the page must equal one built from every label."""
    from bench.analysis.dataset import ANALYSIS_LABELS

    for run in (MINI_RUN, QUICK_RUN):
        full, slim = (
            build_report(load_dataset(run, labels=labels)) for labels in (None, ANALYSIS_LABELS)
        )
        slim.generated_at_utc = full.generated_at_utc
        assert render_html(full) == render_html(slim)
