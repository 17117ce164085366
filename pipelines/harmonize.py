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

import argparse
import sys

from pipelines.cli import fail, setup_logging
from pipelines.harmonizing import HarmonizeConfig, harmonize


def parse_args(argv: list[str] | None = None) -> HarmonizeConfig:
    """Command line -> validated HarmonizeConfig."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    add("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    add("--no-track", dest="track", action="store_false", help="write the CSV only; log no MLflow run")
    add("--study", default="default", help="study tag of the run")
    add("--experiment", default="clinical-slm", help="MLflow experiment (ignored under mlflow run)")
    add("--run-name", default="", help="MLflow run name (default: harmonize-<input name>)")
    return HarmonizeConfig(**vars(parser.parse_args(argv)))


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
