"""One analysis job: select runs, pick the reference, fetch predictions, build every table.

`run_analysis(config)` returns the tables as data frames plus headline metrics; writing them to a
folder and logging them as a ``role=analysis`` run is `analysis.outputs`' job.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from analysis.ablations import poisoning_tables, trajectory_rows, trajectory_wide
from analysis.outputs import ensure_experiment, log_analysis_run, write_tables
from analysis.runs import (
    DEFAULT_CACHE_DIR,
    PredictionStore,
    ReferenceSpec,
    RunInfo,
    RunSelection,
    SelectionError,
    align,
    get_run,
    resolve_reference,
    select_runs,
)
from analysis.stats import CORRECTIONS, DEFAULT_ALPHA, BootstrapSpec
from analysis.tasks import CompareOptions, analysis_for
from analysis.tasks.base import Rows
from pipelines.tasks import task_names


@dataclass(frozen=True)
class AnalysisConfig:
    """Everything one analysis needs; see `python -m analysis.analyze --help` for the meanings."""

    selection: RunSelection = field(default_factory=RunSelection)
    reference: ReferenceSpec = field(default_factory=ReferenceSpec)
    correction: str = "none"
    alpha: float = DEFAULT_ALPHA
    cache_dir: Path = DEFAULT_CACHE_DIR
    include: tuple[str, ...] = ()  # run ids added to the selection (e.g. baselines without an epoch)
    trajectory: bool = True
    poisoning: bool = True
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)  # intervals and paired macro-F1 tests

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie strictly between 0 and 1, got {self.alpha}")
        CORRECTIONS.get(self.correction)  # unknown names fail here, listing the valid ones

    def as_params(self) -> dict[str, str]:
        """The resolved configuration as MLflow params."""
        s = self.selection
        return {
            "experiment": s.experiment or "(all)",
            "study": s.study or "(all)",
            "role": s.role or "(any)",
            "param_filter": ";".join(f"{k}={v}" for k, v in sorted(s.params.items())) or "(none)",
            "reference_spec": self.reference.describe(),
            "correction": self.correction,
            "alpha": str(self.alpha),
            "include": ",".join(self.include) or "(none)",
            "bootstrap_resamples": str(self.bootstrap.resamples),
            "bootstrap_seed": str(self.bootstrap.seed),
        }


@dataclass
class AnalysisResult:
    """The tables (name -> tidy frame), headline metrics and the runs they came from."""

    config: AnalysisConfig
    runs: list[RunInfo]
    reference: RunInfo
    tables: dict[str, pd.DataFrame]
    metrics: dict[str, float]
    notes: list[str]

    @property
    def study(self) -> str | None:
        """The study tag to copy onto the analysis run: the selection's, or the one all runs share."""
        if self.config.selection.study:
            return self.config.selection.study
        studies = {r.study for r in self.runs if r.study}
        return studies.pop() if len(studies) == 1 else None

    def params(self) -> dict[str, str]:
        return {
            **self.config.as_params(),
            "reference_run_id": self.reference.run_id,
            "n_runs": str(len(self.runs)),
        }


def run_analysis(config: AnalysisConfig, client: MlflowClient | None = None) -> AnalysisResult:
    """Select, fetch, summarize, compare with the reference, and add the ablations."""
    client = client or MlflowClient()
    options = CompareOptions(config.alpha, config.correction, config.bootstrap)
    tables: dict[str, Rows] = defaultdict(list)
    notes: list[str] = []

    # -- runs and the reference
    runs = select_runs(config.selection, client)
    known = {r.run_id for r in runs}
    runs += [get_run(run_id, client) for run_id in dict.fromkeys(config.include) if run_id not in known]
    if not runs:
        raise SelectionError(
            f"no runs match {config.selection.filter_string()!r} in experiment "
            f"{config.selection.experiment or '(all)'}; param values must be written exactly as logged"
        )
    reference = resolve_reference(runs, config.reference, client, notes)
    analyzed = runs if reference in runs else [reference, *runs]
    store = PredictionStore(config.cache_dir, client)
    store.locate(analyzed)
    store.prefetch(r.run_id for r in analyzed)

    # -- per-run summaries
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    mismatches: dict[str, list[tuple[str, float, float]]] = defaultdict(list)  # metric -> (run, logged, ours)
    for task in task_names():
        analysis = analysis_for(task)
        for run in analyzed:
            records = store.load(run.run_id, task)
            if records is None:
                continue
            columns = {**run.describe(), "is_reference": run is reference}
            for name, rows in analysis.summarize(records, config.alpha, config.bootstrap).items():
                tables[name] += [{**columns, **row} for row in rows]
            summaries[(run.run_id, task)] = tables[f"{task}_summary"][-1]
            for metric, mismatch in logged_mismatches(run, task, summaries[(run.run_id, task)]).items():
                mismatches[metric].append(mismatch)
    notes += [mismatch_note(metric, found) for metric, found in mismatches.items()]

    # -- comparisons with the reference (paired by example id)
    for task in task_names():
        ref_records = store.load(reference.run_id, task)
        if ref_records is None:
            notes.append(f"reference run {reference.run_id} has no {task} predictions: no {task} tests")
            continue
        for run in runs:
            other = store.load(run.run_id, task)
            if run is reference or other is None:
                continue
            pair = align(task, reference.run_id, ref_records, run.run_id, other)
            columns = {**run.describe(), "reference_run_id": reference.run_id}
            for name, rows in analysis_for(task).compare(pair, options).items():
                tables[name] += [{**columns, **r} for r in rows]

    # -- ablations
    if config.poisoning:
        for name, rows in poisoning_tables(runs, summaries, store.load, options).items():
            tables[name] += rows
    frames = {name: pd.DataFrame(rows) for name, rows in tables.items() if rows}
    if config.trajectory:
        checkpoints = RunSelection(
            config.selection.experiment,
            config.selection.study,
            "checkpoint",
            config.selection.without_params("epoch").params,
            config.selection.finished_only,
        )
        long_rows = trajectory_rows(select_runs(checkpoints, client))
        if long_rows:
            frames["trajectory_long"] = pd.DataFrame(long_rows)
            frames["trajectory"] = trajectory_wide(long_rows)

    return AnalysisResult(config, analyzed, reference, frames, analysis_metrics(frames, reference), notes)


# Recomputed and logged values of one metric may differ by float rounding, never by more.
LOGGED_TOLERANCE = 1e-6


def logged_mismatches(run: RunInfo, task: str, summary: dict[str, Any]) -> dict[str, tuple[str, float, float]]:
    """``<task>/<column>`` -> (run id, logged, recomputed) for each summary column that the run also
    logged with another value.

    Every metric has one definition (pipelines.tasks.metrics), so a mismatch means the run was
    scored by older code or its predictions do not belong to its metrics.
    """
    found = {}
    for column, value in summary.items():
        logged = run.metrics.get(f"{task}/{column}")
        if logged is None or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        both_nan = math.isnan(logged) and math.isnan(value)
        if not both_nan and not abs(logged - value) <= LOGGED_TOLERANCE:
            found[f"{task}/{column}"] = (run.run_id, float(logged), float(value))
    return found


def mismatch_note(metric: str, found: list[tuple[str, float, float]]) -> str:
    """One line for every run whose logged `metric` differs from the recomputed one."""
    run_id, logged, value = found[0]
    return (
        f"{len(found)} run(s) logged {metric} unlike its recomputation from their predictions (e.g. run "
        f"{run_id}: logged {logged:.6g}, recomputed {value:.6g}); the tables show the recomputed values"
    )


def analysis_metrics(frames: dict[str, pd.DataFrame], reference: RunInfo) -> dict[str, float]:
    """Reference and best value of each task's headline metrics, and counts of significant tests."""
    metrics: dict[str, float] = {}
    for task in task_names():
        summary = frames.get(f"{task}_summary")
        if summary is None:
            continue
        metrics[f"n_runs/{task}"] = float(len(summary))
        for column in analysis_for(task).headline:
            ref_value = summary.loc[summary["run_id"] == reference.run_id, column]
            if not ref_value.empty:
                metrics[f"reference/{task}/{column}"] = float(ref_value.iloc[0])
            metrics[f"best/{task}/{column}"] = float(summary[column].max())
    for name, frame in frames.items():
        if "significant" in frame:
            metrics[f"significant/{name}"] = float(frame["significant"].sum())
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def publish(
    result: AnalysisResult, out_dir: Path, log_to_mlflow: bool = True, experiment: str | None = None
) -> str | None:
    """Write the tables to `out_dir` and (unless told not to) log them as a role=analysis run.

    The run goes to `experiment` (created if needed) or else to the reference run's experiment.
    Returns the analysis run id, or None when nothing was logged.
    """
    summary = {
        "params": result.params(),
        "metrics": result.metrics,
        "notes": result.notes,
        "reference_run_id": result.reference.run_id,
        "run_ids": [r.run_id for r in result.runs],
        "tables": sorted(result.tables),
    }
    write_tables(result.tables, out_dir, summary)
    if not log_to_mlflow:
        return None
    experiment_id = ensure_experiment(experiment) if experiment else result.reference.experiment_id
    return log_analysis_run(out_dir, result.metrics, result.params(), experiment_id, result.study, "analyze")
