"""Search LoRA fine-tune hyperparameters with Optuna; every trial is an MLflow run under one sweep run.

Usage:
    python -m pipelines.sweep                                   # sweeps/default.yaml, 20 trials
    python -m pipelines.sweep --space sweeps/quick.yaml --n-trials 4
    python -m pipelines.sweep --objective harmonization/accuracy --tasks harmonization --sampler random
    mlflow run . -e sweep --env-manager local -P space=sweeps/quick.yaml -P n_trials=4

Several workers, one study (each worker: its own --n-trials / --timeout and --worker-index):
    python -m pipelines.sweep --study-name lr-search --storage optuna-journal.log --worker-index 1
    python -m pipelines.sweep --study-name lr-search --worker-index 2 \\
        --storage postgresql://optuna:secret@db.example.org/optuna          # workers on many machines

The sweep file declares the searched parameters, fixed values, objective, sampler and pruner;
options below override it. Trials score on a validation slice of the training split, never on
the test split; the end prints the command that re-runs the best trial as a full fine-tune.
"""
from __future__ import annotations

import argparse
import sys

from pipelines.cli import fail, setup_logging
from pipelines.redaction import redact_url
from pipelines.search_space import DIRECTIONS, ObjectiveMetricMissing, load_space, parse_objective
from pipelines.sweep_report import format_summary
from pipelines.sweep_storage import DEFAULT_STORAGE, StorageOptions
from pipelines.sweeping import SweepOptions, run_sweep
from pipelines.tracking import default_tracking_uri

# Shorthands for fixing a value of the sweep file's `fixed:` section (or of a searched one);
# an empty value (an MLproject default) leaves the file's value.
FIXED_OPTIONS = ("model", "tasks", "data", "train_limit", "eval_limit", "device", "precision", "output_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--space", default="sweeps/default.yaml", help="sweep file (default: %(default)s)")
    add("--storage", default=DEFAULT_STORAGE,
        help="Optuna storage: a journal file path (default: %(default)s), or an RDB/redis/grpc URL")
    add("--study-name", default="", help="join (or create) this study; default: a new study")
    add("--n-trials", type=int, default=20, help="trials for this worker; 0 = until --timeout (default: 20)")
    add("--timeout", type=float, default=0, help="seconds for this worker; 0 = no limit")
    add("--worker-index", type=int, default=0, help="added to the sampler seed; one per worker of a study")
    add("--sampler", help="override the sampler name (tpe, random, qmc, gp, cmaes)")
    add("--seed", type=int, help="override the sampler seed")
    add("--pruner", help="override the pruner name (median, percentile, hyperband, threshold, none, ...)")
    add("--objective", help="'headline' or comma-separated metrics, e.g. harmonization/accuracy")
    add("--combine", help="how several objective metrics combine: mean, min, max")
    add("--direction", choices=DIRECTIONS, help="override the objective direction")
    for name in FIXED_OPTIONS:
        add(f"--{name.replace('_', '-')}", help="fix this value for every trial")
    add("--set", action="append", default=[], metavar="KEY=VALUE",
        help="fix any FinetuneConfig value, e.g. --set lora_r=16 (repeatable)")
    add("--study", default="", help="the lab's study tag on every run; default: the Optuna study name")
    add("--experiment", default="clinical-slm", help="MLflow experiment (default: %(default)s)")
    add("--heartbeat-interval", type=int, default=60, help="seconds between trial heartbeats (RDB storages)")
    add("--grace-period", type=int, default=180, help="seconds without heartbeat before a trial is failed")
    add("--max-retry", type=int, default=1, help="times a crashed worker's trial is re-queued")
    add("--no-figures", action="store_true", help="skip the Plotly figures (e.g. on all but one worker)")
    return parser


def parse_args(argv: list[str] | None = None) -> SweepOptions:
    """Command line -> SweepOptions: the sweep file, then the options given."""
    args = build_parser().parse_args(argv)
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
        experiment=args.experiment, figures=not args.no_figures, space_file=args.space,
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
          f"--study-name {result.study_name} --storage '{storage}' --worker-index <n>")
    print(f"Open the results:  mlflow ui --backend-store-uri {default_tracking_uri()}   |   "
          f"optuna-dashboard '{storage}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
