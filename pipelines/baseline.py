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

import argparse
import sys

from pipelines.baselines import BaselineConfig, run_baseline
from pipelines.cli import add_config_arguments, config_from_args, fail, setup_logging
from pipelines.evaluation import headline_metrics


def parse_args(argv: list[str] | None = None) -> BaselineConfig:
    """Command line -> validated BaselineConfig."""
    parser = argparse.ArgumentParser(description=__doc__, conflict_handler="resolve",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, BaselineConfig)
    # A flag on the command line; `--allow-remote true|false` too, for MLproject parameters.
    parser.add_argument("--allow-remote", dest="allow_remote", nargs="?", const="true", default=None,
                        help="allow sending report text to a non-local endpoint (default: false)")
    return config_from_args(parser.parse_args(argv), BaselineConfig, {})


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        config = parse_args(argv)
        result = run_baseline(config)
    except (ValueError, RuntimeError) as exc:
        return fail(exc)
    print(f"\nBaseline finished: run {result.run_id} ({config.model}, {config.prompting}, {config.backend})")
    print(f"  {headline_metrics(result.metrics)}")
    print("  responses: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
