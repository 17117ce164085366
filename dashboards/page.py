"""The HTML: one self-contained report page (Plotly's JavaScript embedded once) and one small page
per figure. Nothing is fetched from the network: no CDN, no web fonts.

The report page records its own health, so a browser (or a test driving one) can read it from the
DOM: every JavaScript error goes into ``#report-errors`` (shown as a red box), and after load the
body gets ``data-report-status`` = ``ok`` / ``error`` and ``data-figures-rendered`` = how many
figure divs hold a rendered Plotly SVG.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

import plotly.graph_objects as go
import plotly.io as pio

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}}

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; color: #222;
       margin: 0; background: #F6F7F9; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 26px; margin: 4px 0 6px; }
h2 { font-size: 21px; margin: 40px 0 6px; padding-top: 12px; border-top: 2px solid #E3E6EA; }
.meta { color: #555; font-size: 13px; line-height: 1.6; }
.meta code, .runid { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px; color: #777; }
nav ol { columns: 2; font-size: 14px; margin: 10px 0 0; padding-left: 22px; }
nav a { color: #0B62A4; text-decoration: none; }
figure.report-figure { margin: 18px 0 26px; }
figcaption, .caption { color: #444; font-size: 13.5px; line-height: 1.45; margin: 4px 6px 0; }
.note { font-style: italic; color: #666; margin: 8px 0; }
.notes li { color: #8A5A00; font-size: 13px; }
#report-errors { background: #FDECEA; color: #9F1D15; border: 1px solid #E6A19B; padding: 10px 14px;
                 white-space: pre-wrap; font-size: 13px; }
.table-wrap { overflow-x: auto; margin: 10px 0 4px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #E3E6EA; padding: 6px 9px; text-align: left; vertical-align: top; }
th { background: #F1F3F5; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; vertical-align: bottom; }
table.sortable th[data-order="asc"]::after { content: " ▲"; }
table.sortable th[data-order="desc"]::after { content: " ▼"; }
table.leaderboard td:nth-child(n+4) { text-align: right; white-space: nowrap; }
td.best { font-weight: 700; background: #FFF6D6; }
.ci { color: #777; font-weight: 400; font-size: 11px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.badge { background: #222; color: #fff; font-size: 10px; padding: 1px 5px; border-radius: 3px; }
table.examples td { max-width: 300px; }
"""

# First script of the page: keep every error (also of scripts and resources that fail to load).
ERROR_CAPTURE = """
window.reportErrors = [];
function showErrors() {
  var box = document.getElementById("report-errors");
  if (!box || !window.reportErrors.length) return;
  box.hidden = false;
  box.textContent = window.reportErrors.join("\\n");
}
function reportError(message) { window.reportErrors.push(String(message)); showErrors(); }
window.addEventListener("error", function (e) {
  if (e.target && e.target !== window && (e.target.src || e.target.href)) {
    reportError("failed to load " + (e.target.src || e.target.href));
  } else {
    reportError((e.message || "error") + (e.filename ? " (" + e.filename + ":" + e.lineno + ")" : ""));
  }
}, true);
window.addEventListener("unhandledrejection", function (e) {
  reportError("unhandled rejection: " + e.reason);
});
document.addEventListener("DOMContentLoaded", showErrors);
"""

# Last script: sortable tables, then the render check (polls up to 10 s for Plotly's SVGs).
PAGE_END = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var order = th.dataset.order === "desc" ? "asc" : "desc";
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = order;
      var numeric = th.dataset.kind === "num";
      var rows = Array.from(table.tBodies[0].rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
        if (x === undefined) x = a.cells[column].textContent;
        if (y === undefined) y = b.cells[column].textContent;
        if (x === "" && y !== "") return 1;
        if (y === "" && x !== "") return -1;
        var d = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return order === "asc" ? d : -d;
      });
      rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
    });
  });
});
(function checkFigures(started) {
  var divs = Array.from(document.querySelectorAll("figure.report-figure .plotly-graph-div"));
  var missing = divs.filter(function (d) { return !d.querySelector(".main-svg"); });
  document.body.dataset.figuresTotal = divs.length;
  document.body.dataset.figuresRendered = divs.length - missing.length;
  if (missing.length && Date.now() - started < 10000) {
    setTimeout(function () { checkFigures(started); }, 100);
    return;
  }
  var ids = missing.map(function (d) { return d.id; });
  if (missing.length) reportError("figures not rendered: " + ids.join(", "));
  document.body.dataset.reportStatus = window.reportErrors.length ? "error" : "ok";
})(Date.now());
"""

SHARED_JS_MISSING = """
if (!window.Plotly) {
  document.body.insertAdjacentHTML("afterbegin",
    "<p class='missing'>This figure needs <code>plotly.min.js</code> from the same folder, " +
    "which this viewer " +
    "cannot load (the MLflow UI's preview cannot). Open <code>report.html</code> one folder up, or " +
    "download the <code>report/</code> folder and open this file from it.</p>");
}
"""


@dataclass
class RenderedFigure:
    div_id: str
    file_name: str  # of the single-figure page, relative to the report folder
    title: str
    caption: str
    div: str  # Plotly's div + its script (no plotly.js)
    figure: go.Figure | None = None


@dataclass
class RenderedSection:
    key: str
    title: str
    note: str = ""
    figures: list[RenderedFigure] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)


def figure_div(fig: go.Figure, div_id: str) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def figure_title(fig: go.Figure) -> str:
    return str(fig.layout.title.text or "")


def report_page(
    title: str,
    meta: Sequence[tuple[str, str]],
    notes: Sequence[str],
    sections: Sequence[RenderedSection],
    plotly_js: str,
) -> str:
    """The whole report; `meta` values and section blocks are HTML already escaped by their makers."""
    toc = "".join(f'<li><a href="#{s.key}">{html.escape(s.title)}</a></li>' for s in sections)
    meta_html = "<br>".join(f"<b>{html.escape(k)}:</b> {v}" for k, v in meta)
    notes_html = '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>" if notes else ""
    body = []
    for number, sec in enumerate(sections, start=1):
        body.append(f'<section id="{sec.key}" data-section="{sec.key}"><h2>{number}. {html.escape(sec.title)}</h2>')
        if sec.note:
            body.append(f'<p class="note">{html.escape(sec.note)}</p>')
        for fig in sec.figures:
            body.append(
                f'<figure class="report-figure" data-figure="{fig.div_id}">{fig.div}'
                f"<figcaption>{fig.caption}</figcaption></figure>"
            )
        body += sec.blocks
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"<script>{ERROR_CAPTURE}</script>"
        f'<script type="text/javascript">{plotly_js}</script></head>'
        '<body data-report-status="loading"><main>'
        '<pre id="report-errors" hidden></pre>'
        f'<header><h1>{html.escape(title)}</h1><div class="meta">{meta_html}</div>{notes_html}'
        f"<nav><ol>{toc}</ol></nav></header>" + "".join(body) + f"</main><script>{PAGE_END}</script></body></html>\n"
    )


def figure_page(fig: RenderedFigure, plotly_script: str, shared: bool) -> str:
    """One figure alone; `plotly_script` is a <script> tag (inline bundle, or src= the shared file)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(fig.title or fig.div_id)}</title>"
        "<style>body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;"
        "margin:16px;color:#222}"
        "p{color:#444;font-size:13.5px;max-width:1100px}.missing{color:#9F1D15}</style>"
        f"{plotly_script}</head><body>"
        + (f"<script>{SHARED_JS_MISSING}</script>" if shared else "")
        + f"{fig.div}<p>{fig.caption}</p></body></html>\n"
    )
