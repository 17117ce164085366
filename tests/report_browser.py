"""Drive headless Chromium (Debian's `chromium`) to load a report page: the DOM after its scripts
ran, console errors, and screenshots. No network: the page is a local file, and every host name
resolves to nothing, so a page that needs a CDN fails here as it would offline."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BUDGET_MS = 15000  # virtual time for scripts and timers (the page polls up to 10 s for its figures)


def available() -> bool:
    return Path(CHROMIUM).is_file()


def _command(profile: Path, *extra: str) -> list[str]:
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
    ]


@dataclass
class PageState:
    """What the loaded page shows: its own status attributes, errors, and figure divs' rendering."""

    status: str = ""
    figures_total: int = -1
    figures_rendered: int = -1
    errors_box: str = ""
    figures: dict[str, bool] = field(default_factory=dict)  # figure div id -> holds a Plotly SVG
    console_errors: list[str] = field(default_factory=list)


class _DomReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.state = PageState()
        self._figure: str | None = None
        self._depth = 0
        self._in_errors = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "body":
            self.state.status = attrs.get("data-report-status", "")
            self.state.figures_total = int(attrs.get("data-figures-total", -1))
            self.state.figures_rendered = int(attrs.get("data-figures-rendered", -1))
        if tag == "pre" and attrs.get("id") == "report-errors":
            self._in_errors = True
        if tag == "div" and "plotly-graph-div" in classes and self._figure is None:
            self._figure, self._depth = attrs.get("id", "?"), 0
            self.state.figures[self._figure] = False
        if self._figure is not None:
            if tag == "div":
                self._depth += 1
            if "main-svg" in classes:
                self.state.figures[self._figure] = True

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_errors = False
        if self._figure is not None and tag == "div":
            self._depth -= 1
            if self._depth == 0:
                self._figure = None

    def handle_data(self, data):
        if self._in_errors:
            self.state.errors_box += data


class _Sources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.sources.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.sources.append(attrs["href"])


def external_sources(html: str) -> list[str]:
    """Every <script src> and <link href> of a page: what a browser would fetch to run it."""
    parser = _Sources()
    parser.feed(html)
    return parser.sources


def _run(page: Path, workdir: Path, extra: list[str], timeout: int) -> subprocess.CompletedProcess:
    profile = workdir / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    proc = subprocess.run(
        _command(profile, f"--virtual-time-budget={BUDGET_MS}", *extra, "--dump-dom", page.resolve().as_uri()),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if not proc.stdout.strip():
        raise RuntimeError(f"chromium printed no DOM (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def _console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line and ("Uncaught" in line or "Error" in line or "error" in line)
    ]


def load(
    page: Path, workdir: Path, screenshot: Path | None = None, size: tuple[int, int] = (1400, 3000), timeout: int = 120
) -> PageState:
    """Open `page`, let its scripts run, read the resulting DOM and console; with `screenshot`,
    the same launch also saves a PNG of the window (`size` in pixels)."""
    extra = [f"--window-size={size[0]},{size[1]}", f"--screenshot={screenshot}"] if screenshot else []
    proc = _run(page, workdir, extra, timeout)
    if screenshot is not None and not screenshot.is_file():
        raise RuntimeError(f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    reader = _DomReader()
    reader.feed(proc.stdout)
    reader.state.console_errors = _console_errors(proc.stderr)
    return reader.state


# Posts back from inside the sandboxed frame once the report has settled (or after 12 s).
_FRAME_REPORTER = """<script>(function wait(started) {
  var status = document.body.dataset.reportStatus;
  if (status === "loading" && Date.now() - started < 12000) {
    setTimeout(function () { wait(started); }, 100);
    return;
  }
  var figures = {};
  document.querySelectorAll(".plotly-graph-div").forEach(function (d) {
    figures[d.id] = !!d.querySelector(".main-svg");
  });
  parent.postMessage({status: status, errors: window.reportErrors || [], figures: figures}, "*");
})(Date.now());</script>"""

_VIEWER = """<!DOCTYPE html><html><body><pre id="result">{}</pre><script>
window.addEventListener("message", function (e) {
  document.getElementById("result").textContent = JSON.stringify(e.data);
});
var frame = document.createElement("iframe");
frame.sandbox = "allow-scripts";
frame.src = URL.createObjectURL(new Blob([PAGE_TEXT], {type: "text/html"}));
document.body.appendChild(frame);
</script></body></html>"""


def load_as_mlflow_shows_it(page: Path, workdir: Path, timeout: int = 120) -> dict:
    """Open `page` as the MLflow UI's artifact view shows an HTML artifact (mlflow 3.17,
    ShowArtifactHtmlView): its text as a blob: URL in an <iframe sandbox="allow-scripts">, where
    only inline scripts can run. Returns what the page reported from inside the frame: status,
    errors and figure id -> rendered ({} when it reported nothing), plus the console errors."""
    text = page.read_text(encoding="utf-8").replace("</body>", _FRAME_REPORTER + "</body>", 1)
    viewer = workdir / "mlflow-viewer.html"
    # a JS string literal; "</" escaped so that the page's own </script> tags do not end ours
    viewer.write_text(_VIEWER.replace("PAGE_TEXT", json.dumps(text).replace("</", "<\\/")), encoding="utf-8")
    # Chromium puts a sandboxed frame in a renderer process of its own, where timers run in real
    # time while the viewer's virtual time races to the budget: a frame that reports from a
    # setTimeout (a report still rendering its figures, as on a loaded machine) never got its
    # message in before the DOM was dumped. One process puts the frame under the same virtual clock.
    proc = _run(viewer, workdir, ["--single-process"], timeout)
    match = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    result = json.loads(html.unescape(match.group(1))) if match else {}
    result["console_errors"] = _console_errors(proc.stderr)
    return result
