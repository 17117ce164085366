"""Everything a report reads, gathered once: analysis tables, run params, predictions, sweeps, ratings.

The analysis tables are required; the rest is looked up in the MLflow store when it can be
reached, and a lookup that fails leaves a note for its section instead of failing the report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from mlflow import MlflowClient

from analysis.runs import PredictionStore
from pipelines.runs import schema
from pipelines.sweeps.storage import open_existing_storage

log = logging.getLogger(__name__)

ID_COLUMNS = ("run_id", "reference_run_id", "unpoisoned_run_id")
LOSS_METRICS = ("train/loss", "train/loss_step")  # per epoch, per optimizer step (pipelines.train.recipe)
PARENT_TAG = "mlflow.parentRunId"
MAX_LOSS_RUNS = 12  # fine-tunes drawn in the training-loss figure (the newest)
READER_PREFIX = "reader_"
Predictions = Callable[[str, str], "dict[str, dict[str, Any]] | None"]


@dataclass
class SweepStudy:
    """One Optuna study found through its MLflow sweep run(s); `study` is None when it cannot load."""

    name: str
    run_ids: list[str]
    storage: str
    study: optuna.Study | None = None
    problem: str = ""


@dataclass
class ReportInputs:
    tables: dict[str, pd.DataFrame]
    summary: dict[str, Any] = field(default_factory=dict)
    analysis_run_id: str | None = None
    run_params: dict[str, dict[str, str]] = field(default_factory=dict)
    run_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    predictions: Predictions | None = None
    sweeps: list[SweepStudy] = field(default_factory=list)
    sweep_note: str = ""
    reader: dict[str, pd.DataFrame] = field(default_factory=dict)
    reader_source: str = ""
    reader_note: str = ""
    # training loss of the analyzed checkpoints' fine-tunes: finetune_run_id, run_name, model, metric, step, value
    loss_history: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def reference_run_id(self) -> str | None:
        return self.summary.get("reference_run_id") or self.summary.get("params", {}).get("reference_run_id")

    @property
    def params(self) -> dict[str, str]:
        return dict(self.summary.get("params", {}))

    @property
    def alpha(self) -> float:
        try:
            return float(self.params.get("alpha", 0.05))
        except ValueError:
            return 0.05

    @property
    def study(self) -> str | None:
        """The study of the analysis: its selection's, else the one every analyzed run shares."""
        chosen = self.params.get("study", "")
        if chosen and chosen != "(all)":
            return chosen
        studies = {tags.get("study") for tags in self.run_tags.values()} - {None, ""}
        return studies.pop() if len(studies) == 1 else None


# ---------------------------------------------------------------- analysis tables


def read_tables(folder: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The ``<name>.csv`` tables and ``summary.json`` an analysis wrote to `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no analysis folder {folder}")
    tables = {}
    for path in sorted(folder.glob("*.csv")):
        frame = pd.read_csv(path, dtype={c: str for c in ID_COLUMNS}, keep_default_na=True)
        if not frame.empty:
            tables[path.stem] = frame
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    if not tables:
        raise FileNotFoundError(f"{folder} holds no analysis tables (*.csv); run `python -m analysis.analyze`")
    return tables, summary


def download_tables(run_id: str, dest: Path, client: MlflowClient) -> Path:
    """The CSV tables and summary.json at the top of a run's artifacts, copied into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    names = [a.path for a in client.list_artifacts(run_id) if not a.is_dir]
    wanted = [n for n in names if n.endswith(".csv") or n == "summary.json"]
    if not wanted:
        raise FileNotFoundError(f"run {run_id} has no analysis tables among its artifacts {names}")
    for name in wanted:
        client.download_artifacts(run_id, name, str(dest))
    return dest


# ---------------------------------------------------------------- run params and tags


def fetch_runs(run_ids: Iterable[str], client: MlflowClient) -> tuple[dict, dict]:
    """(params, tags) by run id for the runs that exist in the store; searched 100 at a time."""
    ids = sorted(set(run_ids))
    params: dict[str, dict[str, str]] = {}
    tags: dict[str, dict[str, str]] = {}
    experiments = [e.experiment_id for e in client.search_experiments()]
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        quoted = ", ".join(f"'{i}'" for i in chunk)
        for run in client.search_runs(experiments, f"attributes.run_id IN ({quoted})", max_results=1000):
            params[run.info.run_id] = dict(run.data.params)
            tags[run.info.run_id] = dict(run.data.tags)
    return params, tags


def fetch_loss_history(run_tags: dict[str, dict[str, str]], client: MlflowClient,
                       limit: int = MAX_LOSS_RUNS) -> pd.DataFrame:
    """LOSS_METRICS histories of the fine-tunes the runs belong to (a checkpoint's parent, or the run),
    the `limit` newest of them (a chart of hundreds of loss curves shows none)."""
    finetunes = {tags.get(PARENT_TAG) or run_id for run_id, tags in run_tags.items()
                 if tags.get(schema.ROLE) in (schema.Role.CHECKPOINT, *schema.TRAINING_ROLES)}
    found = []
    for start in range(0, len(finetunes), 100):
        quoted = ", ".join(f"'{i}'" for i in sorted(finetunes)[start : start + 100])
        found += client.search_runs([e.experiment_id for e in client.search_experiments()],
                                    f"attributes.run_id IN ({quoted})", max_results=1000)
    newest = sorted(found, key=lambda r: r.info.start_time or 0, reverse=True)[:limit]
    rows = []
    for run in sorted(newest, key=lambda r: r.info.start_time or 0):
        for metric in LOSS_METRICS:
            rows += [{"finetune_run_id": run.info.run_id, "run_name": run.info.run_name or run.info.run_id,
                      "model": run.data.params.get("model", ""), "metric": metric, "step": m.step, "value": m.value,
                      "of": len(finetunes)}
                     for m in client.get_metric_history(run.info.run_id, metric)]
    return pd.DataFrame(rows)


def prediction_loader(cache_dir: Path, client: MlflowClient) -> Predictions:
    """A run's predictions for a task (None when absent or unreadable), cached by run id."""
    store = PredictionStore(cache_dir, client)

    def load(run_id: str, task: str):
        try:
            return store.load(run_id, task)
        except Exception as err:  # a broken artifact must not break the whole report
            log.warning("predictions of run %s (%s) unreadable: %s", run_id, task, err)
            return None

    return load


# ---------------------------------------------------------------- sweeps


def find_sweeps(
    client: MlflowClient, study_tag: str | None, names: Iterable[str] = (), storage_override: str = ""
) -> tuple[list[SweepStudy], str]:
    """Optuna studies of the sweep runs tagged with `study_tag`, plus those named; and a note
    saying why none was found, when none was."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    filters = [f"tags.role = 'sweep' and tags.study = '{study_tag}'"] if study_tag else []
    filters += [f"tags.role = 'sweep' and tags.optuna_study = '{name}'" for name in names]
    if not filters:
        return [], "no study tag to match sweep runs by; pass --sweep-study NAME"
    runs = []
    for filter_string in filters:
        runs += client.search_runs(experiments, filter_string, order_by=["attributes.start_time DESC"])
    by_study: dict[str, list] = {}
    for run in runs:
        name = run.data.tags.get("optuna_study") or run.data.params.get("optuna_study")
        if name and run.info.run_id not in [r.info.run_id for r in by_study.get(name, [])]:
            by_study.setdefault(name, []).append(run)
    studies = [
        load_sweep(name, [r.info.run_id for r in group], storage_override or group[0].data.params.get("storage", ""))
        for name, group in by_study.items()
    ]
    if studies:
        return studies, ""
    wanted = [f"study tag {study_tag!r}"] if study_tag else []
    wanted += [f"Optuna study {n!r}" for n in names]
    return [], f"no sweep run (role=sweep) with {' or '.join(wanted)} in this MLflow store"


def load_sweep(name: str, run_ids: list[str], storage: str) -> SweepStudy:
    """Open the study read-only-in-spirit: never create a storage file that is not there."""
    entry = SweepStudy(name, run_ids, storage)
    if not storage:
        entry.problem = "its sweep run logged no storage param"
        return entry
    if "***" in storage:
        entry.problem = f"the logged storage {storage} hides its password; pass --sweep-storage URL"
        return entry
    try:
        entry.study = optuna.load_study(study_name=name, storage=open_existing_storage(storage))
    except (FileNotFoundError, KeyError, ValueError, RuntimeError, ImportError, OSError) as err:
        entry.problem = f"cannot open it from {storage}: {err}"
    except Exception as err:  # e.g. a database driver's own connection error
        entry.problem = f"cannot open it from {storage}: {err.__class__.__name__}: {err}"
    return entry


# ---------------------------------------------------------------- reader study


def find_reader_tables(
    client: MlflowClient, study_tag: str | None, run_id: str, dest: Path
) -> tuple[dict[str, pd.DataFrame], str, str]:
    """(tables, source run id, note): a reader-study analysis run's reader_* tables."""
    if not run_id:
        if not study_tag:
            return {}, "", "no study tag to match a reader-study run by; pass --reader-run RUN_ID"
        experiments = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(
            experiments,
            f"tags.role = 'analysis' and tags.analysis = 'reader_study' and tags.study = '{study_tag}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            return (
                {},
                "",
                f"no reader-study run (python -m analysis.reader_study ingest) for study {study_tag!r}",
            )
        run_id = found[0].info.run_id
    dest.mkdir(parents=True, exist_ok=True)
    names = [a.path for a in client.list_artifacts(run_id) if a.path.startswith(READER_PREFIX)]
    for name in names:
        if name.endswith(".csv"):
            client.download_artifacts(run_id, name, str(dest))
    tables = {p.stem: pd.read_csv(p, dtype={"run_id": str}) for p in dest.glob(f"{READER_PREFIX}*.csv")}
    if "reader_summary" not in tables:
        return {}, run_id, f"run {run_id} holds no reader_summary table"
    return tables, run_id, ""


# ---------------------------------------------------------------- everything


def gather(
    tables: dict[str, pd.DataFrame],
    summary: dict[str, Any],
    work_dir: Path,
    client: MlflowClient | None,
    cache_dir: Path,
    analysis_run_id: str | None = None,
    sweep_studies: tuple[str, ...] = (),
    sweep_storage: str = "",
    reader_run: str = "",
) -> ReportInputs:
    """The inputs of one report; `client` None means: the tables only, no MLflow lookups."""
    inputs = ReportInputs(tables, summary, analysis_run_id)
    reader_here = {k: v for k, v in tables.items() if k.startswith(READER_PREFIX)}
    if reader_here:
        inputs.reader, inputs.reader_source = reader_here, "the analysis tables"
    if client is None:
        inputs.sweep_note = inputs.reader_note = "no MLflow store was read for this report"
        return inputs
    run_ids = {str(i) for f in tables.values() if "run_id" in f for i in f["run_id"].dropna()}
    run_ids |= set(summary.get("run_ids", []))
    try:
        inputs.run_params, inputs.run_tags = fetch_runs(run_ids, client)
    except Exception as err:
        log.warning("run params not read from MLflow: %s", err)
    try:
        inputs.loss_history = fetch_loss_history(inputs.run_tags, client)
    except Exception as err:
        log.warning("training loss not read from MLflow: %s", err)
    inputs.predictions = prediction_loader(cache_dir, client)
    try:
        inputs.sweeps, inputs.sweep_note = find_sweeps(client, inputs.study, sweep_studies, sweep_storage)
    except Exception as err:
        inputs.sweep_note = f"sweep runs could not be searched: {err}"
    if not inputs.reader:
        try:
            inputs.reader, inputs.reader_source, inputs.reader_note = find_reader_tables(
                client, inputs.study, reader_run, work_dir / "reader"
            )
            if inputs.reader_source:
                inputs.reader_source = f"reader-study run {inputs.reader_source}"
        except Exception as err:
            inputs.reader_note = f"reader-study tables could not be read: {err}"
    return inputs
