"""Score a chat model without fine-tuning (zero-shot or prompt-engineered) on the frozen test split.

Usage:
    python -m pipelines.baseline --backend local --model smollm2-135m --prompting zero-shot --eval-limit 8
    python -m pipelines.baseline --backend openai --base-url http://127.0.0.1:8000/v1 --model my-vllm-model
    OPENAI_API_KEY=... python -m pipelines.baseline --backend openai --base-url https://api.openai.com/v1 \\
        --model gpt-4o --prompting prompt-engineered --allow-remote
    mlflow run . -e baseline --env-manager local -P prompting=prompt-engineered

Report text goes to an endpoint off this machine or private network only with --allow-remote.
Prompts: prompts/<mode>/<task>.txt (editable). Responses are cached (--cache ''/path) so re-runs are free.
"""
from __future__ import annotations

import sys

from pipelines.baselines import BaselineConfig, run_baseline
from pipelines.cli import config_parser, parse_config, run_command
from pipelines.infer.evaluation import headline_metrics
from pipelines.runs import tracking


def parse_args(argv: list[str] | None = None) -> BaselineConfig:
    """Command line -> validated BaselineConfig."""
    return parse_config(config_parser(BaselineConfig, __doc__), BaselineConfig, argv)


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        config = parse_args(argv)
        result = run_baseline(config)
        print(f"\nBaseline finished: run {result.run_id} ({config.model}, {config.prompting}, {config.backend})")
        print(f"  {headline_metrics(result.metrics)}")
        print("  responses: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
        print(tracking.where_to_look(result.run_id))
        return 0

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
