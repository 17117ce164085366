"""Blinded reader study of generated impressions: export rating sheets, then ingest the filled ones.

Usage:

    python -m analysis.reader_study export --run-a RUN_ID --run-b RUN_ID --n 50 --seed 0 \\
        --raters PK,JP --output outputs/reader_study/round1
    # give raters rating_sheet.csv / .html; keep key.json apart until they are done
    python -m analysis.reader_study ingest --key outputs/reader_study/round1/key.json \\
        --sheets pk.csv jp.csv --output outputs/reader_study/round1-results

Export reads ``predictions/impression.jsonl`` of both runs (report text from each record's
``input``, or --reports-csv with columns id, indication, findings). Ingest logs a role=analysis run.
Both actions accept every flag (empty strings mean "not given"), so that one MLproject entry point
can pass them all; each action checks the ones it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from analysis.outputs import default_output_dir
from analysis.rating_results import UNITS, SheetError, ingest_rating_sheets, publish_reader_study
from analysis.rating_sheets import ExportConfig, export_rating_sheets
from analysis.runs import DEFAULT_CACHE_DIR, PredictionStore, SelectionError
from analysis.stats import DEFAULT_ALPHA
from pipelines.cli import ArgumentParser, add_switch


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m analysis.reader_study", description=__doc__.split("\n")[0]
    )
    parser.add_argument("action", choices=("export", "ingest"),
                        help="export: write blinded rating sheets; ingest: score the filled ones")
    parser.add_argument(
        "--output", default="", help="folder for the results (default: under outputs/analysis)"
    )
    export = parser.add_argument_group("export")
    export.add_argument("--run-a", default="", help="run id of the first model (e.g. the fine-tuned SLM)")
    export.add_argument("--run-b", default="", help="run id of the second model (e.g. a baseline)")
    export.add_argument("--n", type=int, default=50, help="impressions sampled from each run (default 50)")
    export.add_argument("--seed", type=int, default=0, help="sampling and shuffling seed (default 0)")
    export.add_argument("--raters", default="rater1,rater2", help="comma-separated rater names (>= 2)")
    export.add_argument(
        "--labels", default="", help="the two models' names in the key, 'A,B' (default: model)"
    )
    export.add_argument(
        "--reports-csv", default="", help="report text (id, indication, findings) if no 'input'"
    )
    export.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="artifact cache, keyed by run id")
    both = parser.add_argument_group("export and ingest")
    both.add_argument(
        "--key", default="", help="key file: written by export (default <output>/key.json), read by ingest"
    )
    ingest = parser.add_argument_group("ingest")
    ingest.add_argument(
        "--sheets", nargs="*", default=[], help="filled rating sheets (CSV; spaces or commas)"
    )
    ingest.add_argument(
        "--unit", default="item", choices=UNITS, help="t-test on item means (default) or ratings"
    )
    ingest.add_argument(
        "--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (default 0.05)"
    )
    ingest.add_argument(
        "--log-experiment", default="", help="experiment for the analysis run (default: run A's)"
    )
    add_switch(ingest, "--log", "log an analysis run (--no-log: write the tables only)", default=True)
    return parser


def run_export(args: argparse.Namespace) -> int:
    if not args.run_a or not args.run_b:
        raise ValueError("export needs --run-a and --run-b (the two runs whose impressions are rated)")
    labels = tuple(s.strip() for s in args.labels.split(",")) if args.labels else None
    if labels is not None and len(labels) != 2:
        raise ValueError(f"--labels needs two names separated by a comma, got {args.labels!r}")
    config = ExportConfig(
        run_a=args.run_a,
        run_b=args.run_b,
        n=args.n,
        seed=args.seed,
        out_dir=Path(args.output) if args.output else default_output_dir("reader-export"),
        raters=tuple(r.strip() for r in args.raters.split(",") if r.strip()),
        labels=labels,
        reports_csv=Path(args.reports_csv) if args.reports_csv else None,
        key_path=Path(args.key) if args.key else None,
    )
    paths = export_rating_sheets(config, PredictionStore(args.cache_dir))
    print(f"rating sheet: {paths['sheet_csv']} and {paths['sheet_html']}")
    print(f"key (keep it from the raters): {paths['key']}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    sheets = [Path(s) for spec in args.sheets for s in spec.split(",") if s.strip()]
    if not args.key or not sheets:
        raise ValueError("ingest needs --key (from export) and --sheets (the filled rating sheets)")
    key_path = Path(args.key)
    tables, metrics, key = ingest_rating_sheets(key_path, sheets, args.unit, args.alpha)
    out_dir = Path(args.output) if args.output else default_output_dir("reader-study")
    run_id = publish_reader_study(
        tables, metrics, key, [key_path, *sheets], out_dir, args.log, args.log_experiment or None
    )
    for name in ("reader_summary", "reader_ttest", "reader_kappa"):
        print(tables[name].to_string(index=False))
    print(f"tables: {out_dir}" + (f"\nanalysis run: {run_id}" if run_id else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run is noise
    try:
        return run_export(args) if args.action == "export" else run_ingest(args)
    except (SheetError, SelectionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
