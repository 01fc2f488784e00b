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
from bench.report.browser import check_report, find_chromium
from bench.report.build import NOT_MEASURED, Table, build_report
from bench.report.render import plotly_js, render_html
from tests.conftest import DATA, REPO, skip_or_fail

RUNS = DATA / "runs"
FIXTURE_RUNS = sorted(p.parent for p in (RUNS / "fixture").rglob("run.json"))
XSS_RUN = next(p.parent for p in (RUNS / "xss").rglob("run.json"))
TCG_RUN = next(p.parent for p in (RUNS / "tcg").rglob("run.json"))
ARTIFACTS = REPO / "tests" / "artifacts"
XSS_NAME = "<script>alert(1)</script>"
XSS_DESCRIPTION = "<img src=x onerror=alert(2)>"
_JSON_BLOCK = re.compile(r'<script type="application/json" id="[^"]+">(.*?)</script>', re.S)


def test_every_metric_section_renders_from_real_runs() -> None:
    model = build_report(load_dataset(FIXTURE_RUNS))
    sections = {s.id: s for s in model.sections}
    assert [s.id for s in model.sections] == [
        "facts",
        "startup",
        "backends",
        "memory",
        "density",
        "limits",
        "comparison",
        "stability",
        "scenario",
    ]
    for name in ("startup", "backends", "memory", "density", "limits", "comparison"):
        assert sections[name].measured, name
    kinds = {name: [i.kind for i in sections[name].items] for name in sections}
    assert kinds["startup"].count("plot") == 3
    assert "plot" in kinds["memory"] and "plot" in kinds["density"] and "plot" in kinds["limits"]
    limits_table = sections["limits"].items[0]
    assert isinstance(limits_table, Table)
    assert {row[6] for row in limits_table.rows} <= {"yes", "NO", "n/a"}
    (comparison,) = [i for i in sections["comparison"].items if isinstance(i, Table)]
    assert {"ratio [95% CI]", "difference", "margin", "MDE", "verdict"} <= set(comparison.columns)
    verdict = comparison.columns.index("verdict")
    assert {r[verdict] for r in comparison.rows} == {"inconclusive: run-to-run noise unknown"}
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
    box = json.loads(next(i for i in startup.items if i.kind == "plot").figure_json)  # type: ignore[union-attr]
    names = [trace["name"] for trace in box["data"]]
    assert names == ["process", "docker", "aa-sandbox", "zz-microvm"], "native first, VMs last"
    colours = [trace["marker"]["color"] for trace in box["data"]]
    assert len(set(colours)) == 4
    backends = next(s for s in model.sections if s.id == "backends")
    (table,) = [i for i in backends.items if isinstance(i, Table)]
    assert [row[2] for row in table.rows] == ["docker", "aa-sandbox", "zz-microvm"]


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
    assert ("VM accelerator", "TCG") in model.summary


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
    if find_chromium() is None:
        skip_or_fail("chromium is not installed (ansible/up.sh installs Debian's chromium)")
    report = tmp_path / "report.html"
    outcome = write_report([*FIXTURE_RUNS, TCG_RUN, XSS_RUN], report, title=f"all runs {XSS_NAME}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    check = check_report(report, screenshot=screenshot, log_path=ARTIFACTS / "chromium.log")
    assert check.exceptions == []
    assert check.console_errors == []
    assert check.foreign_requests == [], "the report must not touch the network"
    assert check.dialogs == [], "an injected script ran"
    assert check.plot_errors == []
    assert len(check.plots) == outcome.plots > 5
    assert check.plots_without_svg == []
    assert all(p["traces"] > 0 and p["width"] > 300 for p in check.plots)
    assert XSS_NAME in check.body_text and XSS_DESCRIPTION in check.body_text
    assert "NOT KVM" in check.body_text
    assert screenshot.stat().st_size > 50_000
    (ARTIFACTS / "report.html").write_bytes(report.read_bytes())


def test_render_is_deterministic_apart_from_the_timestamp() -> None:
    dataset = load_dataset(XSS_RUN)
    first, second = build_report(dataset), build_report(dataset)
    second.generated_at_utc = first.generated_at_utc
    assert render_html(first) == render_html(second)
