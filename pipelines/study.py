"""Run a study file: every fine-tune and baseline it lists that is not finished yet, then the analysis.

Usage:
    python -m pipelines.study studies/demo.yaml --plan     # the matrix, what exists, what it costs
    python -m pipelines.study studies/demo.yaml            # run what is missing (resumable)
    python -m pipelines.study studies/paper.yaml --set data=openi-csv:/data/indiana_reports.csv --allow-remote
    python -m pipelines.study studies/paper.yaml --worker-id gpu2 --claims postgresql://host/claims
    mlflow run . -e study --env-manager local -P file=studies/demo.yaml

Several workers (processes or machines) may run the same study at once: each claims a run before
training it, in a claims table (--claims, default: study-claims.db next to a SQLite tracking store;
use one shared database for several machines). Exit status: 0 all done, 1 a run failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import mlflow

from pipelines.cli import fail, setup_logging
from pipelines.config import BOOLEAN_WORDS, parse_bool
from pipelines.studies import (
    ClaimStore,
    default_claims_url,
    default_worker_id,
    estimate_cost,
    format_plan,
    load_study,
    parse_overrides,
    run_states,
    run_study,
)
from pipelines.studies.claims import DEFAULT_STALE_AFTER_S
from pipelines.tracking import check_tracking_uri, default_tracking_uri

SWITCHES: set[str] = set()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="study file, e.g. studies/demo.yaml")
    flag(parser, "--plan", "print the runs, their state and cost; run nothing")
    flag(parser, "--fail-fast", "stop at the first failed run")
    parser.add_argument("--worker-id", default="", help="name in the claims table (default: host-pid-random)")
    parser.add_argument("--claims", default="", help="SQLAlchemy URL of the claims database")
    parser.add_argument("--stale-after", type=positive_seconds, default=DEFAULT_STALE_AFTER_S,
                        help="seconds without a heartbeat after which a claimed run is taken over")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting in every run (repeatable, or ';'-separated)")
    flag(parser, "--allow-remote", "let baselines send report text to non-local endpoints (e.g. GPT-4o)")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="run only runs whose names match (shell pattern, repeatable), e.g. 'opt-350m-*'")
    flag(parser, "--no-analysis", "skip the analysis and report at the end")
    return parser


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0 (0 or less would let every worker take over every claim)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def flag(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    """A switch that also takes true/false, so MLproject parameters can set it."""
    SWITCHES.add(name)
    parser.add_argument(name, nargs="?", const=True, default=False, metavar="true|false",
                        type=lambda v: parse_bool(v, name.lstrip("-")), help=help_text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse; a bare switch never swallows the next word (`--plan studies/x.yaml` works)."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    for i, word in enumerate(words[:-1]):
        if word in SWITCHES and words[i + 1].lower() not in BOOLEAN_WORDS:
            words[i] = f"{word}=true"
    return parser.parse_args(words)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    # -- the study file, validated, and the stores
    try:
        overrides = parse_overrides(args.set) | ({"allow_remote": True} if args.allow_remote else {})
        study = load_study(args.file, overrides)
        uri = default_tracking_uri()
        check_tracking_uri(uri)
        mlflow.set_tracking_uri(uri)
        if os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run`: its experiment holds the runs
            run = mlflow.get_run(os.environ["MLFLOW_RUN_ID"])
            study.experiment = mlflow.get_experiment(run.info.experiment_id).name
        claims = ClaimStore(args.claims or default_claims_url(uri), args.stale_after)
    except (ValueError, RuntimeError) as exc:
        return fail(exc)

    # -- plan only
    if args.plan:
        costs = {run.name: estimate_cost(run) for run in study.runs}
        print(format_plan(study, run_states(study, claims), costs))
        return 0

    # -- run what is missing (under `mlflow run`, inside the run it created)
    worker = args.worker_id or default_worker_id()
    options = {"fail_fast": args.fail_fast, "post_steps": not args.no_analysis, "only": args.only}
    try:
        if os.environ.get("MLFLOW_RUN_ID"):
            with mlflow.start_run():
                mlflow.set_tags({"role": "study", "study": study.name})
                report = run_study(study, claims, worker, **options)
        else:
            report = run_study(study, claims, worker, **options)
    except ValueError as exc:  # e.g. --only matching no run
        return fail(exc)

    # -- summary
    print(f"\nStudy {study.name!r} (worker {worker}):")
    for o in report.outcomes:
        print(f"  {o.status:<9} {o.name:<34} {o.run_id or '':<32} {o.detail}")
    print("complete" if report.complete else "not complete yet: run the command again (or on another worker)")
    for note in report.post:
        print(f"  {note}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
