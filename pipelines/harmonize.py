"""Classify real MRI series descriptions with a trained adapter: DICOM folder or table in, CSV out.

Usage:
    python -m pipelines.harmonize --adapter <fine-tune or checkpoint run id> --input /data/pacs_export
    python -m pipelines.harmonize --adapter <fine-tune run id> --epoch 20 --input /data/series.csv
    python -m pipelines.harmonize --adapter outputs/<run id>/epoch-3/adapter \\
        --input "/data/series.xlsx#Sheet2" --column "Series Description" --output mapping.csv --no-track
    python -m pipelines.harmonize --adapter <run id> --input /data/series.csv --decoding free
    mlflow run . -e harmonize --env-manager local -P adapter=<run id> -P input=/data/pacs_export

The input is a folder of DICOM files (headers only; every distinct SeriesDescription with the
number of series carrying it) or a CSV/TSV/XLSX table (every distinct cell of the description
column, found by common names unless --column is given, with its number of rows). The output CSV
has one row per distinct description: description, class (T1, T2, T2/FLAIR, DWI, ADC, SWI,
Other; empty when the output could not be parsed), parse_status (ok, partial: a bare class
instead of JSON, failed), count, raw_output. Answers are decoded as evaluation and serving
decode them: constrained by default (always one of the task's valid answers), or --decoding free
(greedy generation of the whole answer). The run is logged to MLflow (tag role=harmonize,
artifact harmonize/<output name>) unless --no-track; a run-id adapter is looked up in
$MLFLOW_TRACKING_URI, else ./mlflow.db.
"""
from __future__ import annotations

import sys

from pipelines.cli import ArgumentParser, config_parser, parse_config, run_command
from pipelines.config import HarmonizeConfig
from pipelines.infer.series_harmonization import harmonize
from pipelines.runs import tracking


def build_parser() -> ArgumentParser:
    """One option per HarmonizeConfig field (help from pipelines.cli.FIELD_HELP), plus --config and
    --tracking-uri."""
    return config_parser(HarmonizeConfig, __doc__)


def parse_args(argv: list[str] | None = None) -> HarmonizeConfig:
    """Command line -> validated HarmonizeConfig (a missing --adapter or --input is a ConfigError)."""
    return parse_config(build_parser(), HarmonizeConfig, argv)


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        result = harmonize(parse_args(argv))
        counts = result.counts
        print(f"\nHarmonized {len(result.rows)} distinct descriptions -> {result.output}")
        print(f"  parsed ok {counts['ok']}, partial {counts['partial']}, failed {counts['failed']}"
              + (" (failed rows have an empty class; see raw_output)" if counts["failed"] else ""))
        if result.run_id:
            print(f"  logged as MLflow run {result.run_id}")
            print(tracking.where_to_look(result.run_id))
        return 0

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
