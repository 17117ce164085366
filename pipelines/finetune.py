"""Fine-tune a base model with LoRA on one or more tasks; every step tracked in MLflow.

Usage:
    python -m pipelines.finetune                      # the demo: a few minutes on a laptop CPU
    python -m pipelines.finetune --preset paper       # the paper's settings (100 epochs)
    python -m pipelines.finetune --config run.yaml    # options from a file, e.g. a run's config/finetune.yaml
    python -m pipelines.finetune --model opt-350m --tasks labeling --epochs 20 --checkpoint-epochs 2,5,20
    mlflow run . -e finetune --env-manager local -P epochs=5 -P checkpoint_epochs=2,5
    python -m pipelines.finetune --preset demo --resume  # continue the latest unfinished run like this one
    python -m pipelines.finetune --resume RUN_ID         # continue that run (its params are the config)
    torchrun --standalone --nproc_per_node 2 -m pipelines.finetune --preset demo   # one run, 2 processes
    python -m pipelines.finetune --preset demo --processes 2                       # the same, torchrun started for you

Exit status: 0 done; 2 bad input; 75 tracking server unreachable (all kept on disk, upload command
printed); 130/143 stopped by SIGINT/SIGTERM (state saved, resume command printed).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from pipelines.cli import (
    ArgumentParser,
    add_config_arguments,
    add_tracking_uri_argument,
    apply_tracking_uri,
    config_block,
    config_from_args,
    explicit_options,
    fail,
    given_options,
    setup_logging,
)
from pipelines.config import DEMO_PRESET, FinetuneConfig, cpu_preset
from pipelines.infer.evaluation import headline_metrics
from pipelines.runs import resume as resuming
from pipelines.runs import tracking
from pipelines.runs.signals import TrainingInterrupted
from pipelines.runs.sync import EXIT_TRACKING_OUTAGE, TrackingOutageError
from pipelines.tasks import PAPER_TASKS
from pipelines.train import distributed
from pipelines.train.recipe import train

# A preset's values given what the user chose (given_options: the cpu preset's precision and report
# limits depend on the tasks, precision, device and series noise and fill asked for, and on this
# CPU's speed unless the limits are given).
PRESETS: dict[str, Callable[[dict[str, Any]], dict[str, object]]] = {
    "paper": lambda given: {},
    "demo": lambda given: DEMO_PRESET,
    "cpu": lambda given: cpu_preset(given.get("tasks", PAPER_TASKS), given.get("precision", ""),
                                    given.get("device", "auto"), given.get("series_noise"),
                                    given.get("series_fill"), measure_speed="task_train_limits" not in given,
                                    series_noise_only=given.get("series_noise_only")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                        help="base values under --config and the options below: demo (a few minutes on a "
                             "laptop CPU), cpu (all three tasks in about 45 minutes on 2 cores, the best "
                             "CPU recipe; docs/cpu_preset.md) or paper (100 epochs, the whole data) "
                             "(default: demo)")
    parser.add_argument("--resume", nargs="?", const=resuming.LATEST, default="", metavar="RUN_ID",
                        help="continue a killed fine-tune in its own MLflow run: alone (or 'latest'), the newest "
                             "unfinished run with the same params; RUN_ID: that run, with its params "
                             "('' = no resume, the MLproject default)")
    add_config_arguments(parser, FinetuneConfig, DEMO_PRESET)  # the defaults shown: the demo's
    add_tracking_uri_argument(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    """Command line -> validated FinetuneConfig (preset values first, explicit options win)."""
    return parse_command(argv)[0]


def parse_command(argv: list[str] | None = None) -> tuple[FinetuneConfig, str]:
    """Command line -> (validated FinetuneConfig, resume: '' | 'latest' | run id).

    Preset values first, explicit options win. With `--resume RUN_ID` the run's logged params
    are the base instead, and explicit options must agree with them (checked in train()).
    """
    args = build_parser().parse_args(argv)
    apply_tracking_uri(args)
    resume = args.resume.strip()
    if resume and resume != resuming.LATEST:
        tracking.connect(must_exist=True)
        return resuming.config_for_run(resume, explicit_options(args, FinetuneConfig)), resume
    preset = PRESETS[args.preset](given_options(args, FinetuneConfig))
    return config_from_args(args, FinetuneConfig, preset), resume


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        config, resume = parse_command(argv)
    except (ValueError, RuntimeError) as exc:
        return fail(exc)
    logging.getLogger(__name__).info("config:\n%s", config_block(config))
    try:
        result = train(config, resume=resume or None)
    except TrainingInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TrackingOutageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TRACKING_OUTAGE
    except (ValueError, RuntimeError) as exc:
        return fail(exc)
    if not distributed.world().main:  # torchrun's other ranks: rank 0 reports
        return 0
    resumed = f" (resumed from epoch {result.resumed_from_epoch:g})" if result.resumed_from_epoch is not None else ""
    print(f"\nFine-tune finished: run {result.run_id}{resumed}")
    for epoch, run_id in sorted(result.checkpoint_runs.items()):
        print(f"  epoch {epoch:>3}: run {run_id}  {headline_metrics(result.metrics[epoch])}")
    print(f"Local copies (adapters, predictions): {result.output_dir}")
    print(tracking.where_to_look(result.run_id))
    print(f"Report:  {report_command(config.study)}")
    return 0


def report_command(study: str) -> str:
    """The command that analyzes the study's checkpoints and draws the report, from any folder."""
    return f"python -m dashboards --study {study} --tracking-uri {tracking.default_tracking_uri()}"


if __name__ == "__main__":
    sys.exit(main())
