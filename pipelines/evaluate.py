"""Score a logged adapter, an adapter folder, or the base model alone, as an MLflow run.

Usage:
    python -m pipelines.evaluate --adapter <checkpoint or fine-tune run id> [--epoch 5]
    python -m pipelines.evaluate --adapter outputs/<run id>/epoch-3/adapter
    python -m pipelines.evaluate --model smollm2-135m                 # zero-shot base model
    python -m pipelines.evaluate --config config.yaml                 # an evaluation's logged config/evaluate.yaml
    python -m pipelines.evaluate --adapter <run id> --data openi-csv:/data/indiana_reports.csv --split all
    mlflow run . -e evaluate --env-manager local -P adapter=<run id>
"""
from __future__ import annotations

import sys

from pipelines.cli import config_parser, parse_config, run_command
from pipelines.config import EvaluateConfig
from pipelines.infer.model_evaluation import evaluate_model
from pipelines.runs import tracking


def parse_args(argv: list[str] | None = None) -> EvaluateConfig:
    """Command line -> validated EvaluateConfig."""
    return parse_config(config_parser(EvaluateConfig, __doc__), EvaluateConfig, argv)


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        run_id = evaluate_model(parse_args(argv))
        print(f"Evaluation finished: run {run_id}")
        print(tracking.where_to_look(run_id))
        return 0

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
