"""Render a ReportModel to HTML: jinja2 (autoescape), plotly.js inlined once or shared.

plotly.js comes from the installed plotly package (``plotly.offline.get_plotlyjs()``), so
the page needs no network: no CDN, no fonts, no MathJax. The file is written atomically.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jinja2
import plotly.offline  # type: ignore[import-untyped]

from bench.report.build import ReportModel
from bench.results import write_text_atomic

TEMPLATE = "report.html.j2"
_SCRIPT_END = re.compile(r"</(script)", re.IGNORECASE)


@functools.cache
def plotly_js() -> str:
    """The plotly.js bundle, made safe to inline in a <script> element."""
    bundle: str = plotly.offline.get_plotlyjs()
    return _SCRIPT_END.sub(r"<\\/\1", bundle)


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )


def render_html(model: ReportModel, *, plotly_src: str | None = None) -> str:
    """The report as one HTML document.

    plotly.js is inlined unless ``plotly_src`` names a relative path to a shared copy
    (a published site ships it once).
    """
    template = _environment().get_template(TEMPLATE)
    return template.render(
        model=model, plotly_src=plotly_src, plotly_js="" if plotly_src else plotly_js()
    )


def write_html(path: Path, html: str) -> int:
    """Write the HTML atomically (parents created); return its size in bytes."""
    return write_text_atomic(Path(path), html)
