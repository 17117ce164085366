"""Analyze fine-tune runs from the MLflow store: per-task tables, tests against a reference, ablations.

Usage (all flags optional):

    python -m analysis.analyze --experiment clinical-slm --study paper --role checkpoint \\
        --param epoch=100 --reference 'model=opt-350m' --correction holm --alpha 0.05 \\
        --output outputs/analysis/paper-e100

--param and --reference take ``key=value`` pairs separated by ';' (the tasks param holds commas);
param values are matched exactly as logged (``poison_rate=0.0``, not ``0``). --reference also
takes a run id. Empty strings mean "no filter" / "the default", so MLproject can pass defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
from analysis.stats import CORRECTIONS, DEFAULT_ALPHA


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.analyze", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="", help="MLflow experiment name (default: every experiment)")
    parser.add_argument("--study", default="", help="study tag to select (default: any)")
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
        "--output", default="", help="folder for the tables (default: outputs/analysis/analyze-<time>)"
    )
    parser.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR), help="local artifact cache, keyed by run id"
    )
    parser.add_argument(
        "--log-experiment", default="", help="experiment for the analysis run (default: reference's)"
    )
    parser.add_argument("--no-log", action="store_true", help="write the tables only, log no MLflow run")
    parser.add_argument("--include-unfinished", action="store_true", help="also read runs not FINISHED")
    parser.add_argument("--no-trajectory", action="store_true", help="skip the epoch trajectory tables")
    parser.add_argument("--no-poisoning", action="store_true", help="skip the poisoning ablation tables")
    return parser


def config_from_args(args: argparse.Namespace) -> AnalysisConfig:
    selection = RunSelection(
        experiment=args.experiment or None,
        study=args.study or None,
        role=args.role or None,
        params=parse_key_values(args.param),
        finished_only=not args.include_unfinished,
    )
    return AnalysisConfig(
        selection=selection,
        reference=ReferenceSpec.parse(args.reference),
        correction=args.correction,
        alpha=args.alpha,
        include=tuple(i.strip() for spec in args.include for i in spec.split(",") if i.strip()),
        cache_dir=Path(args.cache_dir),
        trajectory=not args.no_trajectory,
        poisoning=not args.no_poisoning,
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
        result = run_analysis(config)
    except (SelectionError, AlignmentError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # -- outputs
    out_dir = Path(args.output) if args.output else default_output_dir("analyze")
    run_id = publish(result, out_dir, log_to_mlflow=not args.no_log, experiment=args.log_experiment or None)
    print(f"{len(result.runs)} runs analyzed against reference {result.reference.run_id}")
    print(f"tables: {out_dir}" + (f"\nanalysis run: {run_id}" if run_id else ""))
    for note in result.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
