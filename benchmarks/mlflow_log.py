"""A benchmark result as an MLflow run (tag role=benchmark)."""
from __future__ import annotations

import re

import mlflow

from benchmarks.suite import BenchResult
from pipelines.config import flat_params
from pipelines.runs import tracking


def metric_name(text: str) -> str:
    """'eval labeling (free, batched)' -> 'eval_labeling_free_batched' (MLflow-safe)."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")


def log_benchmark(result: BenchResult, table: str, experiment: str) -> str:
    """Log params, every figure as a metric, and the table (Markdown + JSON); returns the run id."""
    tracking.setup_tracking(experiment)
    with mlflow.start_run(run_name=f"benchmark-{result.config.model}-{result.config.device}") as run:
        mlflow.set_tags({"role": "benchmark", "model": result.config.model})
        tracking.log_params_once({**flat_params(result.config), "git_commit": tracking.git_commit()})
        metrics = dict(result.facts)
        for row in result.rows:
            name = metric_name(row.measure)
            metrics |= {f"{name}/reference": row.reference, f"{name}/ours": row.ours, f"{name}/ratio": row.ratio}
        mlflow.log_metrics(metrics)
        mlflow.log_text(table, "benchmark.md")
        tracking.log_json(result.to_dict(), "benchmark.json")
        return run.info.run_id
