"""Analyze fine-tune runs from the MLflow store: per-task tables, tests against a reference, ablations.

Usage (all flags optional):

    python -m analysis.analyze --experiment clinical-slm --study paper --role checkpoint \\
        --param epoch=100 --reference 'model=opt-350m' --correction holm --alpha 0.05 \\
        --output outputs/analysis/paper-e100

--param and --reference take ``key=value`` pairs separated by ';' (the tasks param holds commas);
param values are matched exactly as logged (``poison_rate=0.0``, not ``0``). --reference also
takes a run id. Empty strings mean "no filter" / "the default", so MLproject can pass defaults.
Without --reference: the study file's (studies/<file>.yaml whose name is --study) reference, else
the default; when several runs match, the first checkpoint of the newest fine-tune (said in a note).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import yaml

from analysis.job import AnalysisConfig, publish, run_analysis
from analysis.outputs import default_output_dir
from analysis.runs import (
    DEFAULT_CACHE_DIR,
    AlignmentError,
    ReferenceSpec,
    RunSelection,
    SelectionError,
    parse_key_values,
)
from analysis.stats import CORRECTIONS, DEFAULT_ALPHA, DEFAULT_BOOTSTRAP, BootstrapSpec
from pipelines.cli import ArgumentParser, add_switch, add_tracking_uri_argument, apply_tracking_uri
from pipelines.runs import tracking

STUDY_FOLDERS = (Path("studies"), Path(__file__).resolve().parent.parent / "studies")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.analyze", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="", help="MLflow experiment name (default: every experiment)")
    parser.add_argument("--study-tag", "--study", dest="study", default="",
                        help="study tag of the runs to select (the runs' tag study=...) (default: any)")
    parser.add_argument(
        "--role", default="checkpoint", help="role tag(s), comma-separated; '' for any (default: checkpoint)"
    )
    parser.add_argument(
        "--param", action="append", default=[], help="param filter key=value[;key=value] (repeatable)"
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        help="run id(s) to add to the selection, comma-separated (repeatable)",
    )
    parser.add_argument(
        "--reference",
        default="",
        help="reference run: a run id or key=value[;...] (default: model=smollm2-135m, all three tasks)",
    )
    parser.add_argument(
        "--correction", default="none", choices=CORRECTIONS.names(), help="across labels / metrics"
    )
    parser.add_argument(
        "--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (default 0.05)"
    )
    parser.add_argument(
        "--bootstrap-resamples",
        type=int,
        default=DEFAULT_BOOTSTRAP.resamples,
        help=f"resamples of the test examples for intervals and macro-F1 tests (default {DEFAULT_BOOTSTRAP.resamples})",
    )
    parser.add_argument(
        "--bootstrap-seed", type=int, default=DEFAULT_BOOTSTRAP.seed, help="seed of the bootstrap resamples"
    )
    parser.add_argument(
        "--output", default="", help="folder for the tables (default: outputs/analysis/analyze-<time>)"
    )
    parser.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR), help="local artifact cache, keyed by run id"
    )
    parser.add_argument(
        "--log-experiment", default="", help="experiment for the analysis run (default: reference's)"
    )
    add_switch(parser, "--log", "log an analysis run (--no-log: write the tables only)", default=True)
    add_switch(parser, "--include-unfinished", "also read runs that are not FINISHED")
    add_switch(parser, "--trajectory", "write the epoch trajectory tables", default=True)
    add_switch(parser, "--poisoning", "write the poisoning ablation tables", default=True)
    add_tracking_uri_argument(parser)
    return parser


def study_reference(study: str) -> str:
    """The --reference in the analysis args of the study file named `study` (here or in the project's
    studies/ folder), or ''."""
    for folder in STUDY_FOLDERS:
        for path in sorted(folder.glob("*.y*ml")):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if not isinstance(data, dict) or str(data.get("name")) != study:
                continue
            args = [str(a) for a in ((data.get("analysis") or {}).get("args") or [])]
            return args[args.index("--reference") + 1] if "--reference" in args[:-1] else ""
    return ""


def open_store(args: argparse.Namespace) -> str:
    """Point MLflow at --tracking-uri (else $MLFLOW_TRACKING_URI, else ./mlflow.db), refusing a SQLite
    store that does not exist; prints which store is read. Raises TrackingUnavailableError."""
    apply_tracking_uri(args)
    uri = tracking.connect(must_exist=True)
    print(f"MLflow store: {tracking.shown_uri(uri)}")
    return uri


def config_from_args(args: argparse.Namespace) -> AnalysisConfig:
    selection = RunSelection(
        experiment=args.experiment or None,
        study=args.study or None,
        role=args.role or None,
        params=parse_key_values(args.param),
        finished_only=not args.include_unfinished,
    )
    reference = ReferenceSpec.parse(args.reference or (study_reference(args.study) if args.study else ""))
    return AnalysisConfig(
        selection=selection,
        reference=reference if args.reference else replace(reference, pick_first=True),
        correction=args.correction,
        alpha=args.alpha,
        include=tuple(i.strip() for spec in args.include for i in spec.split(",") if i.strip()),
        cache_dir=Path(args.cache_dir),
        trajectory=args.trajectory,
        poisoning=args.poisoning,
        bootstrap=BootstrapSpec(args.bootstrap_resamples, args.bootstrap_seed),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run is noise
    # -- configuration
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # -- analysis
    try:
        open_store(args)
        result = run_analysis(config)
    except (SelectionError, AlignmentError, tracking.TrackingUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # -- outputs
    out_dir = Path(args.output) if args.output else default_output_dir("analyze")
    run_id = publish(result, out_dir, log_to_mlflow=args.log, experiment=args.log_experiment or None)
    print(f"{len(result.runs)} runs analyzed against reference {result.reference.run_id}")
    print(f"tables: {out_dir}" + (f"\nanalysis run: {run_id}" if run_id else ""))
    for note in result.notes:
        print(f"note: {note}")
    if run_id:
        print(tracking.where_to_look(run_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
