"""Benchmark our evaluation and training against the paper's reference method, in one run.

Usage:
    python -m benchmarks                          # embedded model on CPU, well under 15 minutes
    python -m benchmarks --device cuda            # the same on a GPU (bf16)
    python -m benchmarks --eval-per-task 16 --output-json bench.json --no-log
    mlflow run . -e benchmark --env-manager local

Prints a Markdown table (throughput of each method, the ratio, the metrics each reached) and
logs it to MLflow as a run tagged role=benchmark (params: the settings; metrics: every figure;
artifacts: benchmark.md, benchmark.json), unless --no-log.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.cli import ArgumentParser, add_config_arguments, add_switch, config_from_args, fail, setup_logging


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    from benchmarks.suite import BenchConfig, format_table, run_benchmark

    parser = ArgumentParser(description=__doc__)
    add_config_arguments(parser, BenchConfig)
    parser.add_argument("--experiment", default="clinical-slm-benchmarks",
                        help="MLflow experiment (default: clinical-slm-benchmarks)")
    parser.add_argument("--output-json", default="", help="also write the results to this JSON file")
    add_switch(parser, "--log", "log the results as an MLflow run (--no-log: print and --output-json only)",
               default=True)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, BenchConfig, {})
        result = run_benchmark(config)
    except ValueError as exc:
        return fail(exc)
    table = format_table(result)
    print("\n" + table)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result.to_dict(), indent=2))
    if args.log:
        from benchmarks.mlflow_log import log_benchmark

        run_id = log_benchmark(result, table, args.experiment)
        print(f"\nlogged as MLflow run {run_id} (experiment {args.experiment})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
