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
from pathlib import Path

import mlflow

from pipelines.cli import ArgumentParser, add_switch, add_tracking_uri_argument, apply_tracking_uri, fail, setup_logging
from pipelines.runs import schema
from pipelines.runs.tracking import (
    DEFAULT_EXPERIMENT_ID,
    adopt_project_run,
    check_tracking_uri,
    default_tracking_uri,
    discard_project_run,
    where_to_look,
)
from pipelines.studies import (
    ClaimStore,
    default_claims_url,
    default_worker_id,
    estimate_cost,
    format_plan,
    load_study,
    parse_overrides,
    run_study,
)
from pipelines.studies.claims import DEFAULT_STALE_AFTER_S
from pipelines.studies.plan import DEFAULT_THROUGHPUT, plan_notes, planned_states


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("file", help="study file (a YAML list of runs), e.g. studies/demo.yaml")
    add_switch(parser, "--plan", "print the runs, their state, their cost and how they differ from the paper; "
                                 "run and write nothing")
    add_switch(parser, "--fail-fast", "stop at the first failed run")
    parser.add_argument("--worker-id", default="", help="name in the claims table ('' = host-pid-random)")
    parser.add_argument("--claims", default="",
                        help="SQLAlchemy URL of the claims database ('' = study-claims.db next to a SQLite store)")
    parser.add_argument("--stale-after", type=positive_seconds, default=DEFAULT_STALE_AFTER_S,
                        help="seconds without a heartbeat after which a claimed run is taken over (default: "
                             f"{DEFAULT_STALE_AFTER_S:g})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting in every run (repeatable, or ';'-separated)")
    add_switch(parser, "--allow-remote", "let baselines send report text to non-local endpoints (e.g. GPT-4o)")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="run only runs whose names match (shell pattern, repeatable), e.g. 'opt-350m-*'")
    add_switch(parser, "--analysis", "run the analysis and report at the end", default=True)
    parser.add_argument("--throughput", default=str(DEFAULT_THROUGHPUT), metavar="JSON",
                        help="with --plan: measured throughput for the hours estimate "
                             "(python -m benchmarks.throughput --output-json) (default: the H200's)")
    add_tracking_uri_argument(parser)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse; a bare switch never swallows the next word (`--plan studies/x.yaml` works)."""
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    apply_tracking_uri(args)
    # -- the study file, validated, and the stores
    try:
        overrides = parse_overrides(args.set) | ({"allow_remote": True} if args.allow_remote else {})
        study = load_study(args.file, overrides)
        uri = default_tracking_uri()
        check_tracking_uri(uri)
        mlflow.set_tracking_uri(uri)
        if os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run`: the experiment it was given holds the runs
            experiment_id = mlflow.get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id
            if experiment_id != DEFAULT_EXPERIMENT_ID:
                study.experiment = mlflow.get_experiment(experiment_id).name
        claims_url = args.claims or default_claims_url(uri)

        # -- plan only: reads the stores, writes nothing (under `mlflow run`, its run is deleted)
        if args.plan:
            costs = {run.name: estimate_cost(run) for run in study.runs}
            print(format_plan(study, planned_states(study, uri, claims_url, args.stale_after), costs))
            print("\n".join(plan_notes(study, Path(args.throughput))))
            discard_project_run("a plan runs nothing")
            return 0
        claims = ClaimStore(claims_url, args.stale_after)
    except (ValueError, RuntimeError) as exc:
        return fail(exc)

    # -- run what is missing (under `mlflow run`, inside the run it created, moved out of Default)
    worker = args.worker_id or default_worker_id()
    options = {"fail_fast": args.fail_fast, "post_steps": args.analysis, "only": args.only}
    try:
        if os.environ.get("MLFLOW_RUN_ID"):
            adopt_project_run(study.experiment)
            with mlflow.start_run():
                mlflow.set_tags({schema.ROLE: schema.Role.STUDY, schema.STUDY: study.name})
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
    experiment = mlflow.get_experiment_by_name(study.experiment)
    if experiment is not None:
        print(where_to_look(uri=uri, experiment_id=experiment.experiment_id))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
