"""Search LoRA fine-tune hyperparameters with Optuna; every trial is an MLflow run under one sweep run.

Usage:
    python -m pipelines.sweep                                   # sweeps/default.yaml, 20 trials
    python -m pipelines.sweep --space sweeps/quick.yaml --n-trials 4
    python -m pipelines.sweep --objective harmonization/accuracy --tasks harmonization --sampler random
    mlflow run . -e sweep --env-manager local -P space=sweeps/quick.yaml -P n_trials=4

Several workers, one study (each worker: its own --n-trials / --timeout and --worker-index):
    python -m pipelines.sweep --optuna-study lr-search --storage optuna-journal.log --worker-index 1
    python -m pipelines.sweep --optuna-study lr-search --worker-index 2 \\
        --storage postgresql://optuna:secret@db.example.org/optuna          # workers on many machines

The sweep file declares the searched parameters, fixed values, objective, sampler and pruner;
options below override it. Trials score on a validation slice of the training split, never on
the test split; the end prints the command that re-runs the best trial as a full fine-tune.
"""
from __future__ import annotations

import argparse
import sys

from pipelines.cli import (
    ArgumentParser,
    add_switch,
    add_tracking_uri_argument,
    apply_tracking_uri,
    fail,
    field_help,
    setup_logging,
)
from pipelines.redaction import redact_url
from pipelines.runs import tracking
from pipelines.sweeps.report import format_summary
from pipelines.sweeps.runner import SweepOptions, run_sweep
from pipelines.sweeps.space import DIRECTIONS, ObjectiveMetricMissing, load_space, parse_objective
from pipelines.sweeps.storage import DEFAULT_STORAGE, StorageOptions

# Shorthands for fixing a value of the sweep file's `fixed:` section (or of a searched one);
# an empty value (an MLproject default) leaves the file's value.
FIXED_OPTIONS = ("model", "tasks", "data", "train_limit", "task_train_limits", "eval_limit", "device", "precision",
                 "output_dir", "processes")


def build_parser() -> argparse.ArgumentParser:
    from pipelines.sweeps.samplers import PRUNERS, SAMPLERS
    from pipelines.sweeps.space import COMBINERS

    parser = ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--space", default="sweeps/default.yaml", help="sweep file (default: %(default)s)")
    add("--storage", default=DEFAULT_STORAGE,
        help="Optuna storage: a journal file path (default: %(default)s), or an RDB/redis/grpc URL")
    add("--optuna-study", "--study-name", dest="study_name", default="",
        help="Optuna study to join (or create); '' = a new one (default: '')")
    add("--n-trials", type=int, default=20, help="trials for this worker; 0 = until --timeout (default: 20)")
    add("--timeout", type=float, default=0, help="seconds for this worker; 0 = no limit (default: 0)")
    add("--worker-index", type=int, default=0,
        help="added to the sampler seed; one per worker of an Optuna study (default: 0)")
    add("--sampler", help=f"override the sweep file's sampler: {', '.join(SAMPLERS.names())}")
    add("--seed", type=int, help="override the sampler seed")
    add("--pruner", help=f"override the sweep file's pruner: {', '.join(PRUNERS.names())}")
    add("--objective", help="'headline' or comma-separated metrics, e.g. harmonization/accuracy")
    add("--combine", help=f"how several objective metrics combine: {', '.join(COMBINERS.names())}")
    add("--direction", choices=DIRECTIONS, help="override the objective direction")
    for name in FIXED_OPTIONS:
        add(f"--{name.replace('_', '-')}", help=f"fix {name} for every trial: {field_help(name, with_choices=True)}")
    add("--set", action="append", default=[], metavar="KEY=VALUE",
        help="fix any FinetuneConfig value, e.g. --set lora_r=16 (repeatable)")
    add("--study-tag", "--study", dest="study", default="",
        help="study tag of every run (groups runs for the analysis); '' = the Optuna study's name")
    add("--experiment", default="clinical-slm", help="MLflow experiment (default: %(default)s)")
    add("--heartbeat-interval", type=int, default=60,
        help="seconds between trial heartbeats (RDB storages) (default: 60)")
    add("--grace-period", type=int, default=180,
        help="seconds without heartbeat before a trial is failed (default: 180)")
    add("--max-retry", type=int, default=1, help="times a crashed worker's trial is re-queued (default: 1)")
    add_switch(parser, "--figures", "draw the Plotly figures (--no-figures on all but one worker)", default=True)
    add_tracking_uri_argument(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> SweepOptions:
    """Command line -> SweepOptions: the sweep file, then the options given."""
    args = build_parser().parse_args(argv)
    apply_tracking_uri(args)
    space = load_space(args.space)
    # -- sampler, pruner and objective overrides
    if args.sampler:
        space.sampler = {"name": args.sampler, "seed": space.sampler.get("seed")}
    if args.seed is not None:
        space.sampler["seed"] = args.seed
    if args.pruner:
        space.pruner = {"name": args.pruner}
    if args.objective or args.combine or args.direction:
        space.objective = parse_objective({
            "metrics": args.objective or ",".join(space.objective.metrics),
            "combine": args.combine or space.objective.combine,
            "direction": args.direction or space.objective.direction,
        }, "command line")
    # -- fixed values
    fixed = {name: getattr(args, name) for name in FIXED_OPTIONS if getattr(args, name)}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        fixed[key.strip().replace("-", "_")] = value.strip()
    space = space.with_fixed(fixed)
    storage = StorageOptions(args.storage, args.heartbeat_interval, args.grace_period, args.max_retry)
    return SweepOptions(
        space=space, storage=storage, study_name=args.study_name, n_trials=args.n_trials or None,
        timeout=args.timeout or None, worker_index=args.worker_index, study_tag=args.study,
        experiment=args.experiment, figures=args.figures, space_file=args.space,
    )


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        options = parse_args(argv)
        result = run_sweep(options)
    except (ValueError, RuntimeError, ObjectiveMetricMissing) as exc:
        return fail(exc)
    print(f"\nSweep worker finished: MLflow run {result.parent_run_id}")
    print(format_summary(result.summary))
    storage = redact_url(options.storage.url)
    print(f"More workers: python -m pipelines.sweep --space {options.space_file} "
          f"--optuna-study {result.study_name} --storage '{storage}' --worker-index <n>")
    print(tracking.where_to_look(result.parent_run_id))
    print(f"Optuna's own view (pip install -e .[dashboard]):  optuna-dashboard '{storage}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
