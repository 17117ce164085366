"""Where analysis results go: tidy CSV + JSON tables in a local folder, and a ``role=analysis`` run.

Logged params carry the prefix ``analysis.``, so they never collide with the params that
``mlflow run`` itself logs for an MLproject entry point (a param cannot change value in MLflow).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from pipelines.runs import schema

DEFAULT_OUTPUT_ROOT = Path("outputs/analysis")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value, in characters


def default_output_dir(kind: str = "analyze") -> Path:
    """``outputs/analysis/<kind>-<YYYYmmdd-HHMMSS>``: a fresh folder for each job."""
    return DEFAULT_OUTPUT_ROOT / f"{kind}-{datetime.now():%Y%m%d-%H%M%S}"


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: Path, summary: Mapping[str, Any]) -> list[Path]:
    """Each table as ``<name>.csv`` and ``<name>.json`` (records; NaN as null), plus ``summary.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        frame.to_csv(out_dir / f"{name}.csv", index=False)
        (out_dir / f"{name}.json").write_text(frame.to_json(orient="records", indent=1), encoding="utf-8")
        written += [out_dir / f"{name}.csv", out_dir / f"{name}.json"]
    path = out_dir / "summary.json"
    path.write_text(json.dumps(_json_safe(summary), indent=2, sort_keys=True), encoding="utf-8")
    return [*written, path]


def log_analysis_run(
    out_dir: Path,
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    experiment_id: str | None = None,
    study: str | None = None,
    kind: str = "analyze",
    run_name: str | None = None,
) -> str:
    """Log the folder's files as artifacts, with metrics, params and tags role=analysis / analysis=<kind>.

    Inside ``mlflow run`` (MLFLOW_RUN_ID set) the project's own run is used; one that `mlflow run`
    put in the Default experiment moves to experiment_id's (pipelines.runs.tracking.adopt_project_run).
    """
    if os.environ.get("MLFLOW_RUN_ID") and experiment_id is not None:
        from pipelines.runs.tracking import adopt_project_run

        adopt_project_run(mlflow.get_experiment(experiment_id).name)
    tags = {schema.ROLE: schema.Role.ANALYSIS, schema.ANALYSIS_KIND: kind, **({schema.STUDY: study} if study else {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        mlflow.log_params({f"analysis.{k}": str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(float(v))})
        mlflow.log_artifacts(str(out_dir))
        return run.info.run_id


def ensure_experiment(name: str) -> str:
    """The id of the named experiment, created if it does not exist yet."""
    experiment = mlflow.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else mlflow.create_experiment(name)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
