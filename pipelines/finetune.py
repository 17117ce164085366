"""Fine-tune a base model with LoRA on one or more tasks; every step tracked in MLflow.

Usage:
    python -m pipelines.finetune                      # the paper's settings (100 epochs)
    python -m pipelines.finetune --preset demo        # a few minutes on a laptop CPU
    python -m pipelines.finetune --model opt-350m --tasks labeling --epochs 20 --checkpoint-epochs 2,5,20
    mlflow run . -e finetune --env-manager local -P epochs=5 -P checkpoint_epochs=2,5
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from pipelines.cli import add_config_arguments, config_from_args, fail, setup_logging
from pipelines.config import DEMO_PRESET, FinetuneConfig
from pipelines.evaluation import headline_metrics
from pipelines.training import train

PRESETS: dict[str, dict[str, object]] = {"paper": {}, "demo": DEMO_PRESET}


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    """Command line -> validated FinetuneConfig (preset values first, explicit options win)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="base values before the options below: paper (default) or demo")
    add_config_arguments(parser, FinetuneConfig)
    args = parser.parse_args(argv)
    return config_from_args(args, FinetuneConfig, PRESETS[args.preset])


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        config = parse_args(argv)
    except ValueError as exc:
        return fail(exc)
    logging.getLogger(__name__).info("config: %s", dataclasses.asdict(config))
    try:
        result = train(config)
    except (ValueError, RuntimeError) as exc:
        return fail(exc)
    print(f"\nFine-tune finished: run {result.run_id}")
    for epoch, run_id in sorted(result.checkpoint_runs.items()):
        print(f"  epoch {epoch:>3}: run {run_id}  {headline_metrics(result.metrics[epoch])}")
    from pipelines.tracking import default_tracking_uri
    print(f"Local copies (adapters, predictions): {result.output_dir}")
    print(f"Open the results:  mlflow ui --backend-store-uri {default_tracking_uri()}  (then http://127.0.0.1:5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
