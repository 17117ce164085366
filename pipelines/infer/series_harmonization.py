"""Harmonizing real series descriptions: a trained adapter names the class of each one.

`harmonize(config)` is the one library call behind the `harmonize` entry point:

1. read the distinct descriptions of the input: a folder of DICOM files (headers only, one count
   per series; see pipelines.data.dicom_folder) or a CSV/TSV/XLSX table (``file.xlsx#Sheet2``)
   whose description column is given or found by the series-table names;
2. resolve the adapter (a fine-tune run: its last checkpoint or `epoch`; a checkpoint run; or a
   local adapter folder) and load it on its base model (pipelines.infer.loading);
3. answer once per distinct description, with the harmonization task's prompt, through the same
   path evaluation scores (pipelines.infer.evaluation.answer_task): constrained decoding by
   default, so the answer is one of the task's valid answers, or free generation; parse each
   output with the task's parser;
4. write the mapping CSV (OUTPUT_COLUMNS) and, unless tracking is off, log it to an MLflow run
   tagged ``role=harmonize``.

Malformed model output is a result, not an error: its row has parse_status "failed" and an
empty class, and the status counts are logged and returned.
"""
from __future__ import annotations

import csv
import json
import logging
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow

from pipelines.config import ConfigError, HarmonizeConfig, check_decoding, flat_params
from pipelines.data.dicom_folder import scan_dicom_folder
from pipelines.data.errors import DataError
from pipelines.data.series_table import DESCRIPTION_COLUMNS
from pipelines.data.tables import TABLE_SUFFIXES, read_table, split_sheet
from pipelines.infer.evaluation import answer_task
from pipelines.infer.loading import load_for_inference
from pipelines.infer.model_evaluation import AdapterRef, require_store_for, resolve_adapter
from pipelines.models import preset_of, resolve_device, resolve_precision
from pipelines.runs import schema, tracking
from pipelines.tasks import get_task
from pipelines.tasks.base import Example, format_prompt

TASK = "harmonization"  # the registered task whose prompt, decoding and parser harmonize uses
log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("description", "class", "parse_status", "count", "raw_output")
STATUSES = ("ok", "partial", "failed")


@dataclass
class Descriptions:
    """The distinct descriptions of an input, in order, each with its series (or row) count."""

    source: str
    kind: str  # "dicom" or "table"
    items: list[tuple[str, int]]
    column: str = ""
    notes: dict[str, int] = field(default_factory=dict)


@dataclass
class HarmonizeResult:
    """What a harmonize job wrote: the CSV, its rows, the parse-status counts, the run (if any)."""

    output: Path
    rows: list[dict[str, str | int]]
    counts: dict[str, int]
    model: str
    adapter: AdapterRef
    run_id: str = ""


# ---------------------------------------------------------------- reading the input


def read_descriptions(input_text: str, column: str = "") -> Descriptions:
    """Distinct descriptions from a DICOM folder or file, or from a table's description column."""
    path, _ = split_sheet(input_text)
    if not path.exists():
        raise DataError(path, "not found; give a folder of DICOM files or a CSV/TSV/XLSX table")
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return _table_descriptions(input_text, column)
    if column:
        raise ConfigError(f"--column {column!r} applies to a table; {path} is read as DICOM")
    scan = scan_dicom_folder(path)
    notes = {"dicom_files": scan.dicom_files, "non_dicom_files": scan.non_dicom_files,
             "unreadable_files": len(scan.unreadable_files), "without_description": scan.without_description}
    return Descriptions(str(path), "dicom", scan.descriptions, "SeriesDescription (0008,103E)", notes)


def _table_descriptions(input_text: str, column: str) -> Descriptions:
    """Each distinct (stripped) cell of the description column, in first-seen order, with its row count.

    Cells are kept as written (no whitespace folding), so the output joins back onto the input.
    Blank cells are skipped and counted.
    """
    path, sheet = split_sheet(input_text)
    table = read_table(path, sheet)
    if column:
        name = table.column(column, option="--column")
    else:
        name = table.column(DESCRIPTION_COLUMNS[0], *DESCRIPTION_COLUMNS[1:], option="--column")
    values = [table.value(row, name) for row in table.rows]
    counts = Counter(v for v in values if v)
    if not counts:
        raise table.error("every cell of the description column is empty", column=name)
    notes = {"rows": len(values), "blank_rows": values.count("")}
    log.info("%s: %d distinct descriptions in %d rows of column %r (%d blank rows skipped)",
             input_text, len(counts), len(values), name, notes["blank_rows"])
    return Descriptions(input_text, "table", list(counts.items()), name, notes)


# ---------------------------------------------------------------- model and classification


def base_model_name(config: HarmonizeConfig, adapter: AdapterRef) -> str:
    """--model, else the model the adapter's run names, else the adapter's own base model."""
    if config.model:
        return config.model
    if adapter.model:
        return adapter.model
    adapter_config = json.loads((adapter.folder / "adapter_config.json").read_text(encoding="utf-8"))
    base = adapter_config.get("base_model_name_or_path") or ""
    if not base:
        raise ConfigError(f"adapter {adapter.folder} does not name its base model; pass --model")
    return preset_of(base)


def classify(model, tokenizer, descriptions: list[str], batch_size: int,
             decoding: str = "constrained") -> list[str]:
    """The raw harmonization answer to each description, in order: what evaluation's answer_task
    gives for the same prompts (decoding "constrained" or "free"; the task's generation budget)."""
    check_decoding(decoding)
    task = get_task(TASK)
    examples = [Example(id=f"{task.name}/{i}", task=task.name, prompt=format_prompt(task.directive, d),
                        target="", reference=None) for i, d in enumerate(descriptions)]
    return answer_task(model, tokenizer, task.name, examples, batch_size=batch_size, decoding=decoding)


def mapping_rows(items: list[tuple[str, int]], outputs: list[str]) -> list[dict[str, str | int]]:
    """One output row per description; a failed parse keeps its raw output and an empty class."""
    parse = get_task(TASK).parse
    rows = []
    for (description, count), raw in zip(items, outputs, strict=True):
        parsed = parse(raw)
        rows.append({"description": description, "class": parsed.value or "", "parse_status": parsed.status,
                     "count": count, "raw_output": raw})
    return rows


def status_counts(rows: list[dict[str, str | int]]) -> dict[str, int]:
    """Rows per parse status, every status present."""
    found = Counter(str(r["parse_status"]) for r in rows)
    return {status: found.get(status, 0) for status in STATUSES}


def write_mapping(rows: list[dict[str, str | int]], path: Path) -> Path:
    """The mapping as UTF-8 CSV with the OUTPUT_COLUMNS header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=OUTPUT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------- the job


def harmonize(config: HarmonizeConfig) -> HarmonizeResult:
    """Classify every distinct description of `config.input`; write (and log) the mapping CSV."""
    # -- tracking: needed to find a logged adapter even when nothing is logged
    require_store_for(config.adapter)
    if config.track:
        tracking.setup_tracking(config.experiment)
    else:
        mlflow.set_tracking_uri(tracking.default_tracking_uri())
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    with tempfile.TemporaryDirectory(prefix="adapter-") as scratch:
        # -- adapter first (a bad run id fails fast), then the input (a PACS scan can take a while)
        adapter = resolve_adapter(config.adapter, config.epoch, Path(scratch))
        where = f"run {adapter.run_id} (epoch {adapter.epoch})" if adapter.run_id else str(adapter.folder)
        log.info("adapter from %s", where)
        found = read_descriptions(config.input, config.column)

        # -- model
        model_name = base_model_name(config, adapter)
        log.info("loading base model %s on %s (%s) with the adapter", model_name, device, precision)
        model, tokenizer = load_for_inference(model_name, adapter.folder, precision, device)

        # -- classify and parse
        log.info("classifying %d distinct descriptions (batch %d, %s decoding)", len(found.items),
                 config.batch_size, config.decoding)
        start = time.perf_counter()
        outputs = classify(model, tokenizer, [d for d, _ in found.items], config.batch_size,
                           decoding=config.decoding)
        seconds = time.perf_counter() - start
    rows = mapping_rows(found.items, outputs)
    counts = status_counts(rows)

    # -- write and log
    output = write_mapping(rows, config.output_path())
    log.info("wrote %s: %d descriptions; parse status %s", output, len(rows),
             ", ".join(f"{k} {v}" for k, v in counts.items()))
    result = HarmonizeResult(output, rows, counts, model_name, adapter)
    if config.track:
        result.run_id = _log_run(config, found, result, device, precision, seconds)
    return result


def _log_run(config: HarmonizeConfig, found: Descriptions, result: HarmonizeResult, device: str,
             precision: str, seconds: float) -> str:
    """An MLflow run (role=harmonize) holding the mapping CSV, the counts and the input dataset."""
    import pandas as pd

    name = config.run_name or f"harmonize-{Path(split_sheet(config.input)[0]).name}"
    # Resolved values under names of their own: under `mlflow run` the options are already
    # logged as given (shell-quoted, e.g. model="''"), and params cannot be overwritten.
    # `decoding` is the config's (one of DECODINGS), as evaluation runs log it.
    params = {**flat_params(config), "base_model": result.model, "input_kind": found.kind,
              "input_column": found.column, "source_run": result.adapter.run_id,
              "source_epoch": str(result.adapter.epoch), "device": device, "precision": precision,
              "git_commit": tracking.git_commit()}
    tags = schema.run_tags(schema.Role.HARMONIZE, config.study, result.model, (TASK,))
    with tracking.scored_run(name, params, tags) as run:
        frame = pd.DataFrame(found.items, columns=["description", "count"])
        with warnings.catch_warnings():  # mlflow's schema hint about integer columns
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=tracking.dataset_source(found.source),
                                              name="series-descriptions")
            tracking.log_input_once(dataset, context="inference")
        total = max(len(result.rows), 1)
        mlflow.log_metrics({
            "harmonize/n_descriptions": len(result.rows),
            **{f"harmonize/n_{status}": n for status, n in result.counts.items()},
            "harmonize/parse_fail_rate": result.counts["failed"] / total,
            **{f"harmonize/input_{k}": v for k, v in found.notes.items()},
            "perf/harmonize_seconds": seconds,
        })
        mlflow.log_artifact(str(result.output), "harmonize")
        tracking.log_prediction_tables({TASK: result.rows}, run.info.run_id)
        tracking.log_json({"config": asdict(config), "counts": result.counts}, "harmonize/summary.json")
        log.info("harmonize run %s", run.info.run_id)
        return run.info.run_id
