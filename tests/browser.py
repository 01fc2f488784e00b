"""Open pages in real headless Chromium and say what happened, over the DevTools protocol.

Test-only code (the package never drives a browser).

Chromium is driven through ``--remote-debugging-pipe`` (DevTools messages as
NUL-terminated JSON on file descriptors 3 and 4), so no websocket library and no TCP
port are needed. ``check_report`` loads the file, waits for every plot's promise,
and returns what a person would see and what went wrong: console errors and warnings,
uncaught exceptions, network requests other than the file itself, JavaScript dialogs
(an ``alert`` from an injected script), plot divs with and without rendered SVG, and
optionally a full-page screenshot. Used by the report tests; useful by hand too.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-debugging-pipe",
    "--enable-logging=stderr",
)
VIEWPORT = (1400, 900)

_PLOTS_READY = "window.benchPlotsReady || Promise.resolve({plots: 0, errors: []})"
# Evaluated once the plots settled: the page's width against the viewport, and where the
# summary ends (its bottom edge in CSS pixels from the top of the page).
_LAYOUT_PROBE = """
(function () {
  var summary = document.querySelector("#summary");
  var headline = document.querySelector("#summary table.headline");
  var tall = Array.from(document.querySelectorAll("td")).filter(function (td) {
    var lines = td.getBoundingClientRect().height / parseFloat(getComputedStyle(td).lineHeight || 18);
    return td.offsetParent !== null && !td.closest("details:not([open])") && lines > 4.5;
  }).map(function (td) { return td.textContent.slice(0, 60); });
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
          bodyScrollWidth: document.body.scrollWidth,
          summaryBottom: summary ? summary.getBoundingClientRect().bottom + window.scrollY : null,
          headlineBottom: headline ? headline.getBoundingClientRect().bottom + window.scrollY : null,
          tallCells: tall};
})()
"""
# Evaluated in the page once the plots settled: each plot div and what it contains.
_PLOT_PROBE = """
Array.from(document.querySelectorAll("div.plot")).map(function (div) {
  var svg = div.querySelector("svg.main-svg");
  return {id: div.id, svg: svg !== null,
          traces: div.querySelectorAll("g.trace, g.points, g.boxlayer path").length,
          width: div.getBoundingClientRect().width};
})
"""


class BrowserError(RuntimeError):
    """Chromium could not be started or stopped answering."""


@dataclass
class PageCheck:
    """What loading one report in Chromium showed."""

    url: str
    plots: list[dict[str, Any]] = field(default_factory=list)
    plot_errors: list[str] = field(default_factory=list)
    console: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    body_text: str = ""
    text_content: str = ""  # all text, also inside closed details elements
    screenshot: Path | None = None
    load_seconds: float = 0.0
    viewport: tuple[int, int] = VIEWPORT
    layout: dict[str, Any] = field(default_factory=dict)
    allowed_root: str = ""

    @property
    def console_errors(self) -> list[str]:
        """Console messages of level error or warning, and error log entries."""
        found = [
            str(m.get("text"))
            for m in self.console
            if m.get("type") in {"error", "warning", "assert"}
        ]
        found += [
            str(e.get("text")) for e in self.log_entries if e.get("level") in {"error", "warning"}
        ]
        return found

    @property
    def foreign_requests(self) -> list[str]:
        """Requests for anything but local files under ``allowed_root`` (the page itself)."""
        root = self.allowed_root or self.url
        return [u for u in self.requests if not (u == self.url or u.startswith(root))]

    @property
    def overflows(self) -> bool:
        """True when the page is wider than the viewport (horizontal scrolling)."""
        return int(self.layout.get("scrollWidth", 0)) > int(self.layout.get("innerWidth", 0))

    @property
    def plots_without_svg(self) -> list[str]:
        """Ids of plot divs that did not render an SVG."""
        return [str(p.get("id")) for p in self.plots if not p.get("svg")]


def find_chromium() -> str | None:
    """Path of a Chromium binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _above(fd: int, lowest: int) -> int:
    """A duplicate of ``fd`` numbered at least ``lowest``; the original is closed."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


class _DevToolsPipe:
    """DevTools protocol over a child's fds 3 (commands in) and 4 (replies and events out)."""

    def __init__(self, binary: str, profile: Path, log_path: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # The child's ends move above fd 10 so they cannot collide with 3 and 4.
        to_child_r, from_child_w = _above(to_child_r, 10), _above(from_child_w, 10)
        # bash (dash takes single-digit fds only) puts our pipe ends on fds 3 and 4.
        command = " ".join(
            [
                'exec "$0" "$@"',
                f"3<&{to_child_r}",
                f"4>&{from_child_w}",
                f"{to_child_r}<&-",
                f"{from_child_w}>&-",
            ]
        )
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", command, binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=(to_child_r, from_child_w),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        return self._next_id

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str = "",
        timeout_s: float = 30.0,
    ) -> dict[str, Any]:
        """Send a command and wait for its reply (events meanwhile are kept)."""
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._receive(deadline - time.monotonic(), method)
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message)

    def wait_event(self, method: str, session: str, timeout_s: float) -> dict[str, Any]:
        """Wait for an event (also one already received)."""
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._receive(deadline - time.monotonic(), method)
            if "id" not in message:
                self._event(message)
                if message.get("method") == method and message.get("sessionId") == session:
                    return message

    def _event(self, message: dict[str, Any]) -> None:
        if "method" in message:
            self.events.append(message)
            if message["method"] == "Page.javascriptDialogOpening":
                # An open dialog blocks the page: record it and dismiss it.
                self.send("Page.handleJavaScriptDialog", {"accept": False}, message["sessionId"])

    def _receive(self, timeout_s: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if timeout_s <= 0:
                raise BrowserError(f"Chromium did not answer {waiting_for} in time")
            started = time.monotonic()
            ready, _, _ = select.select([self._from_child], [], [], timeout_s)
            timeout_s -= time.monotonic() - started
            if not ready:
                continue
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the DevTools pipe ({waiting_for})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                try:
                    self.send("Browser.close")
                    self.process.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    self.process.kill()
                    self.process.wait(timeout=10)
        finally:
            for fd in (self._to_child, self._from_child):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._log.close()


def check_report(
    report: Path,
    *,
    screenshot: Path | None = None,
    binary: str | None = None,
    timeout_s: float = 60.0,
    log_path: Path | None = None,
    screenshot_height_max: int = 16000,
    viewport: tuple[int, int] = VIEWPORT,
    full_page: bool = True,
    allowed_root: Path | None = None,
) -> PageCheck:
    """Load one page in headless Chromium and return what happened (see the module doc)."""
    return check_pages(
        [(report, viewport, screenshot)],
        binary=binary,
        timeout_s=timeout_s,
        log_path=log_path,
        screenshot_height_max=screenshot_height_max,
        full_page=full_page,
        allowed_root=allowed_root,
    )[0]


def check_pages(
    pages: list[tuple[Path, tuple[int, int], Path | None]],
    *,
    binary: str | None = None,
    timeout_s: float = 60.0,
    log_path: Path | None = None,
    screenshot_height_max: int = 16000,
    full_page: bool = True,
    allowed_root: Path | None = None,
) -> list[PageCheck]:
    """Load each (page, viewport, screenshot) in one Chromium, each in a fresh tab."""
    chromium = binary or find_chromium()
    if chromium is None:
        raise BrowserError("no Chromium found on PATH (Debian: apt-get install chromium)")
    checks = []
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
        log = log_path or Path(profile) / "chromium.log"
        pipe = _DevToolsPipe(chromium, Path(profile) / "profile", log)
        try:
            for page, viewport, screenshot in pages:
                check = PageCheck(Path(page).resolve().as_uri(), viewport=viewport)
                if allowed_root is not None:
                    check.allowed_root = Path(allowed_root).resolve().as_uri() + "/"
                session = _load(
                    pipe, check, timeout_s, screenshot, screenshot_height_max, full_page
                )
                _collect_events(check, [e for e in pipe.events if e.get("sessionId") == session])
                checks.append(check)
        finally:
            pipe.close()
    return checks


def _load(
    pipe: _DevToolsPipe,
    check: PageCheck,
    timeout_s: float,
    screenshot: Path | None,
    screenshot_height_max: int,
    full_page: bool,
) -> str:
    """Open ``check.url`` in a new tab, wait for its plots, fill ``check``; the session id."""
    url = check.url
    target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout_s=timeout_s)
    attached = pipe.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
    session = str(attached["sessionId"])
    for domain in ("Runtime", "Log", "Network", "Page"):
        pipe.call(f"{domain}.enable", session=session)
    width, height = check.viewport
    pipe.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        session,
    )
    started = time.monotonic()
    pipe.call("Page.navigate", {"url": url}, session)
    pipe.wait_event("Page.loadEventFired", session, timeout_s)
    settled = pipe.call(
        "Runtime.evaluate",
        {
            "expression": _PLOTS_READY,
            "awaitPromise": True,
            "returnByValue": True,
        },
        session,
        timeout_s,
    )
    check.load_seconds = time.monotonic() - started
    outcome = settled.get("result", {}).get("value") or {}
    check.plot_errors = [str(e) for e in outcome.get("errors", [])]
    probe = pipe.call(
        "Runtime.evaluate", {"expression": _PLOT_PROBE, "returnByValue": True}, session
    )
    check.plots = list(probe.get("result", {}).get("value") or [])
    text = pipe.call(
        "Runtime.evaluate",
        {"expression": "document.body.innerText", "returnByValue": True},
        session,
    )
    check.body_text = str(text.get("result", {}).get("value") or "")
    content = pipe.call(
        "Runtime.evaluate",
        {"expression": "document.body.textContent", "returnByValue": True},
        session,
    )
    check.text_content = str(content.get("result", {}).get("value") or "")
    layout = pipe.call(
        "Runtime.evaluate", {"expression": _LAYOUT_PROBE, "returnByValue": True}, session
    )
    check.layout = dict(layout.get("result", {}).get("value") or {})
    if screenshot is not None:
        check.screenshot = _screenshot(
            pipe, session, screenshot, screenshot_height_max, check.viewport, full_page
        )
    pipe.call("Target.closeTarget", {"targetId": target["targetId"]})
    return session


def _screenshot(
    pipe: _DevToolsPipe,
    session: str,
    path: Path,
    max_height: int,
    viewport: tuple[int, int],
    full_page: bool,
) -> Path:
    metrics = pipe.call("Page.getLayoutMetrics", session=session)
    size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
    height = min(int(size.get("height", viewport[1])), max_height) if full_page else viewport[1]
    shot = pipe.call(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": full_page,
            "clip": {"x": 0, "y": 0, "width": viewport[0], "height": height, "scale": 1},
        },
        session,
        timeout_s=60,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _collect_events(check: PageCheck, events: list[dict[str, Any]]) -> None:
    for event in events:
        method = event.get("method")
        params = event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            check.console.append({"type": params.get("type"), "text": text})
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = (details.get("exception") or {}).get("description") or details.get("text")
            check.exceptions.append(str(description))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            check.log_entries.append(
                {
                    "level": entry.get("level"),
                    "source": entry.get("source"),
                    "text": entry.get("text"),
                }
            )
        elif method == "Network.requestWillBeSent":
            check.requests.append(str(params.get("request", {}).get("url")))
        elif method == "Page.javascriptDialogOpening":
            check.dialogs.append(f"{params.get('type')}: {params.get('message')}")
