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

from pipelines import tracking
from pipelines.cli import (
    ArgumentParser,
    add_config_arguments,
    add_tracking_uri_argument,
    apply_tracking_uri,
    config_from_args,
    fail,
    setup_logging,
)
from pipelines.config import EvaluateConfig
from pipelines.scoring import evaluate_model


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = ArgumentParser(description=__doc__)
    add_config_arguments(parser, EvaluateConfig)
    add_tracking_uri_argument(parser)
    try:
        args = parser.parse_args(argv)
        apply_tracking_uri(args)
        config = config_from_args(args, EvaluateConfig, {})
        run_id = evaluate_model(config)
    except (ValueError, RuntimeError) as exc:
        return fail(exc)
    print(f"Evaluation finished: run {run_id}")
    print(tracking.where_to_look(run_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
