"""Register a fine-tune checkpoint as the clinical assistant (an MLflow pyfunc) and alias it.

Usage:
    python -m pipelines.register                        # best checkpoint of the latest multi-task fine-tune
    python -m pipelines.register --run <fine-tune run id> --epoch 5
    python -m pipelines.register --run <checkpoint run id> --alias staging
    python -m pipelines.register --metric labeling/f1_macro --weights-dtype bf16
    mlflow run . -e register --env-manager local -P run=<run id>

Then serve it on this machine (loopback only) and ask it something:
    mlflow models serve -m models:/clinical-assistant@champion --env-manager local -p 5001
    curl -s localhost:5001/invocations -H 'Content-Type: application/json' \\
        -d '{"dataframe_records": [{"task": "harmonization", "text": "AX T2 FLAIR"}]}'
"""
from __future__ import annotations

import sys

from mlflow.exceptions import MlflowException

from pipelines.cli import config_parser, parse_config, run_command
from pipelines.runs import tracking
from pipelines.serving.registration import RegisterConfig, register


def parse_args(argv: list[str] | None = None) -> RegisterConfig:
    """Command line -> validated RegisterConfig."""
    return parse_config(config_parser(RegisterConfig, __doc__), RegisterConfig, argv)


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        result = register(parse_args(argv))
        chosen = result.selection
        print(f"Registered {result.name} version {result.version} as {result.alias_uri}: fine-tune "
              f"{chosen.finetune.info.run_id} epoch {chosen.epoch} ({chosen.metric} = {chosen.value})")
        print(f"Serve it: mlflow models serve -m {result.alias_uri} --env-manager local -p 5001")
        print(tracking.where_to_look(result.run_id))
        return 0

    return run_command(run, errors=(ValueError, RuntimeError, MlflowException))


if __name__ == "__main__":
    sys.exit(main())
