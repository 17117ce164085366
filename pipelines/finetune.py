"""Fine-tune a base model with LoRA on one or more tasks; every step tracked in MLflow.

Usage:
    python -m pipelines.finetune                      # the paper's settings (100 epochs)
    python -m pipelines.finetune --preset demo        # a few minutes on a laptop CPU
    python -m pipelines.finetune --model opt-350m --tasks labeling --epochs 20 --checkpoint-epochs 2,5,20
    mlflow run . -e finetune --env-manager local -P epochs=5 -P checkpoint_epochs=2,5
    python -m pipelines.finetune --preset demo --resume  # continue the latest unfinished run like this one
    python -m pipelines.finetune --resume RUN_ID         # continue that run (its params are the config)

Exit status: 0 done; 2 bad input; 75 tracking server unreachable (all kept on disk, upload command
printed); 130/143 stopped by SIGINT/SIGTERM (state saved, resume command printed).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from pipelines import resume as resuming
from pipelines import tracking
from pipelines.cli import add_config_arguments, config_from_args, explicit_options, fail, setup_logging
from pipelines.config import DEMO_PRESET, FinetuneConfig
from pipelines.evaluation import headline_metrics
from pipelines.run_signals import TrainingInterrupted
from pipelines.store_sync import TrackingOutageError
from pipelines.training import train

PRESETS: dict[str, dict[str, object]] = {"paper": {}, "demo": DEMO_PRESET}
EXIT_TRACKING_OUTAGE = 75  # EX_TEMPFAIL: try again later (here: upload later)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="base values before the options below: paper (default) or demo")
    parser.add_argument("--resume", nargs="?", const=resuming.LATEST, default="", metavar="RUN_ID",
                        help="continue a killed fine-tune in its own MLflow run: alone (or 'latest'), the newest "
                             "unfinished run with the same params; RUN_ID: that run, with its params "
                             "('' = no resume, the MLproject default)")
    add_config_arguments(parser, FinetuneConfig)
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
    resume = args.resume.strip()
    if resume and resume != resuming.LATEST:
        tracking.connect()
        return resuming.config_for_run(resume, explicit_options(args, FinetuneConfig)), resume
    return config_from_args(args, FinetuneConfig, PRESETS[args.preset]), resume


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        config, resume = parse_command(argv)
    except (ValueError, RuntimeError) as exc:
        return fail(exc)
    logging.getLogger(__name__).info("config: %s", dataclasses.asdict(config))
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
    resumed = f" (resumed from epoch {result.resumed_from_epoch:g})" if result.resumed_from_epoch is not None else ""
    print(f"\nFine-tune finished: run {result.run_id}{resumed}")
    for epoch, run_id in sorted(result.checkpoint_runs.items()):
        print(f"  epoch {epoch:>3}: run {run_id}  {headline_metrics(result.metrics[epoch])}")
    from pipelines.tracking import default_tracking_uri
    print(f"Local copies (adapters, predictions): {result.output_dir}")
    print(f"Open the results:  mlflow ui --backend-store-uri {default_tracking_uri()}  (then http://127.0.0.1:5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
