"""Build a report from an analysis, write it to a folder, and log it to the analysis run.

Three starting points, one path: the analysis tables (a folder, an analysis run's artifacts, or
a fresh analysis of a study selection) -> `gather` (run params, predictions, sweeps, ratings from
MLflow) -> `build_report` (every registered section) -> `write_report` -> `log_report`.

What is written (and logged under the run's ``report/`` artifact folder):

    report.html          every section; Plotly's JavaScript embedded once, opens offline
    figures/<section>-<name>.json   each figure alone, Plotly JSON (figure_js="json", the default)
    figures/<section>-<name>.html   or an HTML page each (figure_js "shared" or "inline")
    figures/plotly.min.js           with figure_js="shared": a second copy, which those pages load
    tables/<name>.csv    the analysis tables the report draws, linked from its header
    manifest.json        sections, figures, captions, notes (for tools and tests)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from plotly.offline import get_plotlyjs

from analysis.job import AnalysisConfig, publish, run_analysis
from analysis.runs import DEFAULT_CACHE_DIR
from dashboards.inputs import ReportInputs, download_tables, gather, read_tables
from dashboards.options import ReportOptions
from dashboards.page import (
    RenderedFigure,
    RenderedSection,
    figure_div,
    figure_page,
    figure_title,
    report_page,
)
from dashboards.runs import RunCatalog
from dashboards.sections import ReportContext, Section, report_sections
from dashboards.style import escape

log = logging.getLogger(__name__)

ARTIFACT_DIR = "report"
PLOTLY_FILE = "plotly.min.js"
TABLES_DIR = "tables"


@dataclass
class Report:
    title: str
    meta: list[tuple[str, str]]
    notes: list[str]
    sections: list[RenderedSection]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # written to tables/<name>.csv

    @property
    def figures(self) -> list[RenderedFigure]:
        return [f for s in self.sections for f in s.figures]


@dataclass
class ReportResult:
    report: Report
    folder: Path  # holds report.html, figures/, manifest.json
    run_id: str | None  # the run it was logged to

    @property
    def html(self) -> Path:
        return self.folder / "report.html"


# ---------------------------------------------------------------- build


def build_report(inputs: ReportInputs, options: ReportOptions) -> Report:
    """Run every registered section; a section that raises becomes a one-line note, not a crash."""
    runs = RunCatalog.from_tables(inputs.tables, inputs.reference_run_id, inputs.run_params)
    ctx = ReportContext(inputs, options, runs)
    sections = []
    for spec in report_sections(ctx):
        try:
            result = spec.build(ctx)
        except Exception as err:
            log.exception("report section %s failed", spec.key)
            result = Section.empty(f"This section could not be drawn ({err.__class__.__name__}: {err}).")
        rendered = RenderedSection(spec.key, spec.title, result.note, blocks=result.blocks)
        for item in result.figures:
            name = f"{spec.key}-{item.name}"
            rendered.figures.append(
                RenderedFigure(
                    f"fig-{name}",
                    f"figures/{name}.html",
                    figure_title(item.figure),
                    item.caption,
                    figure_div(item.figure, f"fig-{name}"),
                    item.figure,
                )
            )
        sections.append(rendered)
    meta = meta_of(inputs, runs) + [("Tables (CSV)", table_links(inputs.tables))]
    notes = list(inputs.summary.get("notes", []))
    return Report(title_of(inputs, options), meta, notes, sections, dict(inputs.tables))


def table_links(tables: dict[str, pd.DataFrame]) -> str:
    """Links to the report folder's copies of the analysis tables (HTML)."""
    return ", ".join(f'<a href="{TABLES_DIR}/{escape(name)}.csv">{escape(name)}</a>' for name in sorted(tables))


def title_of(inputs: ReportInputs, options: ReportOptions) -> str:
    if options.title:
        return options.title
    return f"Clinical SLM lab: study {inputs.study}" if inputs.study else "Clinical SLM lab: analysis report"


def meta_of(inputs: ReportInputs, runs: RunCatalog) -> list[tuple[str, str]]:
    params = inputs.params
    reference = runs.reference
    meta = [
        ("Generated", escape(f"{datetime.now():%Y-%m-%d %H:%M}")),
        ("Runs analyzed", escape(params.get("n_runs", str(len(inputs.summary.get("run_ids", [])))))),
    ]
    if reference is not None:
        meta.append(("Reference run", f"{escape(reference.label)} <code>{escape(reference.run_id)}</code>"))
    if inputs.analysis_run_id:
        meta.append(("Analysis run", f"<code>{escape(inputs.analysis_run_id)}</code>"))
    selection = [f"{k}={params[k]}" for k in ("experiment", "study", "role", "param_filter") if k in params]
    if selection:
        meta.append(("Selection", escape(", ".join(selection))))
    if "correction" in params:
        meta.append(("Tests", escape(f"alpha {params.get('alpha', '0.05')}, correction {params['correction']}")))
    return meta


# ---------------------------------------------------------------- write and log


def figure_file(fig: RenderedFigure, figure_js: str) -> str:
    """Where a figure alone is written, relative to the report folder (see ReportOptions.figure_js)."""
    return str(Path(fig.file_name).with_suffix(".json")) if figure_js == "json" else fig.file_name


def write_report(report: Report, folder: Path, figure_js: str = "json") -> Path:
    """report.html, figures/, tables/ and manifest.json in `folder` (created); returns report.html's path."""
    figures_dir = folder / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    plotly_js = get_plotlyjs()
    page = report_page(report.title, report.meta, report.notes, report.sections, plotly_js)
    (folder / "report.html").write_text(page, encoding="utf-8")
    (folder / TABLES_DIR).mkdir(exist_ok=True)
    for name, frame in report.tables.items():
        frame.to_csv(folder / TABLES_DIR / f"{name}.csv", index=False)
    if figure_js == "json":
        for fig in report.figures:
            (folder / figure_file(fig, figure_js)).write_text(fig.figure.to_json(), encoding="utf-8")
    elif figure_js == "shared":
        (figures_dir / PLOTLY_FILE).write_text(plotly_js, encoding="utf-8")
        script = f'<script src="{PLOTLY_FILE}"></script>'
    else:
        script = f'<script type="text/javascript">{plotly_js}</script>'
    for fig in report.figures if figure_js != "json" else ():
        (folder / fig.file_name).write_text(figure_page(fig, script, figure_js == "shared"), encoding="utf-8")
    manifest = {
        "title": report.title,
        "figure_js": figure_js,
        "sections": [
            {
                "key": s.key,
                "title": s.title,
                "note": s.note,
                "figures": [
                    {"id": f.div_id, "file": figure_file(f, figure_js), "title": f.title, "caption": f.caption}
                    for f in s.figures
                ],
            }
            for s in report.sections
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder / "report.html"


def log_report(folder: Path, run_id: str, client: MlflowClient | None = None) -> None:
    """Upload the folder as the run's ``report/`` artifacts (works on a finished run too)."""
    (client or MlflowClient()).log_artifacts(run_id, str(folder), ARTIFACT_DIR)


# ---------------------------------------------------------------- the three starting points


def report_from_tables(
    tables_dir: Path,
    options: ReportOptions,
    out_dir: Path,
    log_run: str | None = None,
    use_mlflow: bool = True,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    client: MlflowClient | None = None,
) -> ReportResult:
    """From an analysis folder; logged only to `log_run` when given. `use_mlflow` False reads
    nothing from MLflow (no run params, examples, sweeps or ratings)."""
    tables, summary = read_tables(tables_dir)
    client = client or MlflowClient() if (use_mlflow or log_run) else None
    return _finish(
        tables, summary, options, out_dir, client if use_mlflow else None, cache_dir, log_run, log_run, client
    )


def report_from_analysis_run(
    run_id: str,
    options: ReportOptions,
    out_dir: Path,
    log: bool = True,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    client: MlflowClient | None = None,
) -> ReportResult:
    """From a logged analysis run: its tables are downloaded, the report logged back to it."""
    client = client or MlflowClient()
    tables, summary = read_tables(download_tables(run_id, out_dir / "analysis", client))
    return _finish(tables, summary, options, out_dir, client, cache_dir, run_id, run_id if log else None, client)


def report_from_selection(
    config: AnalysisConfig,
    options: ReportOptions,
    out_dir: Path,
    log: bool = True,
    experiment: str | None = None,
    client: MlflowClient | None = None,
) -> ReportResult:
    """Run the analysis of a study selection first (logging its role=analysis run), then report."""
    client = client or MlflowClient()
    result = run_analysis(config, client)
    analysis_dir = out_dir / "analysis"
    run_id = publish(result, analysis_dir, log_to_mlflow=log, experiment=experiment)
    tables, summary = read_tables(analysis_dir)
    return _finish(tables, summary, options, out_dir, client, config.cache_dir, run_id, run_id, client)


def _finish(tables, summary, options, out_dir, client, cache_dir, analysis_run_id, log_run, log_client):
    inputs = gather(
        tables,
        summary,
        out_dir,
        client,
        Path(cache_dir),
        analysis_run_id,
        options.sweep_studies,
        options.sweep_storage,
        options.reader_run,
    )
    report = build_report(inputs, options)
    folder = out_dir / ARTIFACT_DIR
    write_report(report, folder, options.figure_js)
    if log_run:
        log_report(folder, log_run, log_client)
    return ReportResult(report, folder, log_run)
