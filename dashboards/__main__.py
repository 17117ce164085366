"""Build the Plotly report of an analysis: one self-contained HTML page, also logged to MLflow.

Usage (one starting point; the selection flags are those of `python -m analysis.analyze`):

    python -m dashboards                                      # every checkpoint run of the store
    python -m dashboards --study paper --param epoch=100 --correction holm   # analyze, then report
    python -m dashboards --analysis-run RUN_ID                # an existing analysis run's tables
    python -m dashboards --tables outputs/analysis/analyze-20260101-120000 --log-run RUN_ID

It writes <output>/report/report.html (+ figures/, manifest.json) and logs that folder to the
analysis run as artifacts under report/. Empty strings mean "not given", so that MLproject can
pass every parameter. The store read is --tracking-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db
(which must exist). Without --reference, the reference is picked and the report says which.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from analysis.analyze import build_parser as analysis_parser
from analysis.analyze import config_from_args, open_store
from analysis.outputs import default_output_dir
from analysis.runs import AlignmentError, SelectionError
from dashboards.options import FIGURE_JS, IMPORTANCE_EVALUATORS, ReportOptions
from dashboards.paper import PAPER_LINE_MODES
from dashboards.report import report_from_analysis_run, report_from_selection, report_from_tables
from pipelines.cli import ArgumentParser, add_switch
from pipelines.runs.tracking import TrackingUnavailableError, where_to_look


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m dashboards",
        description=__doc__.split("\n")[0],
        parents=[analysis_parser()],
        conflict_handler="resolve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    source = parser.add_argument_group("starting point (default: analyze the selection first)")
    source.add_argument("--analysis-run", default="", help="report on this analysis run (role=analysis)")
    source.add_argument("--tables", default="", help="report on an analysis folder (CSV tables, summary.json)")
    source.add_argument("--log-run", default="", help="with --tables: the run to log the report to")
    add_switch(source, "--offline", "with --tables: read nothing from MLflow")
    parser.add_argument("--output", default="", help="folder for the report (default: outputs/analysis/report-<time>)")
    shown = parser.add_argument_group("what the report shows")
    shown.add_argument(
        "--paper-lines",
        default="auto",
        choices=PAPER_LINE_MODES,
        help="published values as reference lines: auto = when a run used the paper's data",
    )
    shown.add_argument(
        "--figure-js",
        default="json",
        choices=FIGURE_JS,
        help="each figure alone: json (Plotly JSON; plotly.js only in report.html), shared (HTML pages and "
        "a second plotly.min.js copy) or inline (each HTML page self-contained, 4.8 MB)",
    )
    shown.add_argument("--confusion-run", default="", help="run id whose confusion matrix shows first")
    shown.add_argument("--examples", type=int, default=3, help="example impressions shown (default 3)")
    shown.add_argument("--max-bar-runs", type=int, default=10, help="runs in the per-label F1 bars (default 10)")
    shown.add_argument("--sweep-study", action="append", default=[], help="Optuna study name(s) to draw (repeatable)")
    shown.add_argument("--sweep-storage", default="", help="Optuna storage to load them from (default: as logged)")
    shown.add_argument("--importance", default="fanova", choices=IMPORTANCE_EVALUATORS, help="importance evaluator")
    shown.add_argument("--reader-run", default="", help="reader-study analysis run (default: by study tag)")
    shown.add_argument("--title", default="", help="report title")
    return parser


def options_from_args(args: argparse.Namespace) -> ReportOptions:
    studies = tuple(s.strip() for spec in args.sweep_study for s in spec.split(",") if s.strip())
    return ReportOptions(
        paper_lines=args.paper_lines,
        figure_js=args.figure_js,
        confusion_run=args.confusion_run,
        examples=args.examples,
        max_bar_runs=args.max_bar_runs,
        sweep_studies=studies,
        sweep_storage=args.sweep_storage,
        importance=args.importance,
        reader_run=args.reader_run,
        title=args.title,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # -- configuration
    try:
        options = options_from_args(args)
        if args.analysis_run and args.tables:
            raise ValueError("give --analysis-run or --tables, not both")
        out_dir = Path(args.output) if args.output else default_output_dir("report")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # -- the report
    try:
        if not (args.tables and args.offline):
            open_store(args)
        if args.analysis_run:
            result = report_from_analysis_run(
                args.analysis_run, options, out_dir, args.log, Path(args.cache_dir)
            )
        elif args.tables:
            result = report_from_tables(
                Path(args.tables),
                options,
                out_dir,
                args.log_run or None,
                not args.offline,
                Path(args.cache_dir),
            )
        else:
            result = report_from_selection(
                config_from_args(args), options, out_dir, args.log, args.log_experiment or None
            )
    except (SelectionError, AlignmentError, FileNotFoundError, ValueError, TrackingUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # -- where it went
    for note in result.report.notes:
        if note.startswith("reference: "):
            print(note)
    print(f"report: {result.html} ({len(result.report.figures)} figures)")
    if result.run_id:
        print(f"logged to run {result.run_id}: artifacts report/report.html, report/figures/, report/tables/")
        print(where_to_look(result.run_id))
    for section in result.report.sections:
        if section.note and not section.figures:
            print(f"  {section.title}: {section.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
