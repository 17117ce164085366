"""Classify real MRI series descriptions with a trained adapter: DICOM folder or table in, CSV out.

Usage:
    python -m pipelines.harmonize --adapter <fine-tune or checkpoint run id> --input /data/pacs_export
    python -m pipelines.harmonize --adapter <fine-tune run id> --epoch 20 --input /data/series.csv
    python -m pipelines.harmonize --adapter outputs/<run id>/epoch-3/adapter \\
        --input "/data/series.xlsx#Sheet2" --column "Series Description" --output mapping.csv --no-track
    mlflow run . -e harmonize --env-manager local -P adapter=<run id> -P input=/data/pacs_export

The input is a folder of DICOM files (headers only; every distinct SeriesDescription with the
number of series carrying it) or a CSV/TSV/XLSX table (every distinct cell of the description
column, found by common names unless --column is given, with its number of rows). The output CSV
has one row per distinct description: description, class (T1, T2, T2/FLAIR, DWI, ADC, SWI,
Other; empty when the output could not be parsed), parse_status (ok, partial: a bare class
instead of JSON, failed), count, raw_output. The run is logged to MLflow (tag role=harmonize,
artifact harmonize/<output name>) unless --no-track; a run-id adapter is looked up in
$MLFLOW_TRACKING_URI, else ./mlflow.db.
"""
from __future__ import annotations

import sys

from pipelines import tracking
from pipelines.cli import ArgumentParser, add_switch, add_tracking_uri_argument, apply_tracking_uri, fail, setup_logging
from pipelines.config import PRECISIONS
from pipelines.harmonizing import HarmonizeConfig, harmonize


def parse_args(argv: list[str] | None = None) -> HarmonizeConfig:
    """Command line -> validated HarmonizeConfig."""
    parser = ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--adapter", required=True,
        help="fine-tune run id (last checkpoint unless --epoch), checkpoint run id, or adapter folder")
    add("--input", required=True,
        help="DICOM folder (or one file), or a CSV/TSV/XLSX table of descriptions (file.xlsx#Sheet2)")
    add("--column", default="", help="description column of a table (default: found by name)")
    add("--output", default="", help="CSV to write (default: outputs/harmonized-<input name>.csv)")
    add("--epoch", type=int, default=0, help="checkpoint epoch of a fine-tune run (default: the last)")
    add("--model", default="", help="base model (default: the one the adapter was trained on)")
    add("--batch-size", type=int, default=16, help="descriptions per generation batch")
    add("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add("--precision", default="auto", choices=PRECISIONS, help="weights and autocast precision (default: auto)")
    add_switch(parser, "--track", "log the mapping as an MLflow run (--no-track: write the CSV only)", default=True)
    add("--study-tag", "--study", dest="study", default="default", help="study tag of the run (default: default)")
    add("--experiment", default="clinical-slm", help="MLflow experiment (default: clinical-slm)")
    add("--run-name", default="", help="MLflow run name (default: harmonize-<input name>)")
    add_tracking_uri_argument(parser)
    args = parser.parse_args(argv)
    apply_tracking_uri(args)
    return HarmonizeConfig(**{k: v for k, v in vars(args).items() if k != "tracking_uri"})


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        config = parse_args(argv)
        result = harmonize(config)
    except (ValueError, RuntimeError) as exc:
        return fail(exc)
    counts = result.counts
    print(f"\nHarmonized {len(result.rows)} distinct descriptions -> {result.output}")
    print(f"  parsed ok {counts['ok']}, partial {counts['partial']}, failed {counts['failed']}"
          + (" (failed rows have an empty class; see raw_output)" if counts["failed"] else ""))
    if result.run_id:
        print(f"  logged as MLflow run {result.run_id}")
        print(tracking.where_to_look(result.run_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
